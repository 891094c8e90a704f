//! Generates traces from a scenario: pure, seeded, and given the time, so tests can replay it.

use std::collections::BTreeSet;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};
use tracepipe_schemas::attributes;
use tracepipe_schemas::otlp_trace::{span, Span, Status};

use super::scenario::{BusinessAttribute, Call, Latency, Operation, Scenario, Via};

/// A business attribute's values as generated, per (service, operation, key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BusinessTruth {
    pub service: String,
    pub operation: String,
    pub key: String,
    /// Spans that carried it.
    pub count: u64,
    /// Of a numeric attribute.
    pub sum: f64,
    /// Spans per value, of one given by `values`.
    pub values: std::collections::BTreeMap<String, u64>,
}

/// How far a scenario's journey went: `reached[k]` journeys generated their step k.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyTruth {
    pub name: String,
    pub correlation: String,
    pub reached: Vec<u64>,
}

/// A journey's next step, waiting for its time.
#[derive(Debug, Clone)]
struct PendingStep {
    journey: usize,
    step: usize,
    correlation: String,
}

/// A service-to-service edge as the ground truth records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub client: String,
    pub server: String,
    /// `http`, `grpc`, `messaging`, `database` or `external`.
    pub kind: String,
}

/// One generated trace: spans with the service that emitted each.
pub struct GeneratedTrace {
    pub trace_id: [u8; 16],
    pub spans: Vec<(usize, Span)>,
    /// The span where the trace's error originated, if it failed.
    pub root_cause: Option<[u8; 8]>,
}

pub struct TraceGenerator {
    scenario: Scenario,
    services: Vec<String>,
    rng: SmallRng,
    entry_weights: Vec<f64>,
    /// Seconds since the run started, for fault onsets.
    elapsed_s: f64,
    pub edges: BTreeSet<Edge>,
    /// Calls made over each edge.
    pub edge_calls: std::collections::BTreeMap<Edge, u64>,
    /// Business attributes and journeys draw from a generator of their own, so a scenario that
    /// gains some keeps its traces' other draws.
    business_rng: SmallRng,
    /// Journey steps due, by (due time, sequence).
    pending: std::collections::BTreeMap<(u64, u64), PendingStep>,
    pending_sequence: u64,
    /// The correlation attribute the trace being generated carries on its root.
    correlation: Option<(String, String)>,
    pub business: std::collections::BTreeMap<(String, String, String), BusinessTruth>,
    pub journeys: Vec<JourneyTruth>,
    /// Rollouts draw from a generator of their own too.
    rollout_rng: SmallRng,
    /// The rollout serving the operation span being generated, by service: its calls are made
    /// from the new version's instances.
    serving: Vec<(usize, usize)>,
    /// Requests each (service, version) served, and how many failed.
    pub versions: std::collections::BTreeMap<(String, String), (u64, u64)>,
}

const MS: f64 = 1_000_000.0;

fn lognormal(latency: &Latency) -> LogNormal<f64> {
    let mu = latency.median_ms.ln();
    let sigma = ((latency.p99_ms.ln() - mu) / 2.326).max(1e-6);
    LogNormal::new(mu, sigma).expect("validated latency")
}

struct Frame {
    error: bool,
    end: u64,
}

impl TraceGenerator {
    pub fn new(scenario: Scenario) -> Self {
        let services = scenario.services.keys().cloned().collect();
        let entry_weights = scenario.entrypoints.iter().map(|e| e.weight.max(0.0)).collect();
        let journeys = scenario.journeys.iter().map(|j| JourneyTruth { name: j.name.clone(), correlation: j.correlation.clone(), reached: vec![0; j.steps.len()] }).collect();
        TraceGenerator {
            rng: SmallRng::seed_from_u64(scenario.seed),
            business_rng: SmallRng::seed_from_u64(scenario.seed ^ 0x6275_7369_6e65_7373),
            rollout_rng: SmallRng::seed_from_u64(scenario.seed ^ 0x726f_6c6c_6f75_74),
            scenario,
            services,
            entry_weights,
            elapsed_s: 0.0,
            edges: BTreeSet::new(),
            edge_calls: Default::default(),
            pending: Default::default(),
            pending_sequence: 0,
            correlation: None,
            business: Default::default(),
            journeys,
            serving: Vec::new(),
            versions: Default::default(),
        }
    }

    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// The service whose resource a generated span is on (the index beside it in
    /// [`GeneratedTrace::spans`]): one of [`Self::services`], or a rollout's new instances.
    pub fn service_of(&self, resource: usize) -> &str {
        match self.services.get(resource) {
            Some(service) => service,
            None => &self.scenario.rollouts[resource - self.services.len()].service,
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    fn id<const N: usize>(&mut self) -> [u8; N] {
        loop {
            let id: [u8; N] = self.rng.random();
            if id.iter().any(|&b| b != 0) {
                return id;
            }
        }
    }

    fn sample_ms(&mut self, latency: &Latency) -> f64 {
        lognormal(latency).sample(&mut self.rng)
    }

    /// The rollout serving this request of `service`, if one is under way and draws it.
    fn rollout(&mut self, service: &str) -> Option<usize> {
        let elapsed = self.elapsed_s;
        let rng = &mut self.rollout_rng;
        self.scenario.rollouts.iter().position(|r| {
            let share = if r.complete_after_s.is_some_and(|s| elapsed >= s) { 1.0 } else { r.share };
            r.service == service && elapsed >= r.after_s && rng.random::<f64>() < share
        })
    }

    /// The resource `service`'s spans are on: its new version's while that serves the request.
    fn instance_of(&self, service: &str) -> usize {
        let index = self.service_index(service);
        self.serving.iter().rev().find(|(s, _)| *s == index).map_or(index, |&(_, resource)| resource)
    }

    fn service_index(&self, name: &str) -> usize {
        self.services.iter().position(|s| s == name).expect("validated service")
    }

    /// Generates one trace whose root starts at `start` (Unix nanos), `elapsed_s` into the run.
    pub fn generate(&mut self, start: u64, elapsed_s: f64) -> GeneratedTrace {
        self.elapsed_s = elapsed_s;
        if let Some(entry) = self.pending.first_entry().filter(|e| e.key().0 <= start) {
            let PendingStep { journey, step, correlation } = entry.remove();
            let (service, operation) = {
                let s = &self.scenario.journeys[journey].steps[step];
                (s.service.clone(), s.operation.clone())
            };
            return self.journey_step(journey, step, correlation, &service, &operation, start);
        }
        let total: f64 = self.entry_weights.iter().sum();
        let mut pick = self.rng.random::<f64>() * total;
        let mut entry = 0;
        for (i, w) in self.entry_weights.iter().enumerate() {
            if pick < *w {
                entry = i;
                break;
            }
            pick -= w;
        }
        let entrypoint = self.scenario.entrypoints[entry].clone();
        let begins = self.scenario.journeys.iter().position(|j| j.steps[0].service == entrypoint.service && j.steps[0].operation == entrypoint.operation);
        if let Some(journey) = begins {
            let correlation = format!("{:016x}", self.business_rng.random::<u64>());
            return self.journey_step(journey, 0, correlation, &entrypoint.service, &entrypoint.operation, start);
        }
        self.root_trace(&entrypoint.service, &entrypoint.operation, start)
    }

    fn root_trace(&mut self, service: &str, operation: &str, start: u64) -> GeneratedTrace {
        let trace_id = self.id::<16>();
        let mut trace = GeneratedTrace { trace_id, spans: Vec::new(), root_cause: None };
        self.operation_span(&mut trace, service, operation, None, span::SpanKind::Server, start, None);
        self.correlation = None;
        trace
    }

    /// Step `step` of a journey, carrying its correlation value; schedules the next one.
    fn journey_step(&mut self, journey: usize, step: usize, correlation: String, service: &str, operation: &str, start: u64) -> GeneratedTrace {
        self.journeys[journey].reached[step] += 1;
        self.correlation = Some((self.scenario.journeys[journey].correlation.clone(), correlation.clone()));
        if let Some(next) = self.scenario.journeys[journey].steps.get(step + 1) {
            if self.business_rng.random::<f64>() < next.probability {
                let delay_ms = self.business_rng.random_range(next.delay_ms[0]..=next.delay_ms[1]);
                let due = start + (delay_ms * MS) as u64;
                self.pending_sequence += 1;
                self.pending.insert((due, self.pending_sequence), PendingStep { journey, step: step + 1, correlation });
            }
        }
        self.root_trace(service, operation, start)
    }

    /// A business attribute's value, counted in the ground truth.
    fn business_attribute(&mut self, service: &str, operation: &str, attribute: &BusinessAttribute) -> tracepipe_schemas::otlp_common::KeyValue {
        let truth = self.business.entry((service.to_string(), operation.to_string(), attribute.key.clone())).or_insert_with(|| BusinessTruth {
            service: service.to_string(),
            operation: operation.to_string(),
            key: attribute.key.clone(),
            ..Default::default()
        });
        truth.count += 1;
        if let (Some(min), Some(max)) = (attribute.min, attribute.max) {
            let scale = 10f64.powi(attribute.decimals as i32);
            let value = (self.business_rng.random_range(min..=max) * scale).round() / scale;
            truth.sum += value;
            return attributes::double(attribute.key.clone(), value);
        }
        let total: f64 = if attribute.weights.is_empty() { attribute.values.len() as f64 } else { attribute.weights.iter().sum() };
        let mut pick = self.business_rng.random::<f64>() * total;
        let mut chosen = attribute.values.len() - 1;
        for index in 0..attribute.values.len() {
            let weight = attribute.weights.get(index).copied().unwrap_or(1.0);
            if pick < weight {
                chosen = index;
                break;
            }
            pick -= weight;
        }
        let value = attribute.values[chosen].clone();
        *truth.values.entry(value.clone()).or_default() += 1;
        attributes::string(attribute.key.clone(), value)
    }

    fn fault(&self, service: &str, operation: &str) -> (f64, f64) {
        self.scenario
            .faults
            .iter()
            .filter(|f| f.service == service && f.operation == operation && self.elapsed_s >= f.after_s && f.for_s.is_none_or(|d| self.elapsed_s < f.after_s + d))
            .fold((0.0, 0.0), |(latency, errors), f| (latency + f.latency_ms, (errors + f.error_rate).min(1.0)))
    }

    fn count_edge(&mut self, edge: Edge) {
        *self.edge_calls.entry(edge.clone()).or_default() += 1;
        self.edges.insert(edge);
    }

    /// A server or consumer span for `operation` of `service` and everything it calls.
    #[allow(clippy::too_many_arguments)]
    fn operation_span(
        &mut self,
        trace: &mut GeneratedTrace,
        service: &str,
        operation_name: &str,
        parent: Option<[u8; 8]>,
        kind: span::SpanKind,
        start: u64,
        link_to: Option<[u8; 8]>,
    ) -> Frame {
        let operation: Operation = self.scenario.services[service].operations[operation_name].clone();
        let span_id = self.id::<8>();
        let (fault_latency_ms, fault_errors) = self.fault(service, operation_name);
        let self_ms = self.sample_ms(&operation.latency) + fault_latency_ms;
        let rollout = self.rollout(service);
        let (latency_factor, rollout_errors) = rollout.map_or((1.0, 0.0), |r| (self.scenario.rollouts[r].latency_factor, self.scenario.rollouts[r].error_rate));
        let service_index = self.service_index(service);
        let resource = rollout.map_or(service_index, |r| self.services.len() + r);
        self.serving.push((service_index, resource));
        // A tenth of the own time before the first call, the rest after the last.
        let mut t = start + (self_ms * 0.1 * MS) as u64;
        let mut child_error: Option<[u8; 8]> = None;
        for call in &operation.calls {
            if self.rng.random::<f64>() >= call.probability {
                continue;
            }
            let (end, failed_span) = self.call(trace, service, span_id, call, t);
            t = end;
            if child_error.is_none() {
                child_error = failed_span;
            }
        }
        self.serving.pop();
        // A slower version takes `latency_factor` times as long in all: its own time and its calls'.
        let end = t + (self_ms * 0.9 * MS) as u64;
        let end = start + ((end - start) as f64 * latency_factor) as u64;
        let own_error = self.rng.random::<f64>() < (operation.error_rate + fault_errors).min(1.0) || (rollout_errors > 0.0 && self.rollout_rng.random::<f64>() < rollout_errors);
        let mut s = Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: operation_name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        };
        if kind == span::SpanKind::Server {
            let (method, route) = operation_name.split_once(' ').unwrap_or(("POST", operation_name));
            s.attributes.push(attributes::string("http.request.method", method));
            s.attributes.push(attributes::string("http.route", route));
            s.attributes.push(attributes::int("http.response.status_code", if own_error || child_error.is_some() { 500 } else { 200 }));
        } else {
            s.attributes.push(attributes::string("messaging.system", "kafka"));
            s.attributes.push(attributes::string("messaging.operation.type", "process"));
        }
        for attribute in &operation.attributes {
            let value = self.business_attribute(service, operation_name, attribute);
            s.attributes.push(value);
        }
        for flag in &operation.feature_flags {
            // Counted in the truth as the cohort attribute the analyzer names it by.
            let drawn = BusinessAttribute { key: format!("feature_flag.{}", flag.key), ..flag.clone() };
            let variant = self.business_attribute(service, operation_name, &drawn).value.and_then(|v| v.value);
            let Some(tracepipe_schemas::otlp_common::any_value::Value::StringValue(variant)) = variant else { continue };
            s.events.push(span::Event {
                time_unix_nano: start,
                name: "feature_flag.evaluation".into(),
                attributes: vec![attributes::string("feature_flag.key", flag.key.clone()), attributes::string("feature_flag.result.variant", variant)],
                ..Default::default()
            });
        }
        if parent.is_none() {
            if let Some((key, value)) = &self.correlation {
                s.attributes.push(attributes::string(key.clone(), value.clone()));
            }
        }
        if let Some(link) = link_to {
            s.links.push(span::Link { trace_id: trace.trace_id.to_vec(), span_id: link.to_vec(), ..Default::default() });
        }
        if own_error {
            fail(&mut s, "InternalError", &format!("{operation_name} failed"));
            // An error not explained by a failing call is where the trace's failure originated.
            if child_error.is_none() && trace.root_cause.is_none() {
                trace.root_cause = Some(span_id);
            }
        } else if child_error.is_some() {
            s.status = Some(Status { code: 2, message: "downstream call failed".into() });
        }
        let failed = own_error || child_error.is_some();
        let version = rollout.map_or_else(|| self.scenario.services[service].version.clone().unwrap_or_else(|| "1.0.0".into()), |r| self.scenario.rollouts[r].version.clone());
        let served = self.versions.entry((service.to_string(), version)).or_default();
        served.0 += 1;
        served.1 += u64::from(failed);
        trace.spans.push((resource, s));
        Frame { error: failed, end }
    }

    /// One outgoing call from `caller`; returns when the caller resumes, and the id of the
    /// failing client span if the call failed.
    fn call(&mut self, trace: &mut GeneratedTrace, caller: &str, parent: [u8; 8], call: &Call, start: u64) -> (u64, Option<[u8; 8]>) {
        let caller_index = self.instance_of(caller);
        let client_id = self.id::<8>();
        let mut client = Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: client_id.to_vec(),
            parent_span_id: parent.to_vec(),
            start_time_unix_nano: start,
            ..Default::default()
        };
        let network = (0.2 * MS) as u64;
        let failed;
        let resume;
        if let (Some(callee), Some(operation)) = (&call.service, &call.operation) {
            if call.via == Via::Kafka {
                let topic = call.topic.clone().unwrap_or_else(|| format!("{callee}.{operation}"));
                client.name = format!("{topic} publish");
                client.kind = span::SpanKind::Producer as i32;
                client.attributes.push(attributes::string("messaging.system", "kafka"));
                client.attributes.push(attributes::string("messaging.destination.name", topic.clone()));
                client.attributes.push(attributes::string("messaging.operation.type", "publish"));
                client.end_time_unix_nano = start + (0.5 * MS) as u64;
                // The consumer continues the trace later and links to the producer, as
                // OpenTelemetry messaging instrumentation does.
                let queue_delay = (self.rng.random_range(1.0..20.0) * MS) as u64;
                self.count_edge(Edge { client: caller.into(), server: callee.clone(), kind: "messaging".into() });
                self.operation_span(trace, callee, operation, Some(client_id), span::SpanKind::Consumer, client.end_time_unix_nano + queue_delay, Some(client_id));
                failed = None;
                resume = client.end_time_unix_nano;
            } else {
                let grpc = call.via == Via::Grpc;
                client.name = if grpc { format!("{callee}/{operation}") } else { operation.clone() };
                client.kind = span::SpanKind::Client as i32;
                client.attributes.push(attributes::string("server.address", callee.clone()));
                client.attributes.push(attributes::string("peer.service", callee.clone()));
                if grpc {
                    client.attributes.push(attributes::string("rpc.system", "grpc"));
                } else {
                    let method = operation.split_once(' ').map(|(m, _)| m).unwrap_or("POST");
                    client.attributes.push(attributes::string("http.request.method", method));
                }
                self.count_edge(Edge { client: caller.into(), server: callee.clone(), kind: if grpc { "grpc" } else { "http" }.into() });
                let frame = self.operation_span(trace, callee, operation, Some(client_id), span::SpanKind::Server, start + network, None);
                client.end_time_unix_nano = frame.end + network;
                if frame.error {
                    client.status = Some(Status { code: 2, message: "server responded with an error".into() });
                    client.attributes.push(attributes::int("http.response.status_code", 500));
                }
                failed = frame.error.then_some(client_id);
                resume = client.end_time_unix_nano;
            }
        } else {
            let latency = call.latency.unwrap_or(Latency { median_ms: 1.0, p99_ms: 5.0 });
            let duration = self.sample_ms(&latency);
            client.kind = span::SpanKind::Client as i32;
            client.end_time_unix_nano = start + (duration * MS) as u64;
            if let Some(database) = &call.database {
                let system = call.system.clone().unwrap_or_else(|| "postgresql".into());
                client.name = format!("SELECT {database}");
                client.attributes.push(attributes::string("db.system", system.clone()));
                client.attributes.push(attributes::string("db.system.name", system));
                client.attributes.push(attributes::string("db.namespace", database.clone()));
                client.attributes.push(attributes::string("peer.service", database.clone()));
                client.attributes.push(attributes::string("server.address", database.clone()));
                self.count_edge(Edge { client: caller.into(), server: database.clone(), kind: "database".into() });
            } else if let Some(external) = &call.external {
                client.name = "POST".into();
                client.attributes.push(attributes::string("http.request.method", "POST"));
                client.attributes.push(attributes::string("server.address", external.clone()));
                client.attributes.push(attributes::string("peer.service", external.clone()));
                self.count_edge(Edge { client: caller.into(), server: external.clone(), kind: "external".into() });
            }
            let error = self.rng.random::<f64>() < call.error_rate;
            if error {
                let message = format!("{} timed out", client.name);
                fail(&mut client, "TimeoutError", &message);
                if trace.root_cause.is_none() {
                    trace.root_cause = Some(client_id);
                }
            }
            failed = error.then_some(client_id);
            resume = client.end_time_unix_nano;
        }
        trace.spans.push((caller_index, client));
        (resume, failed)
    }
}

fn fail(span: &mut Span, exception_type: &str, message: &str) {
    span.status = Some(Status { code: 2, message: message.to_string() });
    span.events.push(span::Event {
        name: "exception".into(),
        time_unix_nano: span.end_time_unix_nano.max(span.start_time_unix_nano),
        attributes: vec![attributes::string("exception.type", exception_type), attributes::string("exception.message", message)],
        ..Default::default()
    });
}
