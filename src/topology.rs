//! topology.yaml: the raw file as serde reads it, and the validated [`Topology`] built from it by
//! [`Topology::from_yaml`], which reports every problem at once with its path in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_assembler::AssemblerConfig;
use tracepipe_runtime::{KafkaSettings, PipelineSettings};
use tracepipe_analyzer::{AnalyzerConfig, DetectionConfig};
use tracepipe_dependencies::DependenciesConfig;
use tracepipe_gateway::GatewayConfig;
use tracepipe_sampler::{AttributeScope, Matcher, RuleKind, SamplerConfig, SamplingRule};
use tracepipe_query::sampling::AdaptiveSampling;
use tracepipe_sink::{Retention, SinkConfig, SinkInput, StoreUrl};
use tracepipe_schemas::Encoding;

/// The topology tracepipe ships with; `tracepipe up` uses it unless given another file.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.yaml");

/// The processors this build has.
pub const PROCESSORS: &[&str] = &["gateway", "router", "assembler", "sampler", "analyzer", "dependencies", "sink", "query"];

// ---- raw file ---------------------------------------------------------------------------------
// Unknown keys are collected (`unknown`) rather than refused by serde, so that all of them are
// reported together with every other problem.

type Unknown = BTreeMap<String, Value>;

#[derive(Debug, Deserialize, Default)]
struct RawTopology {
    version: Option<u32>,
    #[serde(default)]
    kafka: RawKafka,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    topics: BTreeMap<String, RawTopic>,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    processors: BTreeMap<String, Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawKafka {
    brokers: Option<String>,
    #[serde(default)]
    client: BTreeMap<String, Value>,
    #[serde(default)]
    consumer: BTreeMap<String, Value>,
    #[serde(default)]
    producer: BTreeMap<String, Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawAdmin {
    listen: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawStorage {
    url: Option<String>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawRetention {
    traces: Option<String>,
    edges: Option<String>,
    rollups: Option<String>,
    alerts: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawSink {
    group: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    dlq: Option<String>,
    batch_rows: Option<i64>,
    flush_interval: Option<String>,
    retention_check: Option<String>,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawGateway {
    output: Option<String>,
    grpc_listen: Option<String>,
    http_listen: Option<String>,
    max_request_bytes: Option<Value>,
    max_in_flight_bytes: Option<Value>,
    ack_timeout: Option<String>,
    retry_after: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawQuery {
    listen: Option<String>,
    bearer_token_env: Option<String>,
    #[serde(default)]
    adaptive_sampling: RawAdaptiveSampling,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawAdaptiveSampling {
    target_traces_per_second: Option<f64>,
    lookback: Option<String>,
    default_probability: Option<f64>,
    min_probability: Option<f64>,
    min_traces_per_second: Option<f64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawTopic {
    partitions: Option<i64>,
    replication: Option<i64>,
    retention: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawRouter {
    group: Option<String>,
    #[serde(default)]
    inputs: Vec<RawInput>,
    output: Option<String>,
    dlq: Option<String>,
    max_message_bytes: Option<Value>,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawAssembler {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    grace: Option<String>,
    idle_timeout: Option<String>,
    max_duration: Option<String>,
    max_spans: Option<i64>,
    max_trace_bytes: Option<Value>,
    memory_budget: Option<Value>,
    emitted_cache: Option<i64>,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawSampler {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    decision_cache: Option<i64>,
    #[serde(default)]
    rules: Vec<RawRule>,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawAnalyzer {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    alerts: Option<String>,
    dlq: Option<String>,
    window: Option<String>,
    lateness: Option<String>,
    max_series: Option<i64>,
    max_operations_per_service: Option<i64>,
    max_error_groups: Option<i64>,
    error_traces: Option<bool>,
    #[serde(default)]
    detection: RawDetection,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawDetection {
    slice: Option<String>,
    baseline_slices: Option<i64>,
    min_baseline_slices: Option<i64>,
    min_samples: Option<i64>,
    sensitivity: Option<f64>,
    min_ratio: Option<f64>,
    min_delta: Option<String>,
    consecutive: Option<i64>,
    resolve_after: Option<i64>,
    error_min_count: Option<i64>,
    error_ratio: Option<f64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawDependencies {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    alerts: Option<String>,
    dlq: Option<String>,
    window: Option<String>,
    lateness: Option<String>,
    max_edges: Option<i64>,
    learning: Option<String>,
    vanish_after: Option<String>,
    commit_interval: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    threshold: Option<String>,
    percentile: Option<f64>,
    min_samples: Option<u64>,
    window: Option<String>,
    key: Option<String>,
    equals: Option<Value>,
    regex: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    bool: Option<bool>,
    scope: Option<String>,
    max_shapes: Option<usize>,
    rate: Option<f64>,
    per_second: Option<f64>,
    goal_sample_rate: Option<f64>,
    weight: Option<f64>,
    adjustment_interval: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, Default)]
struct RawInput {
    topic: Option<String>,
    encoding: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

// ---- validated --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Topology {
    pub kafka: KafkaSettings,
    pub admin_listen: SocketAddr,
    pub topics: BTreeMap<String, TopicSpec>,
    pub router: Option<RouterSpec>,
    pub assembler: Option<StageSpec<AssemblerConfig>>,
    pub sampler: Option<StageSpec<SamplerConfig>>,
    pub analyzer: Option<AnalysisSpec<AnalyzerConfig>>,
    pub dependencies: Option<AnalysisSpec<DependenciesConfig>>,
    pub storage: StorageSpec,
    pub sink: Option<SinkSpec>,
    pub query: Option<QuerySpec>,
    pub gateway: Option<GatewaySpec>,
}

/// Where the sink writes and the query server reads.
#[derive(Debug, Clone)]
pub struct StorageSpec {
    pub url: StoreUrl,
    pub retention: Retention,
}

#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub group: String,
    /// Input topics and what each carries, in the pipeline's input order.
    pub inputs: Vec<(String, SinkInput)>,
    pub dlq: String,
    pub commit_interval: Duration,
    pub max_in_flight: usize,
    pub config: SinkConfig,
}

#[derive(Debug, Clone)]
pub struct GatewaySpec {
    pub output: String,
    pub config: GatewayConfig,
}

#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub listen: SocketAddr,
    /// The environment variable holding the bearer token API requests must carry, if set.
    pub bearer_token_env: Option<String>,
    pub adaptive_sampling: AdaptiveSampling,
}

/// A processor that writes its results to `stage.output` and its alerts to `alerts`.
#[derive(Debug, Clone)]
pub struct AnalysisSpec<C> {
    pub stage: StageSpec<C>,
    pub alerts: String,
}

/// A processor with one input and one output topic and its own configuration.
#[derive(Debug, Clone)]
pub struct StageSpec<C> {
    pub group: String,
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub commit_interval: Duration,
    pub max_in_flight: usize,
    pub config: C,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication: i32,
    pub retention: Option<Duration>,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct RouterSpec {
    pub group: String,
    pub inputs: Vec<(String, Encoding)>,
    pub output: String,
    pub dlq: String,
    pub max_message_bytes: usize,
    pub commit_interval: Duration,
    pub max_in_flight: usize,
}

/// One problem in the file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[derive(Default)]
struct Collector(Vec<Problem>);

impl Collector {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }

    fn unknown(&mut self, path: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            self.add(at, format!("unknown key `{key}` (expected one of: {})", known.join(", ")));
        }
    }

    fn required<'a>(&mut self, path: String, value: &'a Option<String>) -> Option<&'a str> {
        match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.add(path, "is required");
                None
            }
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn settings_map(path: &str, raw: &BTreeMap<String, Value>, problems: &mut Collector) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        match scalar_text(value) {
            Some(text) => {
                out.insert(key.clone(), text);
            }
            None => problems.add(format!("{path}.{key}"), "must be a string, number or boolean"),
        }
    }
    out
}

fn parse_duration(path: String, text: &str, problems: &mut Collector) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.add(path, "must be longer than zero");
            None
        }
        Err(e) => {
            problems.add(path, format!("invalid duration `{text}`: {e} (e.g. 500ms, 1s, 24h, 7d)"));
            None
        }
    }
}

/// Parses `16MiB`, `512KiB`, `1000000` and the like.
fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

impl Topology {
    /// Parses and validates. A file serde cannot read at all (bad YAML, a list where a map belongs)
    /// yields that one error with its line; otherwise every problem is reported together.
    pub fn from_yaml(text: &str) -> Result<Topology, Problems> {
        let raw: RawTopology = serde_yaml_ng::from_str(text)
            .map_err(|e| Problems(vec![Problem { path: String::new(), message: e.to_string() }]))?;
        let mut problems = Collector::default();
        problems.unknown("", &raw.unknown, &["version", "kafka", "admin", "topics", "storage", "processors"]);
        if let Some(version) = raw.version {
            if version != 1 {
                problems.add("version", format!("unsupported version {version}, this build reads version 1"));
            }
        }

        problems.unknown("kafka", &raw.kafka.unknown, &["brokers", "client", "consumer", "producer"]);
        let brokers = problems.required("kafka.brokers".into(), &raw.kafka.brokers).unwrap_or_default().to_string();
        let kafka = KafkaSettings {
            brokers,
            client: settings_map("kafka.client", &raw.kafka.client, &mut problems),
            consumer: settings_map("kafka.consumer", &raw.kafka.consumer, &mut problems),
            producer: settings_map("kafka.producer", &raw.kafka.producer, &mut problems),
        };

        problems.unknown("admin", &raw.admin.unknown, &["listen"]);
        let listen = raw.admin.listen.as_deref().unwrap_or("127.0.0.1:9464");
        let admin_listen = listen.parse().unwrap_or_else(|_| {
            problems.add("admin.listen", format!("`{listen}` is not an address like 127.0.0.1:9464"));
            SocketAddr::from(([127, 0, 0, 1], 9464))
        });

        let mut topics = BTreeMap::new();
        for (name, raw_topic) in &raw.topics {
            let path = format!("topics.{name}");
            problems.unknown(&path, &raw_topic.unknown, &["partitions", "replication", "retention", "config"]);
            if name.is_empty() || name.len() > 249 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.add(&path, "topic names are 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'");
            }
            let partitions = raw_topic.partitions.unwrap_or(1);
            if !(1..=10_000).contains(&partitions) {
                problems.add(format!("{path}.partitions"), format!("must be between 1 and 10000, got {partitions}"));
            }
            let replication = raw_topic.replication.unwrap_or(1);
            if !(1..=32).contains(&replication) {
                problems.add(format!("{path}.replication"), format!("must be between 1 and 32, got {replication}"));
            }
            let retention = raw_topic.retention.as_deref().and_then(|r| parse_duration(format!("{path}.retention"), r, &mut problems));
            let config = settings_map(&format!("{path}.config"), &raw_topic.config, &mut problems);
            topics.insert(name.clone(), TopicSpec { partitions: partitions as i32, replication: replication as i32, retention, config });
        }

        let storage = validate_storage(&raw.storage, &mut problems);
        let mut sink = None;
        let mut query = None;
        let mut gateway = None;
        let mut router = None;
        let mut assembler = None;
        let mut sampler = None;
        let mut analyzer = None;
        let mut dependencies = None;
        for (name, section) in &raw.processors {
            let path = format!("processors.{name}");
            match name.as_str() {
                "router" => router = parse_section(&path, section, &mut problems, |raw, p| validate_router(&path, raw, &topics, p)),
                "assembler" => assembler = parse_section(&path, section, &mut problems, |raw, p| validate_assembler(&path, raw, &topics, p)),
                "sampler" => sampler = parse_section(&path, section, &mut problems, |raw, p| validate_sampler(&path, raw, &topics, p)),
                "analyzer" => analyzer = parse_section(&path, section, &mut problems, |raw, p| validate_analyzer(&path, raw, &topics, p)),
                "dependencies" => dependencies = parse_section(&path, section, &mut problems, |raw, p| validate_dependencies(&path, raw, &topics, p)),
                "sink" => sink = parse_section(&path, section, &mut problems, |raw, p| validate_sink(&path, raw, &topics, storage.retention, p)),
                "query" => query = parse_section(&path, section, &mut problems, |raw, p| validate_query(&path, raw, p)),
                "gateway" => gateway = parse_section(&path, section, &mut problems, |raw, p| validate_gateway(&path, raw, &topics, p)),
                other => problems.add(path, format!("unknown processor `{other}` (this build has: {})", PROCESSORS.join(", "))),
            }
        }

        if problems.0.is_empty() {
            Ok(Topology { kafka, admin_listen, topics, router, assembler, sampler, analyzer, dependencies, storage, sink, query, gateway })
        } else {
            Err(Problems(problems.0))
        }
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Topology::from_yaml(&text).map_err(|problems| anyhow::anyhow!("{} is invalid:\n{problems}", path.display()))
    }

    pub fn router_pipeline(&self, spec: &RouterSpec) -> PipelineSettings {
        let inputs = spec.inputs.iter().map(|(topic, _)| topic.clone()).collect();
        self.pipeline(&spec.group, inputs, vec![spec.output.clone()], &spec.dlq, spec.commit_interval, spec.max_in_flight)
    }

    pub fn stage_pipeline<C>(&self, spec: &StageSpec<C>) -> PipelineSettings {
        self.pipeline(&spec.group, vec![spec.input.clone()], vec![spec.output.clone()], &spec.dlq, spec.commit_interval, spec.max_in_flight)
    }

    pub fn analysis_pipeline<C>(&self, spec: &AnalysisSpec<C>) -> PipelineSettings {
        let mut settings = self.stage_pipeline(&spec.stage);
        settings.outputs.push(spec.alerts.clone());
        settings
    }

    pub fn sink_pipeline(&self, spec: &SinkSpec) -> PipelineSettings {
        let inputs = spec.inputs.iter().map(|(topic, _)| topic.clone()).collect();
        self.pipeline(&spec.group, inputs, Vec::new(), &spec.dlq, spec.commit_interval, spec.max_in_flight)
    }

    fn pipeline(&self, group: &str, inputs: Vec<String>, outputs: Vec<String>, dlq: &str, commit_interval: Duration, max_in_flight: usize) -> PipelineSettings {
        let mut settings = PipelineSettings::new(self.kafka.clone(), group, inputs, outputs, dlq);
        settings.commit_interval = commit_interval;
        settings.max_in_flight = max_in_flight;
        settings
    }
}

/// Reads one processor's section as `R` and validates it; a section serde cannot read is one problem.
fn parse_section<R: serde::de::DeserializeOwned, S>(
    path: &str,
    section: &Value,
    problems: &mut Collector,
    validate: impl FnOnce(R, &mut Collector) -> Option<S>,
) -> Option<S> {
    match serde_yaml_ng::from_value::<R>(section.clone()) {
        Ok(raw) => validate(raw, problems),
        Err(e) => {
            problems.add(path, e.to_string());
            None
        }
    }
}

/// A size field (`16MiB`, `1000000`): `None` when unset. One that is not a size, or outside
/// `range`, is a problem saying it must be `expected`, and counts as unset.
fn optional_size(path: String, value: &Option<Value>, range: std::ops::RangeInclusive<usize>, expected: &str, problems: &mut Collector) -> Option<usize> {
    let given = value.as_ref()?;
    match scalar_text(given).as_deref().and_then(parse_bytes) {
        Some(bytes) if range.contains(&bytes) => Some(bytes),
        _ => {
            problems.add(path, format!("must be {expected}"));
            None
        }
    }
}

fn optional_duration(path: String, value: &Option<String>, default: Duration, problems: &mut Collector) -> Duration {
    match value {
        Some(text) => parse_duration(path, text, problems).unwrap_or(default),
        None => default,
    }
}

fn bounded(path: String, value: Option<i64>, default: i64, range: std::ops::RangeInclusive<i64>, problems: &mut Collector) -> i64 {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        problems.add(path, format!("must be between {} and {}, got {value}", range.start(), range.end()));
        return default;
    }
    value
}

/// The fields every one-input, one-output processor has.
struct StageTopics {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    commit_interval: Duration,
    max_in_flight: usize,
}

#[allow(clippy::too_many_arguments)]
fn validate_stage(
    path: &str,
    group: &Option<String>,
    input: &Option<String>,
    output: &Option<String>,
    dlq: &Option<String>,
    commit_interval: &Option<String>,
    max_in_flight: Option<i64>,
    topics: &BTreeMap<String, TopicSpec>,
    problems: &mut Collector,
) -> StageTopics {
    StageTopics {
        group: problems.required(format!("{path}.group"), group).map(str::to_string),
        input: topic_ref(format!("{path}.input"), input, topics, problems),
        output: topic_ref(format!("{path}.output"), output, topics, problems),
        dlq: topic_ref(format!("{path}.dlq"), dlq, topics, problems),
        commit_interval: optional_duration(format!("{path}.commit_interval"), commit_interval, Duration::from_secs(1), problems),
        max_in_flight: bounded(format!("{path}.max_in_flight"), max_in_flight, 50_000, 1..=10_000_000, problems) as usize,
    }
}

impl StageTopics {
    fn with<C>(self, config: C) -> Option<StageSpec<C>> {
        Some(StageSpec {
            group: self.group?,
            input: self.input?,
            output: self.output?,
            dlq: self.dlq?,
            commit_interval: self.commit_interval,
            max_in_flight: self.max_in_flight,
            config,
        })
    }
}

fn validate_assembler(path: &str, raw: RawAssembler, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<StageSpec<AssemblerConfig>> {
    problems.unknown(
        path,
        &raw.unknown,
        &["group", "input", "output", "dlq", "grace", "idle_timeout", "max_duration", "max_spans", "max_trace_bytes", "memory_budget", "emitted_cache", "commit_interval", "max_in_flight"],
    );
    let stage = validate_stage(path, &raw.group, &raw.input, &raw.output, &raw.dlq, &raw.commit_interval, raw.max_in_flight, topics, problems);
    let defaults = AssemblerConfig::default();
    let memory_budget_bytes = optional_size(format!("{path}.memory_budget"), &raw.memory_budget, 1 << 20..=usize::MAX, "a size of at least 1MiB, like 256MiB", problems)
        .unwrap_or(defaults.memory_budget_bytes);
    // One trace is emitted at a time, so it must fit the budget's eviction batch, a sixteenth.
    let largest_trace = tracepipe_assembler::largest_trace_limit(memory_budget_bytes);
    let max_trace_bytes = match optional_size(format!("{path}.max_trace_bytes"), &raw.max_trace_bytes, 64 << 10..=256 << 20, "a size from 64KiB to 256MiB, like 8MiB", problems) {
        None => defaults.max_trace_bytes.min(largest_trace),
        Some(bytes) => {
            if bytes > largest_trace {
                problems.add(format!("{path}.max_trace_bytes"), format!("must be at most a sixteenth of memory_budget ({largest_trace} bytes): one trace is emitted at a time"));
            }
            bytes
        }
    };
    let config = AssemblerConfig {
        grace: optional_duration(format!("{path}.grace"), &raw.grace, defaults.grace, problems),
        idle_timeout: optional_duration(format!("{path}.idle_timeout"), &raw.idle_timeout, defaults.idle_timeout, problems),
        max_duration: optional_duration(format!("{path}.max_duration"), &raw.max_duration, defaults.max_duration, problems),
        max_spans: bounded(format!("{path}.max_spans"), raw.max_spans, i64::from(defaults.max_spans), 1..=1_000_000, problems) as u32,
        max_trace_bytes,
        memory_budget_bytes,
        emitted_cache_traces: bounded(format!("{path}.emitted_cache"), raw.emitted_cache, defaults.emitted_cache_traces as i64, 1..=100_000_000, problems) as usize,
    };
    if config.grace >= config.idle_timeout {
        problems.add(format!("{path}.grace"), "must be shorter than idle_timeout");
    }
    if config.idle_timeout > config.max_duration {
        problems.add(format!("{path}.idle_timeout"), "must not be longer than max_duration");
    }
    stage.with(config)
}

fn validate_sampler(path: &str, raw: RawSampler, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<StageSpec<SamplerConfig>> {
    problems.unknown(path, &raw.unknown, &["group", "input", "output", "dlq", "decision_cache", "rules", "commit_interval", "max_in_flight"]);
    let stage = validate_stage(path, &raw.group, &raw.input, &raw.output, &raw.dlq, &raw.commit_interval, raw.max_in_flight, topics, problems);
    if raw.rules.is_empty() {
        problems.add(format!("{path}.rules"), "needs at least one rule; a sampler that keeps nothing is `- {{ type: drop }}`");
    }
    let mut rules = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, rule) in raw.rules.iter().enumerate() {
        let at = format!("{path}.rules[{i}]");
        let name = rule.name.clone().or_else(|| rule.kind.clone()).unwrap_or_default();
        if !names.insert(name.clone()) {
            problems.add(format!("{at}.name"), format!("rule name `{name}` is used twice; names label the decision metrics"));
        }
        if let Some(kind) = validate_rule(&at, rule, problems) {
            rules.push(SamplingRule { name, kind });
        }
    }
    let decision_cache = bounded(format!("{path}.decision_cache"), raw.decision_cache, 200_000, 1..=100_000_000, problems) as u64;
    stage.with(SamplerConfig { rules, decision_cache })
}

fn positive_duration(path: String, value: &Option<String>, default: Duration, problems: &mut Collector) -> Duration {
    let duration = optional_duration(path.clone(), value, default, problems);
    if duration.is_zero() {
        problems.add(path, "must be longer than zero");
        return default;
    }
    duration
}

fn bounded_f64(path: String, value: Option<f64>, default: f64, range: std::ops::RangeInclusive<f64>, problems: &mut Collector) -> f64 {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        problems.add(path, format!("must be between {} and {}, got {value}", range.start(), range.end()));
        return default;
    }
    value
}

/// Windows are aligned to whole seconds, as the records that carry them say (`window_seconds`).
fn whole_seconds(path: String, window: Duration, problems: &mut Collector) {
    if window.as_secs() == 0 || window.subsec_nanos() != 0 {
        problems.add(path, "must be a whole number of seconds");
    }
}

fn validate_analyzer(path: &str, raw: RawAnalyzer, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<AnalysisSpec<AnalyzerConfig>> {
    problems.unknown(
        path,
        &raw.unknown,
        &[
            "group", "input", "output", "alerts", "dlq", "window", "lateness", "max_series", "max_operations_per_service", "max_error_groups", "error_traces",
            "detection", "commit_interval", "max_in_flight",
        ],
    );
    let stage = validate_stage(path, &raw.group, &raw.input, &raw.output, &raw.dlq, &raw.commit_interval, raw.max_in_flight, topics, problems);
    let alerts = topic_ref(format!("{path}.alerts"), &raw.alerts, topics, problems);
    let defaults = AnalyzerConfig::default();
    let d = &raw.detection;
    let at = format!("{path}.detection");
    problems.unknown(
        &at,
        &d.unknown,
        &[
            "slice", "baseline_slices", "min_baseline_slices", "min_samples", "sensitivity", "min_ratio", "min_delta", "consecutive", "resolve_after",
            "error_min_count", "error_ratio",
        ],
    );
    let dd = &defaults.detection;
    let detection = DetectionConfig {
        slice: positive_duration(format!("{at}.slice"), &d.slice, dd.slice, problems),
        baseline_slices: bounded(format!("{at}.baseline_slices"), d.baseline_slices, dd.baseline_slices as i64, 2..=10_000, problems) as usize,
        min_baseline_slices: bounded(format!("{at}.min_baseline_slices"), d.min_baseline_slices, dd.min_baseline_slices as i64, 1..=10_000, problems) as usize,
        min_samples: bounded(format!("{at}.min_samples"), d.min_samples, dd.min_samples as i64, 1..=1_000_000, problems) as u64,
        sensitivity: bounded_f64(format!("{at}.sensitivity"), d.sensitivity, dd.sensitivity, 0.0..=100.0, problems),
        min_ratio: bounded_f64(format!("{at}.min_ratio"), d.min_ratio, dd.min_ratio, 1.0..=100.0, problems),
        min_delta: optional_duration(format!("{at}.min_delta"), &d.min_delta, dd.min_delta, problems),
        consecutive: bounded(format!("{at}.consecutive"), d.consecutive, i64::from(dd.consecutive), 1..=100, problems) as u32,
        resolve_after: bounded(format!("{at}.resolve_after"), d.resolve_after, i64::from(dd.resolve_after), 1..=10_000, problems) as u32,
        error_min_count: bounded(format!("{at}.error_min_count"), d.error_min_count, dd.error_min_count as i64, 1..=1_000_000, problems) as u64,
        error_ratio: bounded_f64(format!("{at}.error_ratio"), d.error_ratio, dd.error_ratio, 1.0..=1000.0, problems),
    };
    if detection.min_baseline_slices > detection.baseline_slices {
        problems.add(format!("{at}.min_baseline_slices"), "must not exceed baseline_slices");
    }
    let config = AnalyzerConfig {
        window: positive_duration(format!("{path}.window"), &raw.window, defaults.window, problems),
        lateness: optional_duration(format!("{path}.lateness"), &raw.lateness, defaults.lateness, problems),
        max_series: bounded(format!("{path}.max_series"), raw.max_series, defaults.max_series as i64, 1..=1_000_000, problems) as usize,
        max_operations_per_service: bounded(format!("{path}.max_operations_per_service"), raw.max_operations_per_service, defaults.max_operations_per_service as i64, 1..=1_000_000, problems)
            as usize,
        max_error_groups: bounded(format!("{path}.max_error_groups"), raw.max_error_groups, defaults.max_error_groups as i64, 1..=1_000_000, problems) as usize,
        error_traces: raw.error_traces.unwrap_or(defaults.error_traces),
        detection,
    };
    whole_seconds(format!("{path}.window"), config.window, problems);
    Some(AnalysisSpec { stage: stage.with(config)?, alerts: alerts? })
}

fn validate_dependencies(path: &str, raw: RawDependencies, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<AnalysisSpec<DependenciesConfig>> {
    problems.unknown(
        path,
        &raw.unknown,
        &["group", "input", "output", "alerts", "dlq", "window", "lateness", "max_edges", "learning", "vanish_after", "commit_interval", "max_in_flight"],
    );
    let stage = validate_stage(path, &raw.group, &raw.input, &raw.output, &raw.dlq, &raw.commit_interval, raw.max_in_flight, topics, problems);
    let alerts = topic_ref(format!("{path}.alerts"), &raw.alerts, topics, problems);
    let defaults = DependenciesConfig::default();
    let config = DependenciesConfig {
        window: positive_duration(format!("{path}.window"), &raw.window, defaults.window, problems),
        lateness: optional_duration(format!("{path}.lateness"), &raw.lateness, defaults.lateness, problems),
        max_edges: bounded(format!("{path}.max_edges"), raw.max_edges, defaults.max_edges as i64, 1..=1_000_000, problems) as usize,
        learning: optional_duration(format!("{path}.learning"), &raw.learning, defaults.learning, problems),
        vanish_after: positive_duration(format!("{path}.vanish_after"), &raw.vanish_after, defaults.vanish_after, problems),
    };
    whole_seconds(format!("{path}.window"), config.window, problems);
    Some(AnalysisSpec { stage: stage.with(config)?, alerts: alerts? })
}

fn validate_storage(raw: &RawStorage, problems: &mut Collector) -> StorageSpec {
    problems.unknown("storage", &raw.unknown, &["url", "retention"]);
    let text = raw.url.as_deref().unwrap_or("sqlite://tracepipe.db");
    let url = StoreUrl::parse(text).unwrap_or_else(|e| {
        problems.add("storage.url", e.to_string());
        StoreUrl::Sqlite("tracepipe.db".into())
    });
    let r = &raw.retention;
    problems.unknown("storage.retention", &r.unknown, &["traces", "edges", "rollups", "alerts"]);
    let d = Retention::default();
    let retention = Retention {
        traces: positive_duration("storage.retention.traces".into(), &r.traces, d.traces, problems),
        edges: positive_duration("storage.retention.edges".into(), &r.edges, d.edges, problems),
        rollups: positive_duration("storage.retention.rollups".into(), &r.rollups, d.rollups, problems),
        alerts: positive_duration("storage.retention.alerts".into(), &r.alerts, d.alerts, problems),
    };
    StorageSpec { url, retention }
}

fn validate_sink(path: &str, raw: RawSink, topics: &BTreeMap<String, TopicSpec>, retention: Retention, problems: &mut Collector) -> Option<SinkSpec> {
    problems.unknown(path, &raw.unknown, &["group", "inputs", "dlq", "batch_rows", "flush_interval", "retention_check", "commit_interval", "max_in_flight"]);
    let group = problems.required(format!("{path}.group"), &raw.group).map(str::to_string);
    let mut inputs = Vec::new();
    for (kind, topic) in &raw.inputs {
        let at = format!("{path}.inputs.{kind}");
        let kind = match kind.as_str() {
            "traces" => SinkInput::Traces,
            "edges" => SinkInput::Edges,
            "rollups" => SinkInput::Rollups,
            "alerts" => SinkInput::Alerts,
            other => {
                problems.add(at, format!("unknown input `{other}` (the sink reads traces, edges, rollups and alerts)"));
                continue;
            }
        };
        if let Some(topic) = topic_ref(at, &Some(topic.clone()), topics, problems) {
            inputs.push((topic, kind));
        }
    }
    if raw.inputs.is_empty() {
        problems.add(format!("{path}.inputs"), "name at least one of traces, edges, rollups, alerts with its topic");
    }
    let dlq = topic_ref(format!("{path}.dlq"), &raw.dlq, topics, problems);
    let defaults = SinkConfig::default();
    let config = SinkConfig {
        batch_rows: bounded(format!("{path}.batch_rows"), raw.batch_rows, defaults.batch_rows as i64, 1..=1_000_000, problems) as usize,
        flush_interval: positive_duration(format!("{path}.flush_interval"), &raw.flush_interval, defaults.flush_interval, problems),
        retention,
        retention_check: positive_duration(format!("{path}.retention_check"), &raw.retention_check, defaults.retention_check, problems),
    };
    Some(SinkSpec {
        group: group?,
        inputs,
        dlq: dlq?,
        commit_interval: optional_duration(format!("{path}.commit_interval"), &raw.commit_interval, Duration::from_secs(1), problems),
        max_in_flight: bounded(format!("{path}.max_in_flight"), raw.max_in_flight, 50_000, 1..=10_000_000, problems) as usize,
        config,
    })
}

fn validate_query(path: &str, raw: RawQuery, problems: &mut Collector) -> Option<QuerySpec> {
    problems.unknown(path, &raw.unknown, &["listen", "bearer_token_env", "adaptive_sampling"]);
    let adaptive_sampling = validate_adaptive_sampling(&format!("{path}.adaptive_sampling"), &raw.adaptive_sampling, problems);
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:16686");
    let listen = match listen.parse() {
        Ok(listen) => listen,
        Err(_) => {
            problems.add(format!("{path}.listen"), format!("`{listen}` is not an address like 127.0.0.1:16686"));
            return None;
        }
    };
    Some(QuerySpec { listen, bearer_token_env: raw.bearer_token_env.filter(|v| !v.is_empty()), adaptive_sampling })
}

fn validate_adaptive_sampling(at: &str, raw: &RawAdaptiveSampling, problems: &mut Collector) -> AdaptiveSampling {
    problems.unknown(at, &raw.unknown, &["target_traces_per_second", "lookback", "default_probability", "min_probability", "min_traces_per_second"]);
    let defaults = AdaptiveSampling::default();
    let rate = |field: &str, value: Option<f64>, default: f64, problems: &mut Collector| match value {
        Some(v) if v.is_finite() && v > 0.0 => v,
        None => default,
        Some(v) => {
            problems.add(format!("{at}.{field}"), format!("must be a number of traces per second above zero, got {v}"));
            default
        }
    };
    let sampling = AdaptiveSampling {
        target_traces_per_second: rate("target_traces_per_second", raw.target_traces_per_second, defaults.target_traces_per_second, problems),
        lookback: positive_duration(format!("{at}.lookback"), &raw.lookback, defaults.lookback, problems),
        default_probability: bounded_f64(format!("{at}.default_probability"), raw.default_probability, defaults.default_probability, 0.0..=1.0, problems),
        min_probability: bounded_f64(format!("{at}.min_probability"), raw.min_probability, defaults.min_probability, 0.0..=1.0, problems),
        min_traces_per_second: rate("min_traces_per_second", raw.min_traces_per_second, defaults.min_traces_per_second, problems),
    };
    if sampling.min_traces_per_second > sampling.target_traces_per_second {
        problems.add(format!("{at}.min_traces_per_second"), format!("must not exceed target_traces_per_second ({})", sampling.target_traces_per_second));
    }
    sampling
}

fn validate_gateway(path: &str, raw: RawGateway, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<GatewaySpec> {
    problems.unknown(path, &raw.unknown, &["output", "grpc_listen", "http_listen", "max_request_bytes", "max_in_flight_bytes", "ack_timeout", "retry_after"]);
    let defaults = GatewayConfig::default();
    let output = topic_ref(format!("{path}.output"), &raw.output, topics, problems);
    let mut listen = |field: &str, value: &Option<String>, default: Option<SocketAddr>| match value.as_deref() {
        None => default,
        Some("off") | Some("") => None,
        Some(text) => text.parse().map(Some).unwrap_or_else(|_| {
            problems.add(format!("{path}.{field}"), format!("`{text}` is not an address like 0.0.0.0:4317 (or `off`)"));
            None
        }),
    };
    let grpc_listen = listen("grpc_listen", &raw.grpc_listen, defaults.grpc_listen);
    let http_listen = listen("http_listen", &raw.http_listen, defaults.http_listen);
    let mut size = |field: &str, value: &Option<Value>, default: usize| optional_size(format!("{path}.{field}"), value, 1..=usize::MAX, "a size like 16MiB or 1000000", problems).unwrap_or(default);
    let max_request_bytes = size("max_request_bytes", &raw.max_request_bytes, defaults.max_request_bytes);
    let max_in_flight_bytes = size("max_in_flight_bytes", &raw.max_in_flight_bytes, defaults.max_in_flight_bytes);
    if max_in_flight_bytes < max_request_bytes {
        problems.add(format!("{path}.max_in_flight_bytes"), format!("must be at least max_request_bytes ({max_request_bytes}), or the largest requests could never be taken"));
    }
    let ack_timeout = optional_duration(format!("{path}.ack_timeout"), &raw.ack_timeout, defaults.ack_timeout, problems);
    let retry_after = optional_duration(format!("{path}.retry_after"), &raw.retry_after, defaults.retry_after, problems);
    if grpc_listen.is_none() && http_listen.is_none() {
        problems.add(path.to_string(), "grpc_listen and http_listen are both off; remove the section instead");
    }
    let config = GatewayConfig { grpc_listen, http_listen, max_request_bytes, max_in_flight_bytes, ack_timeout, retry_after };
    Some(GatewaySpec { output: output?, config })
}

const RULE_TYPES: &str = "always, drop, errors, latency, attribute, span_count, rare_structure, probabilistic, rate_limit, dynamic, and";

fn validate_rule(at: &str, rule: &RawRule, problems: &mut Collector) -> Option<RuleKind> {
    problems.unknown(
        at,
        &rule.unknown,
        &["name", "type", "threshold", "percentile", "min_samples", "window", "key", "equals", "regex", "min", "max", "bool", "scope", "max_shapes", "rate", "per_second", "goal_sample_rate", "weight", "adjustment_interval", "rules"],
    );
    let Some(kind) = rule.kind.as_deref() else {
        problems.add(format!("{at}.type"), format!("is required (one of {RULE_TYPES})"));
        return None;
    };
    // A required number that `accept` takes, or a problem saying it must be `expected`.
    let bounded = |field: &str, value: Option<f64>, accept: fn(f64) -> bool, expected: &str, problems: &mut Collector| match value {
        Some(v) if accept(v) => Some(v),
        Some(v) => {
            problems.add(format!("{at}.{field}"), format!("must be {expected}, got {v}"));
            None
        }
        None => {
            problems.add(format!("{at}.{field}"), "is required");
            None
        }
    };
    let fraction = |field: &str, value: Option<f64>, problems: &mut Collector| bounded(field, value, |v| (0.0..=1.0).contains(&v), "between 0 and 1", problems);
    let positive = |field: &str, value: Option<f64>, problems: &mut Collector| match value {
        Some(v) if v > 0.0 && v.is_finite() => Some(v),
        _ => {
            problems.add(format!("{at}.{field}"), "is required and must be above zero");
            None
        }
    };
    Some(match kind {
        "always" => RuleKind::Always,
        "drop" => RuleKind::Drop,
        "errors" => RuleKind::Errors,
        "latency" => match (&rule.threshold, rule.percentile) {
            (Some(threshold), None) => RuleKind::Latency { threshold: parse_duration(format!("{at}.threshold"), threshold, problems)? },
            (None, Some(percentile)) if percentile > 0.0 && percentile < 100.0 => RuleKind::LatencyPercentile {
                percentile,
                min_samples: rule.min_samples.unwrap_or(100),
                window: optional_duration(format!("{at}.window"), &rule.window, Duration::from_secs(300), problems),
            },
            (None, Some(p)) => {
                problems.add(format!("{at}.percentile"), format!("must be between 0 and 100, got {p}"));
                return None;
            }
            _ => {
                problems.add(at, "a latency rule takes either threshold (e.g. 500ms) or percentile (e.g. 99)");
                return None;
            }
        },
        "attribute" => {
            let key = problems.required(format!("{at}.key"), &rule.key)?.to_string();
            let scope = match rule.scope.as_deref() {
                None | Some("any") => AttributeScope::AnySpan,
                Some("root") => AttributeScope::Root,
                Some(other) => {
                    problems.add(format!("{at}.scope"), format!("`{other}` is not `any` or `root`"));
                    return None;
                }
            };
            let given = [rule.equals.is_some(), rule.regex.is_some(), rule.min.is_some() || rule.max.is_some(), rule.bool.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                problems.add(at, "an attribute rule takes exactly one of equals, regex, min/max, bool");
                return None;
            }
            let matcher = if let Some(value) = &rule.equals {
                Matcher::Equals(scalar_text(value).unwrap_or_default())
            } else if let Some(pattern) = &rule.regex {
                match regex::Regex::new(pattern) {
                    Ok(re) => Matcher::Regex(re),
                    Err(e) => {
                        problems.add(format!("{at}.regex"), format!("invalid regex: {e}"));
                        return None;
                    }
                }
            } else if let Some(b) = rule.bool {
                Matcher::Bool(b)
            } else {
                if let (Some(min), Some(max)) = (rule.min, rule.max) {
                    if min > max {
                        problems.add(at, format!("min ({min}) is above max ({max})"));
                        return None;
                    }
                }
                Matcher::Range { min: rule.min, max: rule.max }
            };
            RuleKind::Attribute { key, matcher, scope }
        }
        "span_count" => {
            let count = |field: &str, value: Option<f64>, problems: &mut Collector| match value {
                Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => Some(Some(v as u32)),
                Some(v) => {
                    problems.add(format!("{at}.{field}"), format!("must be a whole number of spans, got {v}"));
                    None
                }
                None => Some(None),
            };
            let (min, max) = (count("min", rule.min, problems)?, count("max", rule.max, problems)?);
            if min.is_none() && max.is_none() {
                problems.add(at, "a span_count rule takes min, max or both");
                return None;
            }
            RuleKind::SpanCount { min: min.unwrap_or(0), max }
        }
        "rare_structure" => RuleKind::RareStructure {
            window: optional_duration(format!("{at}.window"), &rule.window, Duration::from_secs(600), problems),
            max_shapes: rule.max_shapes.unwrap_or(100_000).max(1),
        },
        "probabilistic" => RuleKind::Probabilistic { rate: fraction("rate", rule.rate, problems)? },
        "rate_limit" => RuleKind::RateLimit { per_second: positive("per_second", rule.per_second, problems)? },
        "dynamic" => {
            let goal_sample_rate = bounded("goal_sample_rate", rule.goal_sample_rate, |goal| goal >= 1.0 && goal.is_finite(), "1 or more (keep 1 in N traces)", problems);
            let weight = match rule.weight {
                None => Some(0.5),
                Some(w) if w > 0.0 && w <= 1.0 => Some(w),
                Some(w) => {
                    problems.add(format!("{at}.weight"), format!("must be above 0 and at most 1, got {w}"));
                    None
                }
            };
            let adjustment_interval = optional_duration(format!("{at}.adjustment_interval"), &rule.adjustment_interval, Duration::from_secs(15), problems);
            RuleKind::Dynamic { goal_sample_rate: goal_sample_rate?, weight: weight?, adjustment_interval }
        }
        "and" => {
            if rule.rules.is_empty() {
                problems.add(format!("{at}.rules"), "an and rule needs member rules");
                return None;
            }
            let members: Vec<Option<RuleKind>> = rule.rules.iter().enumerate().map(|(j, member)| validate_rule(&format!("{at}.rules[{j}]"), member, problems)).collect();
            let last = members.len() - 1;
            for (j, member) in members.iter().enumerate() {
                if j < last && member.as_ref().is_some_and(|kind| !kind.is_condition()) {
                    problems.add(format!("{at}.rules[{j}]"), "only the last member of an and rule may decide (drop, probabilistic, rate_limit, dynamic); the others are conditions");
                }
            }
            RuleKind::And(members.into_iter().collect::<Option<Vec<_>>>()?)
        }
        other => {
            problems.add(format!("{at}.type"), format!("unknown rule type `{other}` (expected one of {RULE_TYPES})"));
            return None;
        }
    })
}

fn topic_ref(path: String, topic: &Option<String>, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<String> {
    let name = problems.required(path.clone(), topic)?;
    if !topics.contains_key(name) {
        problems.add(path, format!("topic `{name}` is not declared under topics"));
        return None;
    }
    Some(name.to_string())
}

fn validate_router(path: &str, raw: RawRouter, topics: &BTreeMap<String, TopicSpec>, problems: &mut Collector) -> Option<RouterSpec> {
    problems.unknown(path, &raw.unknown, &["group", "inputs", "output", "dlq", "max_message_bytes", "commit_interval", "max_in_flight"]);
    let group = problems.required(format!("{path}.group"), &raw.group).map(str::to_string);
    if raw.inputs.is_empty() {
        problems.add(format!("{path}.inputs"), "needs at least one input topic");
    }
    let mut inputs = Vec::new();
    for (i, input) in raw.inputs.iter().enumerate() {
        let at = format!("{path}.inputs[{i}]");
        problems.unknown(&at, &input.unknown, &["topic", "encoding"]);
        let topic = topic_ref(format!("{at}.topic"), &input.topic, topics, problems);
        let encoding = problems.required(format!("{at}.encoding"), &input.encoding).and_then(|e| {
            e.parse::<Encoding>().map_err(|message| problems.add(format!("{at}.encoding"), message)).ok()
        });
        if let (Some(topic), Some(encoding)) = (topic, encoding) {
            if inputs.iter().any(|(t, _): &(String, Encoding)| *t == topic) {
                problems.add(format!("{at}.topic"), format!("topic `{topic}` is listed twice"));
            }
            inputs.push((topic, encoding));
        }
    }
    let output = topic_ref(format!("{path}.output"), &raw.output, topics, problems);
    let dlq = topic_ref(format!("{path}.dlq"), &raw.dlq, topics, problems);
    let max_message_bytes = optional_size(format!("{path}.max_message_bytes"), &raw.max_message_bytes, 1..=usize::MAX, "a size like 16MiB or 1000000", problems).unwrap_or(16 << 20);
    let commit_interval = optional_duration(format!("{path}.commit_interval"), &raw.commit_interval, Duration::from_secs(1), problems);
    let max_in_flight = bounded(format!("{path}.max_in_flight"), raw.max_in_flight, 50_000, 1..=10_000_000, problems) as usize;
    Some(RouterSpec {
        group: group?,
        inputs,
        output: output?,
        dlq: dlq?,
        max_message_bytes,
        commit_interval,
        max_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_topology_is_valid() {
        let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        let router = topology.router.unwrap();
        assert_eq!(router.inputs[0], ("otlp_spans".to_string(), Encoding::OtlpProto));
        assert_eq!(router.max_message_bytes, 16 << 20);
        assert_eq!(topology.topics["tracepipe.dlq"].retention, Some(Duration::from_secs(7 * 86400)));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = DEFAULT_TOPOLOGY
            .replace("tracepipe.spans:   { partitions: 12", "tracepipe.spans:   { partitions: 0")
            .replace("encoding: zipkin_json", "encoding: zipkin_thrift")
            .replace("    max_in_flight: 50000", "    max_in_flight: 50000\n    batch_size: 10")
            .replace("output: tracepipe.spans\n    dlq", "output: tracepipe.span\n    dlq");
        let problems = Topology::from_yaml(&text).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["topics.tracepipe.spans.partitions", "processors.router.batch_size", "processors.router.inputs[2].encoding", "processors.router.output"],
            "{problems:?}"
        );
        assert!(problems[2].message.contains("unknown encoding `zipkin_thrift`"));
    }

    #[test]
    fn unreadable_yaml_is_one_error_with_a_line() {
        let problems = Topology::from_yaml("kafka: [1, 2\n").unwrap_err().0;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("line"), "{}", problems[0].message);
        assert!(Topology::from_yaml("processors:\n  indexer: {}\n").unwrap_err().0.iter().any(|p| p.message.contains("unknown processor")));
    }

    #[test]
    fn analysis_settings_are_checked() {
        let text = DEFAULT_TOPOLOGY
            .replace("      min_ratio: 1.5\n", "      min_ratio: 0.5\n      sensitivty: 3\n")
            .replace("    output: tracepipe.edges\n    alerts: tracepipe.alerts\n    dlq: tracepipe.dlq\n    window: 1m\n", "    output: tracepipe.edges\n    alerts: tracepipe.alerts\n    dlq: tracepipe.dlq\n    window: 1500ms\n")
            .replace("    output: tracepipe.rollups\n    alerts: tracepipe.alerts\n", "    output: tracepipe.rollups\n    alerts: tracepipe.alarms\n");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        for expected in [
            "processors.analyzer.alerts: ",
            "processors.analyzer.detection.min_ratio: must be between 1 and 100, got 0.5",
            "processors.analyzer.detection.sensitivty: unknown key",
            "processors.dependencies.window: must be a whole number of seconds",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(expected)), "{expected} not in {messages:#?}");
        }
    }

    #[test]
    fn gateway_settings_are_checked() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().gateway.unwrap();
        assert_eq!(shipped.config.grpc_listen, Some("127.0.0.1:4317".parse().unwrap()));
        assert_eq!(shipped.config.max_request_bytes, 16 << 20);
        let text = DEFAULT_TOPOLOGY
            .replace("grpc_listen: 127.0.0.1:4317", "grpc_listen: localhost")
            .replace("max_request_bytes: 16MiB", "max_request_bytes: lots\n    max_body: 1MiB")
            .replace("max_in_flight_bytes: 256MiB", "max_in_flight_bytes: 1MiB")
            .replace("ack_timeout: 5s", "ack_timeout: 0s");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        for expected in [
            "processors.gateway.grpc_listen: `localhost` is not an address",
            "processors.gateway.max_request_bytes: must be a size",
            "processors.gateway.max_body: unknown key",
            "processors.gateway.max_in_flight_bytes: must be at least max_request_bytes",
            "processors.gateway.ack_timeout: must be longer than zero",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(expected)), "{expected} not in {messages:#?}");
        }
        let both_off = DEFAULT_TOPOLOGY.replace("grpc_listen: 127.0.0.1:4317", "grpc_listen: off").replace("http_listen: 127.0.0.1:4318", "http_listen: off");
        let messages: Vec<String> = Topology::from_yaml(&both_off).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.contains("both off")), "{messages:#?}");
    }

    #[test]
    fn adaptive_sampling_settings_are_checked() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().query.unwrap().adaptive_sampling;
        assert_eq!((shipped.target_traces_per_second, shipped.lookback), (1.0, Duration::from_secs(300)));
        let text = DEFAULT_TOPOLOGY
            .replace("target_traces_per_second: 1\n", "target_traces_per_second: -2\n      targets: 3\n")
            .replace("lookback: 5m", "lookback: 0s")
            .replace("default_probability: 1\n", "default_probability: 1.5\n");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        for expected in [
            "processors.query.adaptive_sampling.targets: unknown key",
            "processors.query.adaptive_sampling.target_traces_per_second: must be a number of traces per second above zero, got -2",
            "processors.query.adaptive_sampling.lookback: must be longer than zero",
            "processors.query.adaptive_sampling.default_probability: must be between 0 and 1, got 1.5",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(expected)), "{expected} not in {messages:#?}");
        }
        let floor_above = DEFAULT_TOPOLOGY.replace("min_traces_per_second: 0.0167", "min_traces_per_second: 2");
        let messages: Vec<String> = Topology::from_yaml(&floor_above).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.contains("must not exceed target_traces_per_second")), "{messages:#?}");
    }

    #[test]
    fn sampler_rules_are_checked() {
        let text = DEFAULT_TOPOLOGY
            .replace("type: probabilistic, rate: 0.05", "type: probabilistic, rate: 5")
            .replace("{ name: errors, type: errors }", "{ name: errors, type: erors }")
            .replace("threshold: 1s", "threshold: 1s, percentile: 99")
            .replace("grace: 2s", "grace: 20s");
        let problems = Topology::from_yaml(&text).unwrap_err().0;
        let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{messages:#?}");
        assert!(messages[0].starts_with("processors.assembler.grace: must be shorter than idle_timeout"));
        assert!(messages[1].starts_with("processors.sampler.rules[0].type: unknown rule type `erors`"));
        assert!(messages[2].starts_with("processors.sampler.rules[1]: a latency rule takes either threshold"));
        assert!(messages[3].starts_with("processors.sampler.rules[4].rate: must be between 0 and 1, got 5"));
        let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(topology.sampler.unwrap().config.rules.len(), 5);
        assert_eq!(topology.assembler.unwrap().config.memory_budget_bytes, 256 << 20);
    }

    #[test]
    fn sampler_rule_shapes_are_checked() {
        let rules = "    rules:
      - { name: a, type: and, rules: [ { type: probabilistic, rate: 0.5 }, { type: errors } ] }
      - { name: b, type: span_count, min: 10, max: 2.5 }
      - { name: c, type: span_count }
      - { name: d, type: attribute, key: http.status_code, min: 599, max: 500 }
      - { name: e, type: dynamic, goal_sample_rate: 0.5, weight: 2 }
      - { name: f, type: dynamic, goal_sample_rate: 20, weight: 0.25 }
      - { name: g, type: and, rules: [ { type: and, rules: [ { type: errors }, { type: probabilistic, rate: 0.5 } ] }, { type: errors } ] }
";
        let start = DEFAULT_TOPOLOGY.find("    rules:\n").unwrap();
        let end = start + DEFAULT_TOPOLOGY[start..].find("\n\n").unwrap() + 1;
        let text = format!("{}{rules}{}", &DEFAULT_TOPOLOGY[..start], &DEFAULT_TOPOLOGY[end..]);
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        let expected = [
            "processors.sampler.rules[0].rules[0]: only the last member of an and rule may decide",
            "processors.sampler.rules[1].max: must be a whole number of spans, got 2.5",
            "processors.sampler.rules[2]: a span_count rule takes min, max or both",
            "processors.sampler.rules[3]: min (599) is above max (500)",
            "processors.sampler.rules[4].goal_sample_rate: must be 1 or more (keep 1 in N traces), got 0.5",
            "processors.sampler.rules[4].weight: must be above 0 and at most 1, got 2",
            "processors.sampler.rules[6].rules[0]: only the last member of an and rule may decide",
        ];
        assert_eq!(messages.len(), expected.len(), "{messages:#?}");
        for (message, expected) in messages.iter().zip(expected) {
            assert!(message.starts_with(expected), "{message:?} should start with {expected:?}");
        }
    }

    #[test]
    fn one_trace_fits_in_a_sixteenth_of_the_assembler_budget() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().assembler.unwrap();
        assert_eq!(shipped.config.max_trace_bytes, 8 << 20);
        // Unset, it follows a smaller budget down.
        let small = DEFAULT_TOPOLOGY.replace("memory_budget: 256MiB", "memory_budget: 32MiB");
        assert_eq!(Topology::from_yaml(&small).unwrap().assembler.unwrap().config.max_trace_bytes, 2 << 20);
        // Set above a sixteenth, it is a problem.
        let text = small.replace("    memory_budget: 32MiB", "    memory_budget: 32MiB\n    max_trace_bytes: 4MiB");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().0.iter().map(|p| p.to_string()).collect();
        assert_eq!(messages.len(), 1, "{messages:#?}");
        assert!(messages[0].starts_with("processors.assembler.max_trace_bytes: must be at most a sixteenth of memory_budget"), "{}", messages[0]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("16MiB"), Some(16 << 20));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }
}
