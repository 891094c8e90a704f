//! topology.yaml: the raw file as serde reads it, and the validated [`Topology`] built from it by
//! [`Topology::from_yaml`], which reports every problem at once with its path in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_runtime::{KafkaSettings, PipelineSettings};
use tracepipe_schemas::Encoding;

/// The topology tracepipe ships with; `tracepipe up` uses it unless given another file.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.yaml");

/// The processors this build has.
pub const PROCESSORS: &[&str] = &["router"];

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
        problems.unknown("", &raw.unknown, &["version", "kafka", "admin", "topics", "processors"]);
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

        let mut router = None;
        for (name, section) in &raw.processors {
            let path = format!("processors.{name}");
            match name.as_str() {
                "router" => match serde_yaml_ng::from_value::<RawRouter>(section.clone()) {
                    Ok(raw_router) => router = validate_router(&path, raw_router, &topics, &mut problems),
                    Err(e) => problems.add(path, e.to_string()),
                },
                other => problems.add(path, format!("unknown processor `{other}` (this build has: {})", PROCESSORS.join(", "))),
            }
        }

        if problems.0.is_empty() {
            Ok(Topology { kafka, admin_listen, topics, router })
        } else {
            Err(Problems(problems.0))
        }
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Topology::from_yaml(&text).map_err(|problems| anyhow::anyhow!("{} is invalid:\n{problems}", path.display()))
    }

    pub fn router_pipeline(&self, spec: &RouterSpec) -> PipelineSettings {
        let mut settings = PipelineSettings::new(
            self.kafka.clone(),
            &spec.group,
            spec.inputs.iter().map(|(topic, _)| topic.clone()).collect(),
            vec![spec.output.clone()],
            &spec.dlq,
        );
        settings.commit_interval = spec.commit_interval;
        settings.max_in_flight = spec.max_in_flight;
        settings
    }
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
    let max_message_bytes = match raw.max_message_bytes.as_ref().map(|v| scalar_text(v).as_deref().and_then(parse_bytes)) {
        None => 16 << 20,
        Some(Some(bytes)) if bytes > 0 => bytes,
        Some(_) => {
            problems.add(format!("{path}.max_message_bytes"), "must be a size like 16MiB or 1000000");
            0
        }
    };
    let commit_interval = raw
        .commit_interval
        .as_deref()
        .map(|d| parse_duration(format!("{path}.commit_interval"), d, problems))
        .unwrap_or(Some(Duration::from_secs(1)));
    let max_in_flight = raw.max_in_flight.unwrap_or(50_000);
    if !(1..=10_000_000).contains(&max_in_flight) {
        problems.add(format!("{path}.max_in_flight"), format!("must be between 1 and 10000000, got {max_in_flight}"));
    }
    Some(RouterSpec {
        group: group?,
        inputs,
        output: output?,
        dlq: dlq?,
        max_message_bytes,
        commit_interval: commit_interval?,
        max_in_flight: max_in_flight.max(1) as usize,
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
            .replace("partitions: 12", "partitions: 0")
            .replace("encoding: zipkin_json", "encoding: zipkin_thrift")
            .replace("    max_in_flight: 50000", "    max_in_flight: 50000\n    batch_size: 10")
            .replace("output: tracepipe.spans", "output: tracepipe.span");
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
        assert!(Topology::from_yaml("processors:\n  sampler: {}\n").unwrap_err().0.iter().any(|p| p.message.contains("unknown processor")));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("16MiB"), Some(16 << 20));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }
}
