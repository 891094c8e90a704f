//! topology.yaml: the sections every process shares (Kafka, the admin server, topics, storage),
//! and the processors' sections, each validated by its processor's crate through the
//! [`registry`](crate::registry). [`Topology::from_yaml`] reports every problem at once with its
//! path in the file.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_processor::config::{positive, read, scalar_text, within, ConsumerSpec, Problems, Section};
use tracepipe_runtime::{KafkaSettings, OutputId, PipelineSettings};
use tracepipe_store::StorageSpec;

use crate::registry::{ProcessorSpec, PROCESSORS};

/// The topology tracepipe ships with; `tracepipe up` uses it unless given another file.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.yaml");

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    version: Option<u32>,
    #[serde(default)]
    kafka: RawKafka,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    topics: BTreeMap<String, RawTopic>,
    #[serde(default)]
    storage: Option<Value>,
    /// Service-level objectives (`tracepipe_analytics::slo`).
    #[serde(default)]
    slos: Option<Value>,
    /// Business transactions and funnels (`tracepipe_analytics::transactions`).
    #[serde(default)]
    transactions: Option<Value>,
    #[serde(default)]
    funnels: Option<Value>,
    #[serde(default)]
    self_tracing: Option<RawSelfTracing>,
    /// Read by each processor's entry in the registry.
    #[serde(default)]
    processors: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<String>,
    #[serde(default)]
    client: BTreeMap<String, Value>,
    #[serde(default)]
    consumer: BTreeMap<String, Value>,
    #[serde(default)]
    producer: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    partitions: Option<i64>,
    replication: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    #[serde(default)]
    config: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSelfTracing {
    enabled: Option<bool>,
    ratio: Option<f64>,
    topic: Option<String>,
}

/// tracepipe's own spans (`tracepipe_runtime::self_trace`): where they go and what share of the
/// records entering the pipeline is followed through it.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTracing {
    pub enabled: bool,
    pub ratio: f64,
    pub topic: String,
}

const DEFAULT_SELF_TRACING_RATIO: f64 = 0.01;

fn self_tracing(raw: Option<RawSelfTracing>, declared: &BTreeSet<String>, problems: &mut Problems) -> SelfTracing {
    let raw = raw.unwrap_or_default();
    let ratio = raw.ratio.unwrap_or(DEFAULT_SELF_TRACING_RATIO);
    if !(ratio > 0.0 && ratio <= 1.0) {
        problems.add("self_tracing.ratio", format!("must be more than 0 and at most 1 (a share of records), got {ratio}"));
    }
    let topic = raw.topic.unwrap_or_else(|| "otlp_spans".into());
    let enabled = raw.enabled.unwrap_or(false);
    if enabled && !declared.contains(&topic) {
        problems.add("self_tracing.topic", format!("`{topic}` is not a topic under topics:"));
    }
    SelfTracing { enabled, ratio, topic }
}

/// topology.yaml, validated.
#[derive(Debug)]
pub struct Topology {
    pub kafka: KafkaSettings,
    pub admin_listen: SocketAddr,
    pub topics: BTreeMap<String, TopicSpec>,
    pub storage: StorageSpec,
    /// The SLOs the analyzer counts events for and the SLO evaluator tracks.
    pub slos: std::sync::Arc<[tracepipe_analytics::slo::SloSpec]>,
    /// The business transactions the analyzer counts.
    pub transactions: std::sync::Arc<[tracepipe_analytics::transactions::TransactionSpec]>,
    /// The funnels whose steps the analyzer publishes and the funnels processor joins.
    pub funnels: std::sync::Arc<[tracepipe_analytics::transactions::FunnelSpec]>,
    pub self_tracing: SelfTracing,
    /// The configured processors, in the registry's order.
    processors: Vec<(&'static str, Box<dyn ProcessorSpec>)>,
}

/// Funnel steps reach the funnels processor only through the topic the analyzer publishes them to.
/// The configured processor of type `S`, if its section is present.
fn spec_of<'a, S: ProcessorSpec>(processors: &'a [(&'static str, Box<dyn ProcessorSpec>)]) -> Option<&'a S> {
    processors.iter().find_map(|(_, spec)| (spec.as_ref() as &dyn Any).downcast_ref::<S>())
}

fn check_funnel_topics(funnels: &[tracepipe_analytics::transactions::FunnelSpec], processors: &[(&'static str, Box<dyn ProcessorSpec>)], problems: &mut Problems) {
    let analyzer = spec_of::<tracepipe_analyzer::config::AnalyzerSpec>(processors);
    let joiner = spec_of::<tracepipe_funnels::config::FunnelsSpec>(processors);
    if let (false, Some(analyzer)) = (funnels.is_empty(), analyzer) {
        if analyzer.funnel_steps.is_none() {
            problems.add("processors.analyzer.funnel_steps", "is required when funnels: are defined: the topic the analyzer publishes funnel steps to (e.g. tracepipe.funnel-steps)");
        }
    }
    if let (Some(analyzer), Some(joiner)) = (analyzer, joiner) {
        if analyzer.funnel_steps.as_deref() != Some(joiner.input.as_str()) {
            problems.add("processors.funnels.input", format!("`{}` is not where the analyzer publishes funnel steps (processors.analyzer.funnel_steps: {})", joiner.input, analyzer.funnel_steps.as_deref().unwrap_or("not set")));
        }
    }
}

/// tracepipe's own spans are OTLP requests: a topic the router reads them from as `otlp_proto`,
/// or one it does not read (for a Collector or another backend), never one holding other records.
fn check_self_tracing_topic(self_tracing: &SelfTracing, processors: &[(&'static str, Box<dyn ProcessorSpec>)], problems: &mut Problems) {
    if !self_tracing.enabled {
        return;
    }
    let topic = self_tracing.topic.as_str();
    let router = spec_of::<tracepipe_router::config::RouterSpec>(processors);
    let assembler = spec_of::<tracepipe_assembler::config::AssemblerSpec>(processors);
    if let Some((_, encoding)) = router.and_then(|router| router.inputs.iter().find(|(input, _)| input == topic)) {
        if *encoding != tracepipe_schemas::Encoding::OtlpProto {
            problems.add("self_tracing.topic", format!("`{topic}` is read by the router as {encoding}, but tracepipe's own spans are OTLP protobuf: an otlp_proto input, or a topic the router does not read"));
        }
        return;
    }
    let internal = router.map(|r| r.output.as_str()).into_iter().chain(assembler.iter().flat_map(|a| [a.input.as_str(), a.output.as_str()]));
    if internal.into_iter().any(|t| t == topic) {
        problems.add("self_tracing.topic", format!("`{topic}` holds tracepipe's span or trace records, not OTLP requests: an otlp_proto input of the router, or a topic the router does not read"));
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication: i32,
    pub retention: Option<Duration>,
    pub config: BTreeMap<String, String>,
}

fn settings_map(path: &str, raw: &BTreeMap<String, Value>, problems: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let at = format!("{path}.{key}");
        let text = match value {
            Value::Mapping(_) => secret(&at, value, problems),
            _ => scalar_text(value).or_else(|| {
                problems.add(at.as_str(), "must be a string, number or boolean, or { env: NAME } or { file: PATH }");
                None
            }),
        };
        if let Some(text) = text {
            out.insert(key.clone(), text);
        }
    }
    out
}

/// A librdkafka property whose value is kept out of topology.yaml: `{ env: NAME }` reads an
/// environment variable, `{ file: PATH }` a file (a mounted Kubernetes Secret, say), without its
/// trailing newline.
fn secret(at: &str, value: &Value, problems: &mut Problems) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reference {
        env: Option<String>,
        file: Option<PathBuf>,
    }
    enum Source {
        Env(String),
        File(PathBuf),
    }
    let source = match serde_yaml_ng::from_value::<Reference>(value.clone()) {
        Ok(Reference { env: Some(name), file: None }) => Source::Env(name),
        Ok(Reference { env: None, file: Some(path) }) => Source::File(path),
        _ => {
            problems.add(at, "a value given as a map must be { env: NAME } or { file: PATH }");
            return None;
        }
    };
    match source {
        Source::Env(name) => match std::env::var(&name) {
            Ok(text) => Some(text),
            Err(_) => {
                problems.add(at, format!("environment variable {name} is not set (or not UTF-8)"));
                None
            }
        },
        Source::File(path) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
            Err(error) => {
                problems.add(at, format!("cannot read {}: {error}", path.display()));
                None
            }
        },
    }
}

impl Topology {
    /// Parses and validates. A file that is not YAML yields that one error with its line;
    /// otherwise every problem is reported together, in file order.
    pub fn from_yaml(text: &str) -> Result<Topology, Problems> {
        let mut problems = Problems::default();
        let value: Value = match serde_yaml_ng::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(value) => value,
            Err(e) => {
                problems.add("", e.to_string());
                return Err(problems);
            }
        };
        let Some(raw) = read::<RawTopology>("", value, &mut problems) else {
            return Err(problems);
        };
        if let Some(version) = raw.version {
            if version != 1 {
                problems.add("version", format!("unsupported version {version}, this build reads version 1"));
            }
        }

        let brokers = tracepipe_processor::config::required("kafka.brokers".into(), &raw.kafka.brokers, &mut problems).unwrap_or_default();
        let kafka = KafkaSettings {
            brokers,
            client: settings_map("kafka.client", &raw.kafka.client, &mut problems),
            consumer: settings_map("kafka.consumer", &raw.kafka.consumer, &mut problems),
            producer: settings_map("kafka.producer", &raw.kafka.producer, &mut problems),
        };

        let listen = raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let admin_listen = listen.parse().unwrap_or_else(|_| {
            problems.add("admin.listen", format!("`{listen}` is not an address like {DEFAULT_ADMIN_LISTEN}"));
            DEFAULT_ADMIN_LISTEN.parse().expect("an address")
        });

        let mut topics = BTreeMap::new();
        for (name, raw_topic) in &raw.topics {
            let path = format!("topics.{name}");
            if name.is_empty() || name.len() > 249 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.add(&path, "topic names are 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'");
            }
            let partitions = within(format!("{path}.partitions"), raw_topic.partitions, 1, 1..=10_000, &mut problems);
            let replication = within(format!("{path}.replication"), raw_topic.replication, 1, 1..=32, &mut problems);
            let retention = raw_topic.retention.map(|r| positive(format!("{path}.retention"), Some(r), r, &mut problems));
            let config = settings_map(&format!("{path}.config"), &raw_topic.config, &mut problems);
            topics.insert(name.clone(), TopicSpec { partitions: partitions as i32, replication: replication as i32, retention, config });
        }
        let declared: BTreeSet<String> = topics.keys().cloned().collect();

        let self_tracing = self_tracing(raw.self_tracing, &declared, &mut problems);
        let storage = match raw.storage {
            Some(value) => Section::new("storage", &declared).parse::<StorageSpec>(value, &mut problems).unwrap_or_default(),
            None => StorageSpec::default(),
        };

        let slos: std::sync::Arc<[tracepipe_analytics::slo::SloSpec]> = tracepipe_analytics::slo::validate_slos("slos", raw.slos, &mut problems).into();
        for (index, slo) in slos.iter().enumerate() {
            let kept = storage.retention.rollups;
            if slo.longest_window() > kept {
                problems.add(
                    format!("slos[{index}].window"),
                    format!(
                        "`{}` spans {} but storage.retention.rollups keeps {}: the oldest events would be deleted before the window is done with them",
                        slo.name,
                        humantime::format_duration(slo.longest_window()),
                        humantime::format_duration(kept)
                    ),
                );
            }
        }

        let transactions: std::sync::Arc<[_]> = tracepipe_analytics::transactions::validate_transactions("transactions", raw.transactions, &mut problems).into();
        let funnels: std::sync::Arc<[_]> = tracepipe_analytics::transactions::validate_funnels("funnels", raw.funnels, &mut problems).into();

        let mut processors = Vec::new();
        for (name, section) in raw.processors {
            let path = format!("processors.{name}");
            match PROCESSORS.iter().find(|entry| entry.name == name) {
                Some(entry) => {
                    if let Some(spec) = (entry.configure)(&Section::new(&path, &declared), section, &mut problems) {
                        processors.push((entry.name, spec));
                    }
                }
                None => {
                    let names: Vec<&str> = PROCESSORS.iter().map(|entry| entry.name).collect();
                    problems.add(path, format!("unknown processor `{name}` (this build has: {})", names.join(", ")));
                }
            }
        }
        processors.sort_by_key(|(name, _)| PROCESSORS.iter().position(|entry| entry.name == *name));
        check_funnel_topics(&funnels, &processors, &mut problems);
        check_self_tracing_topic(&self_tracing, &processors, &mut problems);

        if problems.is_empty() {
            Ok(Topology { kafka, admin_listen, topics, storage, slos, transactions, funnels, self_tracing, processors })
        } else {
            Err(problems)
        }
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Topology::from_yaml(&text).map_err(|problems| anyhow::anyhow!("{} is invalid:\n{problems}", path.display()))
    }

    /// The names of the configured processors, in the registry's order.
    pub fn configured(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.processors.iter().map(|(name, _)| *name)
    }

    /// The configured processor `name`.
    pub fn processor_named(&self, name: &str) -> Option<&dyn ProcessorSpec> {
        self.processors.iter().find(|(n, _)| *n == name).map(|(_, spec)| spec.as_ref())
    }

    /// The configured processor whose section validates into `S`, e.g. `RouterSpec`.
    pub fn processor<S: ProcessorSpec>(&self) -> Option<&S> {
        spec_of(&self.processors)
    }

    /// Same, to change it (command-line overrides).
    pub fn processor_mut<S: ProcessorSpec>(&mut self) -> Option<&mut S> {
        self.processors.iter_mut().find_map(|(_, spec)| (spec.as_mut() as &mut dyn Any).downcast_mut::<S>())
    }

    /// The pipeline settings of a processor that consumes `inputs` as `consumer`; its outputs are
    /// bound by name with [`PipelineOutputs::bind`].
    pub fn pipeline(&self, consumer: &ConsumerSpec, inputs: Vec<String>) -> PipelineOutputs {
        let mut settings = PipelineSettings::new(self.kafka.clone(), &consumer.group, inputs, Vec::new(), &consumer.dlq);
        settings.commit_interval = consumer.commit_interval;
        settings.max_in_flight = consumer.max_in_flight;
        settings.self_trace = self.self_trace(false);
        PipelineOutputs(settings)
    }

    /// What a processor's own tracing needs when `self_tracing` is on; an `entry` chooses the
    /// records followed, the others follow them.
    pub fn self_trace(&self, entry: bool) -> Option<tracepipe_runtime::self_trace::SelfTraceSettings> {
        let tracing = &self.self_tracing;
        tracing.enabled.then(|| tracepipe_runtime::self_trace::SelfTraceSettings { topic: tracing.topic.clone(), ratio: tracing.ratio, entry })
    }
}

/// Pipeline settings whose output topics are being bound to the processor's named outputs.
pub struct PipelineOutputs(pub PipelineSettings);

impl PipelineOutputs {
    /// Adds `topic` as an output and returns the id the processor emits it under.
    pub fn bind(&mut self, topic: &str) -> OutputId {
        self.0.outputs.push(topic.to_string());
        OutputId(u16::try_from(self.0.outputs.len() - 1).expect("fewer than 65536 outputs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracepipe_assembler::config::AssemblerSpec;
    use tracepipe_gateway::config::GatewaySpec;
    use tracepipe_query::config::QuerySpec;
    use tracepipe_router::config::RouterSpec;
    use tracepipe_sampler::config::SamplerSpec;
    use tracepipe_schemas::Encoding;

    #[test]
    fn the_shipped_topology_is_valid() {
        let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        let router = topology.processor::<RouterSpec>().unwrap();
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
        let problems = Topology::from_yaml(&text).unwrap_err().into_vec();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["topics.tracepipe.spans.partitions", "processors.router.batch_size", "processors.router.inputs[2].encoding", "processors.router.output"],
            "{problems:?}"
        );
        assert!(problems[2].message.contains("unknown encoding `zipkin_thrift`"));
    }

    /// A secret kept out of topology.yaml: from an environment variable or a file (its trailing
    /// newline dropped, as a mounted Secret has one); what cannot be read is a problem at its path.
    #[test]
    fn trends_cohorts_and_retention_problems_have_paths() {
        let text = DEFAULT_TOPOLOGY
            .replace("      evaluations: 30\n", "      evaluations: 0\n")
            .replace("      alpha: 0.01\n      min_effect: 0.05\n", "      alpha: 0.9\n      min_effect: 0.05\n")
            .replace("{ service: checkout, operation: \"POST /orders\", metric: p99, above: 1000, horizon: 30m, history: 6h }", "{ service: checkout, operation: \"POST /orders\", metric: p42, above: -1, horizon: 2h, history: 1h }")
            .replace("  analyzer:\n", "  analyzer:\n    cohorts: { attributes: [service.version, service.version, feature_flag.x], max_values: 0 }\n");
        let text = text.replacen("    rollups: 30d\n", "    rollups: 1h\n    rollups_5m: 10m\n", 1);
        assert_ne!(text, DEFAULT_TOPOLOGY);
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        for expected in [
            "processors.trends.canary.evaluations",
            "processors.trends.canary.alpha",
            "storage.retention.rollups_5m: must be at least retention.rollups",
            "storage.retention.rollups: must be at least 2h",
            "processors.analyzer.cohorts.attributes[1]: service.version is listed twice",
            "processors.analyzer.cohorts.attributes[2]: feature flags are split by `feature_flags: true`",
            "processors.analyzer.cohorts.max_values",
            "processors.trends.forecasts[0].metric: must be p50, p90, p99 or error_ratio",
            "processors.trends.forecasts[0].above",
            "processors.trends.forecasts[0].history: must be at least the horizon",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(expected)), "`{expected}` in {messages:#?}");
        }
    }

    #[test]
    fn kafka_secrets_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let home = std::env::var("HOME").unwrap();
        let text = DEFAULT_TOPOLOGY.replace(
            "  client: {}",
            &format!("  client:\n    sasl.password: {{ file: {} }}\n    sasl.username: {{ env: HOME }}\n    ssl.key.password: {{ env: TRACEPIPE_TEST_UNSET_VARIABLE }}\n    ssl.keystore.password: {{ file: /nonexistent/secret }}\n    sasl.oauthbearer.client.secret: {{ vault: kafka }}", file.display()),
        );
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("kafka.client.sasl.oauthbearer.client.secret: a value given as a map must be { env: NAME } or { file: PATH }"), "{messages:?}");
        assert!(messages[1].starts_with("kafka.client.ssl.key.password: environment variable TRACEPIPE_TEST_UNSET_VARIABLE is not set"), "{messages:?}");
        assert!(messages[2].starts_with("kafka.client.ssl.keystore.password: cannot read /nonexistent/secret"), "{messages:?}");
        let text = DEFAULT_TOPOLOGY.replace("  client: {}", &format!("  client:\n    sasl.password: {{ file: {} }}\n    sasl.username: {{ env: HOME }}", file.display()));
        let topology = Topology::from_yaml(&text).unwrap();
        assert_eq!(topology.kafka.client.get("sasl.password").map(String::as_str), Some("s3cret"));
        assert_eq!(topology.kafka.client.get("sasl.username"), Some(&home));
    }

    #[test]
    fn slo_problems_have_paths_and_a_window_must_fit_the_rollup_retention() {
        let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(topology.slos.len(), 3);
        assert_eq!(topology.slos[0].name, "checkout-availability");
        let text = DEFAULT_TOPOLOGY.replace("    window: 28d         # calendar_month", "    window: calendar_month  #").replace("objective: 97.5", "objective: 101");
        let problems: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.starts_with("slos[0].objective: must be a percentage above 0 and below 100, got 101")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("`order-placed-availability` spans 1month") && p.contains("storage.retention.rollups keeps 30days")), "{problems:#?}");
    }

    #[test]
    fn unreadable_yaml_is_one_error_with_a_line() {
        let problems = Topology::from_yaml("kafka: [1, 2\n").unwrap_err().into_vec();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("line"), "{}", problems[0].message);
        assert!(Topology::from_yaml("processors:\n  indexer: {}\n").unwrap_err().into_vec().iter().any(|p| p.message.contains("unknown processor")));
    }

    #[test]
    fn analysis_settings_are_checked() {
        let text = DEFAULT_TOPOLOGY
            .replace("      min_ratio: 1.5\n", "      min_ratio: 0.5\n      sensitivty: 3\n")
            .replace("    output: tracepipe.edges\n    alerts: tracepipe.alerts\n    dlq: tracepipe.dlq\n    window: 1m\n", "    output: tracepipe.edges\n    alerts: tracepipe.alerts\n    dlq: tracepipe.dlq\n    window: 1500ms\n")
            .replace("    output: tracepipe.rollups\n    alerts: tracepipe.alerts\n", "    output: tracepipe.rollups\n    alerts: tracepipe.alarms\n");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
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
    fn funnel_steps_need_a_topic_the_funnels_processor_reads() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        assert_eq!((shipped.transactions.len(), shipped.funnels.len()), (2, 1));
        let unset = DEFAULT_TOPOLOGY.replace("    funnel_steps: tracepipe.funnel-steps\n", "");
        let messages: Vec<String> = Topology::from_yaml(&unset).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.starts_with("processors.analyzer.funnel_steps: is required when funnels: are defined")), "{messages:#?}");
        assert!(messages.iter().any(|m| m.starts_with("processors.funnels.input: `tracepipe.funnel-steps` is not where the analyzer publishes funnel steps")), "{messages:#?}");
        let wrong = DEFAULT_TOPOLOGY.replace("    join_window: 2m", "    join_window: 30 parsecs").replace("split_by: { attribute: order.type, max_values: 10 }", "split_by: { attribute: order.type, max_values: 0 }");
        let messages: Vec<String> = Topology::from_yaml(&wrong).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.starts_with("funnels[0].join_window")), "{messages:#?}");
        assert!(messages.iter().any(|m| m.starts_with("transactions[0].split_by.max_values: must be between 1 and 10000, got 0")), "{messages:#?}");
    }

    #[test]
    fn gateway_settings_are_checked() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().processor::<GatewaySpec>().unwrap().clone();
        assert_eq!(shipped.config.grpc_listen, Some("127.0.0.1:4317".parse().unwrap()));
        assert_eq!(shipped.config.max_request_bytes, 16 << 20);
        let text = DEFAULT_TOPOLOGY
            .replace("grpc_listen: 127.0.0.1:4317", "grpc_listen: localhost")
            .replace("max_request_bytes: 16MiB", "max_request_bytes: lots\n    max_body: 1MiB")
            .replace("max_in_flight_bytes: 256MiB", "max_in_flight_bytes: 1MiB")
            .replace("ack_timeout: 5s", "ack_timeout: 0s");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
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
        let messages: Vec<String> = Topology::from_yaml(&both_off).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.contains("both off")), "{messages:#?}");
    }

    #[test]
    fn tracepipes_own_spans_go_where_otlp_requests_are_read() {
        let enabled = DEFAULT_TOPOLOGY.replace("  enabled: false ", "  enabled: true ");
        assert!(Topology::from_yaml(&enabled).unwrap().self_tracing.enabled);
        for (topic, expected) in [("jaeger-spans", "is read by the router as jaeger_proto"), ("tracepipe.spans", "holds tracepipe's span or trace records"), ("tracepipe.traces", "holds tracepipe's span or trace records")] {
            let text = enabled.replace("  topic: otlp_spans", &format!("  topic: {topic}"));
            let problems = Topology::from_yaml(&text).unwrap_err().into_vec();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "self_tracing.topic");
            assert!(problems[0].message.contains(expected), "{topic}: {}", problems[0].message);
        }
        // Off, the topic is not checked.
        assert!(Topology::from_yaml(&DEFAULT_TOPOLOGY.replace("  topic: otlp_spans", "  topic: tracepipe.spans")).is_ok());
    }

    #[test]
    fn adaptive_sampling_settings_are_checked() {
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().processor::<QuerySpec>().unwrap().adaptive_sampling.clone();
        assert_eq!((shipped.target_traces_per_second, shipped.lookback), (1.0, Duration::from_secs(300)));
        let text = DEFAULT_TOPOLOGY
            .replace("target_traces_per_second: 1\n", "target_traces_per_second: -2\n      targets: 3\n")
            .replace("lookback: 5m", "lookback: 0s")
            .replace("default_probability: 1\n", "default_probability: 1.5\n");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        for expected in [
            "processors.query.adaptive_sampling.targets: unknown key",
            "processors.query.adaptive_sampling.target_traces_per_second: must be a number of traces per second above zero, got -2",
            "processors.query.adaptive_sampling.lookback: must be longer than zero",
            "processors.query.adaptive_sampling.default_probability: must be between 0 and 1, got 1.5",
        ] {
            assert!(messages.iter().any(|m| m.starts_with(expected)), "{expected} not in {messages:#?}");
        }
        let floor_above = DEFAULT_TOPOLOGY.replace("min_traces_per_second: 0.0167", "min_traces_per_second: 2");
        let messages: Vec<String> = Topology::from_yaml(&floor_above).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.contains("must not exceed target_traces_per_second")), "{messages:#?}");
    }

    #[test]
    fn sampler_rules_are_checked() {
        let text = DEFAULT_TOPOLOGY
            .replace("type: probabilistic, rate: 0.05", "type: probabilistic, rate: 5")
            .replace("{ name: errors, type: errors }", "{ name: errors, type: erors }")
            .replace("threshold: 1s", "threshold: 1s, percentile: 99")
            .replace("grace: 2s", "grace: 20s");
        let problems = Topology::from_yaml(&text).unwrap_err().into_vec();
        let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{messages:#?}");
        assert!(messages[0].starts_with("processors.assembler.grace: must be shorter than idle_timeout"));
        assert!(messages[1].starts_with("processors.sampler.rules[0].type: unknown rule type `erors`"));
        assert!(messages[2].starts_with("processors.sampler.rules[1]: a latency rule takes either threshold"));
        assert!(messages[3].starts_with("processors.sampler.rules[5].rate: must be between 0 and 1, got 5"));
        let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(topology.processor::<SamplerSpec>().unwrap().config.rules.len(), 6);
        assert_eq!(topology.processor::<AssemblerSpec>().unwrap().config.memory_budget_bytes, 256 << 20);
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
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
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
        let shipped = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap().processor::<AssemblerSpec>().unwrap().clone();
        assert_eq!(shipped.config.max_trace_bytes, 8 << 20);
        // Unset, it follows a smaller budget down.
        let small = DEFAULT_TOPOLOGY.replace("memory_budget: 256MiB", "memory_budget: 32MiB");
        assert_eq!(Topology::from_yaml(&small).unwrap().processor::<AssemblerSpec>().unwrap().config.max_trace_bytes, 2 << 20);
        // Set above a sixteenth, it is a problem.
        let text = small.replace("    memory_budget: 32MiB", "    memory_budget: 32MiB\n    max_trace_bytes: 4MiB");
        let messages: Vec<String> = Topology::from_yaml(&text).unwrap_err().into_vec().iter().map(|p| p.to_string()).collect();
        assert_eq!(messages.len(), 1, "{messages:#?}");
        assert!(messages[0].starts_with("processors.assembler.max_trace_bytes: must be at most a sixteenth of memory_budget"), "{}", messages[0]);
    }
}
