//! Scenario files: services, operations, the call graph, latency, errors, faults and the rate.
//! See tests/scenarios/ for examples.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use tracepipe_schemas::Encoding;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Spans per second; 0 sends as fast as the broker takes them.
    #[serde(default)]
    pub rate: f64,
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Defaults to the topic the encoding is usually published to.
    #[serde(default)]
    pub topic: Option<String>,
    /// Spans per Kafka message (OTLP and Zipkin batch several traces; Jaeger is one span per message).
    #[serde(default = "default_batch_spans")]
    pub batch_spans: usize,
    pub entrypoints: Vec<Entrypoint>,
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Journeys across traces: a correlation value carried from one entry's trace to the next.
    #[serde(default)]
    pub journeys: Vec<Journey>,
    /// New versions of services, serving a share of their requests from some time on.
    #[serde(default)]
    pub rollouts: Vec<Rollout>,
}

/// From `after_s` seconds into the run, `share` of `service`'s requests are served by instances
/// of `version` (their own resource, `service.version` = `version`), each taking
/// `latency_factor` times as long and failing `error_rate` more often; from `complete_after_s`
/// on, all of them (the rollout completes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub service: String,
    pub version: String,
    pub after_s: f64,
    pub share: f64,
    #[serde(default)]
    pub complete_after_s: Option<f64>,
    #[serde(default = "default_factor")]
    pub latency_factor: f64,
    #[serde(default)]
    pub error_rate: f64,
}

fn default_factor() -> f64 {
    1.0
}

fn default_seed() -> u64 {
    1
}

fn default_encoding() -> String {
    "otlp_proto".into()
}

fn default_batch_spans() -> usize {
    200
}

fn default_weight() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entrypoint {
    pub service: String,
    pub operation: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub version: Option<String>,
    pub operations: BTreeMap<String, Operation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// The operation's own (self) time.
    #[serde(default)]
    pub latency: Latency,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub calls: Vec<Call>,
    /// Business attributes set on the operation's span.
    #[serde(default)]
    pub attributes: Vec<BusinessAttribute>,
    /// Feature flags the operation evaluates: `key` is the flag, `values` its variants; each
    /// evaluation is a `feature_flag.evaluation` event on the span.
    #[serde(default)]
    pub feature_flags: Vec<BusinessAttribute>,
}

/// A business attribute of a span: a number drawn uniformly from `min`..`max` (with `decimals`),
/// or one of `values` (weighted by `weights`, equal without).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessAttribute {
    pub key: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub decimals: u32,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub weights: Vec<f64>,
}

/// A journey across separate traces: when its first step's entrypoint is picked, the trace gets a
/// new value of `correlation` on its root span; each later step follows as a trace of its own
/// (with `probability`, after a delay within `delay_ms`), carrying the same value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    pub name: String,
    pub correlation: String,
    pub steps: Vec<JourneyStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyStep {
    pub service: String,
    pub operation: String,
    #[serde(default = "default_weight")]
    pub probability: f64,
    /// Delay after the step before, in milliseconds: [min, max].
    #[serde(default = "default_delay_ms")]
    pub delay_ms: [f64; 2],
}

fn default_delay_ms() -> [f64; 2] {
    [100.0, 1000.0]
}

/// A log-normal distribution given by its median and 99th percentile, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub median_ms: f64,
    pub p99_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { median_ms: 2.0, p99_ms: 10.0 }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Http,
    Grpc,
    Kafka,
}

/// One outgoing call: to another service (`service` + `operation`, over http, grpc or kafka), to a
/// database (`database`), or to an uninstrumented external peer (`external`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub via: Via,
    /// Kafka topic of a `via: kafka` call.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    /// db.system of a database call (postgresql, redis, …).
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub external: Option<String>,
    /// Latency of a database or external call.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// Error rate of a database or external call.
    #[serde(default)]
    pub error_rate: f64,
    /// Chance the call is made at all.
    #[serde(default = "default_weight")]
    pub probability: f64,
}

/// From `after_s` seconds into the run (for `for_s` seconds, or to the end), `operation` of
/// `service` gains latency and/or errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub service: String,
    pub operation: String,
    pub after_s: f64,
    #[serde(default)]
    pub for_s: Option<f64>,
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub error_rate: f64,
}

impl Scenario {
    pub fn from_yaml(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_yaml_ng::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn encoding(&self) -> anyhow::Result<Encoding> {
        self.encoding.parse().map_err(|e: String| anyhow::anyhow!("encoding: {e}"))
    }

    pub fn default_topic(encoding: Encoding) -> &'static str {
        match encoding {
            Encoding::OtlpProto | Encoding::OtlpJson => "otlp_spans",
            Encoding::JaegerProto => "jaeger-spans",
            Encoding::ZipkinJson => "zipkin",
        }
    }

    /// Checks every reference and number, reporting all problems together.
    fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = self.encoding() {
            problems.push(e.to_string());
        }
        if self.entrypoints.is_empty() {
            problems.push("entrypoints: at least one is needed".into());
        }
        if self.rate < 0.0 || !self.rate.is_finite() {
            problems.push(format!("rate: must be zero or positive, got {}", self.rate));
        }
        if self.batch_spans == 0 {
            problems.push("batch_spans: must be at least 1".into());
        }
        let operation_exists = |service: &str, operation: &str| {
            self.services.get(service).is_some_and(|s| s.operations.contains_key(operation))
        };
        for (i, entry) in self.entrypoints.iter().enumerate() {
            if !operation_exists(&entry.service, &entry.operation) {
                problems.push(format!("entrypoints[{i}]: no operation `{}` in service `{}`", entry.operation, entry.service));
            }
        }
        for (service_name, service) in &self.services {
            for (operation_name, operation) in &service.operations {
                let at = format!("services.{service_name}.operations.{operation_name}");
                check_latency(&at, &operation.latency, &mut problems);
                check_rate(&format!("{at}.error_rate"), operation.error_rate, &mut problems);
                for (i, call) in operation.calls.iter().enumerate() {
                    let at = format!("{at}.calls[{i}]");
                    let targets = [call.service.is_some(), call.database.is_some(), call.external.is_some()];
                    if targets.iter().filter(|t| **t).count() != 1 {
                        problems.push(format!("{at}: give exactly one of service, database, external"));
                        continue;
                    }
                    if let Some(callee) = &call.service {
                        match &call.operation {
                            Some(op) if operation_exists(callee, op) => {}
                            Some(op) => problems.push(format!("{at}: no operation `{op}` in service `{callee}`")),
                            None => problems.push(format!("{at}: a service call needs an operation")),
                        }
                    }
                    if let Some(latency) = &call.latency {
                        check_latency(&at, latency, &mut problems);
                    }
                    check_rate(&format!("{at}.error_rate"), call.error_rate, &mut problems);
                    check_rate(&format!("{at}.probability"), call.probability, &mut problems);
                }
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if !operation_exists(&fault.service, &fault.operation) {
                problems.push(format!("faults[{i}]: no operation `{}` in service `{}`", fault.operation, fault.service));
            }
            check_rate(&format!("faults[{i}].error_rate"), fault.error_rate, &mut problems);
        }
        for (i, rollout) in self.rollouts.iter().enumerate() {
            match self.services.get(&rollout.service) {
                None => problems.push(format!("rollouts[{i}]: no service `{}`", rollout.service)),
                Some(service) if service.version.as_deref().unwrap_or("1.0.0") == rollout.version => {
                    problems.push(format!("rollouts[{i}]: `{}` already runs version {}", rollout.service, rollout.version))
                }
                Some(_) => {}
            }
            check_rate(&format!("rollouts[{i}].share"), rollout.share, &mut problems);
            check_rate(&format!("rollouts[{i}].error_rate"), rollout.error_rate, &mut problems);
            if rollout.complete_after_s.is_some_and(|s| s <= rollout.after_s) {
                problems.push(format!("rollouts[{i}].complete_after_s: must come after after_s"));
            }
            if !(rollout.latency_factor.is_finite() && rollout.latency_factor > 0.0) {
                problems.push(format!("rollouts[{i}].latency_factor: must be a positive number"));
            }
        }
        for (service_name, service) in &self.services {
            for (operation_name, operation) in &service.operations {
                for (i, flag) in operation.feature_flags.iter().enumerate() {
                    if flag.values.is_empty() || flag.min.is_some() || flag.max.is_some() {
                        problems.push(format!("services.{service_name}.operations.{operation_name}.feature_flags[{i}]: a flag has `values` (its variants), not min and max"));
                    }
                }
                for (i, attribute) in operation.attributes.iter().enumerate() {
                    let at = format!("services.{service_name}.operations.{operation_name}.attributes[{i}]");
                    let numeric = attribute.min.is_some() || attribute.max.is_some();
                    match (numeric, attribute.values.is_empty()) {
                        (true, true) => {
                            if !matches!((attribute.min, attribute.max), (Some(min), Some(max)) if min <= max && min.is_finite() && max.is_finite()) {
                                problems.push(format!("{at}: needs min <= max"));
                            }
                        }
                        (false, false) => {
                            if !attribute.weights.is_empty() && attribute.weights.len() != attribute.values.len() {
                                problems.push(format!("{at}.weights: one per value"));
                            }
                        }
                        _ => problems.push(format!("{at}: give min and max, or values")),
                    }
                }
            }
        }
        for (j, journey) in self.journeys.iter().enumerate() {
            if journey.steps.len() < 2 {
                problems.push(format!("journeys[{j}].steps: at least two"));
            }
            for (i, step) in journey.steps.iter().enumerate() {
                let at = format!("journeys[{j}].steps[{i}]");
                if !operation_exists(&step.service, &step.operation) {
                    problems.push(format!("{at}: no operation `{}` in service `{}`", step.operation, step.service));
                }
                check_rate(&format!("{at}.probability"), step.probability, &mut problems);
                if !(step.delay_ms[0] > 0.0 && step.delay_ms[0] <= step.delay_ms[1]) {
                    problems.push(format!("{at}.delay_ms: needs 0 < min <= max"));
                }
            }
            if let Some(first) = journey.steps.first() {
                if !self.entrypoints.iter().any(|e| e.service == first.service && e.operation == first.operation) {
                    problems.push(format!("journeys[{j}].steps[0]: must be an entrypoint"));
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            problems.push(format!("the call graph has a cycle through {cycle}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("scenario `{}` is invalid:\n{}", self.name, problems.join("\n"))
        }
    }

    fn find_cycle(&self) -> Option<String> {
        fn visit<'a>(s: &'a Scenario, node: (&'a str, &'a str), path: &mut Vec<(&'a str, &'a str)>, done: &mut BTreeSet<(&'a str, &'a str)>) -> Option<String> {
            if path.contains(&node) {
                return Some(format!("{}/{}", node.0, node.1));
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            let operation = s.services.get(node.0)?.operations.get(node.1)?;
            for call in &operation.calls {
                if let (Some(service), Some(op)) = (&call.service, &call.operation) {
                    if let Some(cycle) = visit(s, (service, op), path, done) {
                        return Some(cycle);
                    }
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        self.entrypoints.iter().find_map(|e| visit(self, (&e.service, &e.operation), &mut Vec::new(), &mut done))
    }
}

fn check_latency(at: &str, latency: &Latency, problems: &mut Vec<String>) {
    if !(latency.median_ms > 0.0 && latency.p99_ms >= latency.median_ms && latency.p99_ms.is_finite()) {
        problems.push(format!("{at}.latency: needs 0 < median_ms <= p99_ms"));
    }
}

fn check_rate(at: &str, rate: f64, problems: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&rate) {
        problems.push(format!("{at}: must be between 0 and 1, got {rate}"));
    }
}
