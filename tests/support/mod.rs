//! Test harness: a real Kafka-protocol broker (Tansu) on a free loopback port, tracepipe processes,
//! the load generator, and a reader that checks what came out against the ground truth.
#![allow(dead_code)]

pub mod secure;
pub mod stored;
pub mod totals;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tracepipe::loadgen::{self, GroundTruth, Limits, LoadgenOptions, Scenario};
use tracepipe::topology::Topology;
use tracepipe_runtime::KafkaSettings;
use tracepipe_schemas::v1::TraceSpans;
use tracepipe_schemas::Encoding;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A loopback port nothing listens on now, never the same twice in one test process: the kernel
/// may hand a just-released port out again, and two ports asked for in a row must differ.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return path.into();
    }
    let home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap()).join(".cargo"));
    let candidate = home.join("bin/tansu");
    if candidate.exists() {
        return candidate;
    }
    "tansu".into()
}

/// A Tansu broker in its own process, killed on drop.
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    pub dir: TempDir,
    /// The port clients are told to connect to, when not `port` (a TLS proxy in front).
    pub advertised_port: Option<u16>,
    /// `--authentication`: every client must authenticate with SASL SCRAM.
    pub authentication: bool,
}

impl Tansu {
    /// In-memory storage: fast, lost at restart.
    pub fn start() -> Tansu {
        Self::start_with("memory://tansu/")
    }

    /// SQLite storage in a temporary directory: survives a broker restart.
    pub fn start_persistent() -> Tansu {
        Self::start_with("sqlite")
    }

    fn start_with(storage: &str) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        // Tansu resolves a sqlite URL against its working directory, which is `dir`.
        let storage = if storage == "sqlite" { "sqlite://tansu.db".to_string() } else { storage.to_string() };
        let mut tansu = Tansu { child: None, port: free_port(), storage, dir, advertised_port: None, authentication: false };
        tansu.launch();
        tansu
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port.unwrap_or(self.port));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tansu.log")).unwrap();
        let mut args = vec!["broker", "--listener-url", &url, "--advertised-listener-url", &advertised, "--storage-engine", &self.storage];
        if self.authentication {
            args.push("--authentication");
        }
        let child = Command::new(tansu_binary())
            .args(args)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({}): {e}; `make test` installs it", tansu_binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long after a SIGKILL a replacement should wait before joining: past the processors'
/// session timeout (10 s), as a supervisor's restart would be. Tansu's group coordinator evicts an
/// expired member when the next member joins; a member that joins while the dead one still counts
/// is given no partitions, and Tansu does not rebalance when the dead one expires afterwards.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(11);

/// Producer settings for everything the tests write to Tansu. Tansu 0.6.0 answers a fetch from
/// an offset inside a record batch with the batches after it, skipping the rest of that batch
/// (Kafka returns the whole batch and the client drops what precedes the offset). A consumer that
/// resumes from a committed offset in mid-batch, as every tracepipe processor may, would then
/// miss records; so may a partition resumed after backpressure paused it, which librdkafka
/// fetches again from the record after the last one it handed out. One record per batch keeps
/// every offset a batch boundary, so the tests exercise tracepipe and not that broker bug.
pub const ONE_RECORD_PER_BATCH: &str = "batch.num.messages";

/// A topology for tests: the shipped one pointed at `brokers`, with the admin server on `admin_port`.
pub fn topology_yaml(brokers: &str, admin_port: u16) -> String {
    std::fs::read_to_string(repo_path("topology.yaml"))
        .unwrap()
        .replace("brokers: 127.0.0.1:9092", &format!("brokers: {brokers}"))
        .replace("listen: 127.0.0.1:9464", &format!("listen: 127.0.0.1:{admin_port}"))
        .replace("  producer: {}", &format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1 }}"))
}

/// Kafka settings for clients the tests run themselves (load generator, raw producers).
pub fn test_kafka(brokers: &str) -> KafkaSettings {
    let mut kafka = KafkaSettings::new(brokers);
    kafka.producer.insert(ONE_RECORD_PER_BATCH.into(), "1".into());
    kafka
}

/// A broker with the topology's topics created, and the topology file.
pub struct Cluster {
    pub tansu: Tansu,
    pub topology_path: PathBuf,
    pub topology: Topology,
    /// Producers batch normally: only for runs where no consumer resumes from a committed offset
    /// (benchmarks), see [`ONE_RECORD_PER_BATCH`].
    pub batched: bool,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::with(Tansu::start())
    }

    pub fn start_persistent() -> Cluster {
        Self::with(Tansu::start_persistent())
    }

    /// A cluster whose topology is the shipped one changed by `edit`.
    pub fn start_with(edit: impl Fn(String) -> String) -> Cluster {
        let tansu = Tansu::start();
        let yaml = edit(topology_yaml(&tansu.brokers(), 0));
        Self::with_yaml(tansu, yaml)
    }

    /// Same, with a broker that keeps its data across a restart.
    pub fn start_with_persistent(edit: impl Fn(String) -> String) -> Cluster {
        let tansu = Tansu::start_persistent();
        let yaml = edit(topology_yaml(&tansu.brokers(), 0));
        Self::with_yaml(tansu, yaml)
    }

    fn with(tansu: Tansu) -> Cluster {
        let yaml = topology_yaml(&tansu.brokers(), 0);
        Self::with_yaml(tansu, yaml)
    }

    /// A batching cluster whose topology is the shipped one changed by `edit`.
    pub fn start_batched_with(edit: impl Fn(String) -> String) -> Cluster {
        let tansu = Tansu::start();
        let yaml = edit(topology_yaml(&tansu.brokers(), 0).replace(&format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1 }}"), "  producer: {}"));
        let mut cluster = Self::with_yaml(tansu, yaml);
        cluster.batched = true;
        cluster
    }

    /// A cluster whose producers batch as in production, for benchmarks that never resume.
    pub fn start_batched() -> Cluster {
        let tansu = Tansu::start();
        let yaml = topology_yaml(&tansu.brokers(), 0).replace(&format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1 }}"), "  producer: {}");
        let mut cluster = Self::with_yaml(tansu, yaml);
        cluster.batched = true;
        cluster
    }

    pub fn with_yaml(tansu: Tansu, yaml: String) -> Cluster {
        let topology_path = tansu.dir.path().join("topology.yaml");
        std::fs::write(&topology_path, &yaml).unwrap();
        let topology = Topology::from_yaml(&yaml).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(tracepipe::topics::create(&topology)).unwrap();
        Cluster { tansu, topology_path, topology, batched: false }
    }

    pub fn brokers(&self) -> String {
        self.tansu.brokers()
    }

    pub fn spawn(&self, processor: &str) -> Process {
        Process::spawn(&["run", processor, "-t", self.topology_path.to_str().unwrap()], self.tansu.dir.path(), processor)
    }

    /// A processor whose admin server listens on `admin_port`.
    pub fn spawn_with_admin(&self, processor: &str, admin_port: u16) -> Process {
        let admin = format!("127.0.0.1:{admin_port}");
        Process::spawn(&["run", processor, "-t", self.topology_path.to_str().unwrap(), "--admin", &admin], self.tansu.dir.path(), processor)
    }

    pub fn loadgen(&self, encoding: Encoding, spans: u64, rate: f64) -> GroundTruth {
        let kafka = if self.batched { KafkaSettings::new(self.brokers()) } else { test_kafka(&self.brokers()) };
        loadgen_with(kafka, "tests/scenarios/small.yaml", encoding, Limits { spans: Some(spans), ..Default::default() }, rate)
    }
}

pub fn loadgen(brokers: &str, scenario: &str, encoding: Encoding, limits: Limits, rate: f64) -> GroundTruth {
    loadgen_with(test_kafka(brokers), scenario, encoding, limits, rate)
}

/// Runs the load generator on a scenario given as YAML text.
pub fn loadgen_yaml(brokers: &str, scenario_yaml: &str, limits: Limits, rate: f64) -> GroundTruth {
    let scenario = Scenario::from_yaml(scenario_yaml).unwrap();
    let options = LoadgenOptions { kafka: test_kafka(brokers), topic: None, encoding: Some(Encoding::OtlpProto), rate: Some(rate), limits, truth: None };
    loadgen::run(scenario, options, &CancellationToken::new()).unwrap()
}

fn loadgen_with(kafka: KafkaSettings, scenario: &str, encoding: Encoding, limits: Limits, rate: f64) -> GroundTruth {
    let scenario = Scenario::from_yaml(&std::fs::read_to_string(repo_path(scenario)).unwrap()).unwrap();
    let options = LoadgenOptions { kafka, topic: None, encoding: Some(encoding), rate: Some(rate), limits, truth: None };
    loadgen::run(scenario, options, &CancellationToken::new()).unwrap()
}

/// A tracepipe process, killed on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(args: &[&str], dir: &Path, name: &str) -> Process {
        Self::spawn_program(env!("CARGO_BIN_EXE_tracepipe"), args, dir, name)
    }

    /// Any program, its output in a log file in `dir`, killed on drop.
    pub fn spawn_program(program: &str, args: &[&str], dir: &Path, name: &str) -> Process {
        Self::spawn_program_with_env(program, args, dir, name, &[])
    }

    pub fn spawn_program_with_env(program: &str, args: &[&str], dir: &Path, name: &str, env: &[(&str, String)]) -> Process {
        let log = dir.join(format!("{name}-{}.log", free_port()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .env("TRACEPIPE_ADMIN", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Process { child: Some(child), log }
    }

    /// SIGKILL: no drain, no commit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("process did not stop within 30 s of SIGTERM; log: {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The partitions (input index, partition) the process was last assigned, from its log;
    /// `None` before its first assignment.
    pub fn assigned(&self) -> Option<BTreeSet<(u16, i32)>> {
        let ansi = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
        let log = ansi.replace_all(&self.log_text(), "").into_owned();
        let line = log.lines().rev().find(|line| line.contains("partitions assigned") || line.contains("partitions revoked"))?;
        if line.contains("partitions revoked") {
            return Some(BTreeSet::new());
        }
        let list = line.split("partitions=[").nth(1)?.split(']').next()?;
        let pair = regex::Regex::new(r"\((\d+), (\d+)\)").unwrap();
        Some(pair.captures_iter(list).map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap())).collect())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(text) {
            assert!(Instant::now() < deadline, "`{text}` not logged within {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of a process of the failed test: {}\n{}", self.log.display(), self.log_text());
        }
    }
}

/// The admin server's /metrics text, or empty if it is not up.
pub fn metrics(admin_port: u16) -> String {
    http_get(admin_port, "/metrics")
}

/// The response (status line, headers and body) to `GET path` on a loopback port, or empty if
/// nothing listens there.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// The body of an HTTP response.
pub fn http_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Reads JSON records until `done` says enough and nothing new came for 2 s, or `timeout`.
pub fn read_json(brokers: &str, topic: &str, timeout: Duration, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let on_record = |out: &mut Vec<serde_json::Value>, message: &rdkafka::message::BorrowedMessage<'_>| {
        out.push(serde_json::from_slice(message.payload().unwrap_or_default()).expect("a JSON record"));
    };
    consume_until(brokers, topic, timeout, &mut out, on_record, |out| done(out));
    out
}

/// The value of one series (name with labels, exactly as exposed), 0 if absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

fn reader(brokers: &str, topic: &str) -> (BaseConsumer, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tracepipe-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    (consumer, partitions)
}

/// Every span read back from the spans topic.
#[derive(Default, Debug)]
pub struct RoutedSpans {
    /// trace id → span id → times seen.
    pub spans: BTreeMap<[u8; 16], BTreeMap<Vec<u8>, u32>>,
    /// trace id → partitions it was seen in.
    pub partitions: BTreeMap<[u8; 16], BTreeSet<i32>>,
    pub records: u64,
    pub missing_traceparent: u64,
}

impl RoutedSpans {
    pub fn distinct_spans(&self) -> u64 {
        self.spans.values().map(|s| s.len() as u64).sum()
    }

    pub fn duplicates(&self) -> u64 {
        self.spans.values().flat_map(|s| s.values()).map(|&n| u64::from(n - 1)).sum()
    }

    /// Asserts nothing in `truth` is missing and every trace sits in one partition.
    pub fn assert_complete(&self, truth: &GroundTruth) {
        let mut missing = 0u64;
        let mut incomplete = Vec::new();
        for (trace, &count) in &truth.traces {
            let id: [u8; 16] = hex::decode(trace).unwrap().try_into().unwrap();
            let seen = self.spans.get(&id).map(|s| s.len() as u32).unwrap_or(0);
            if seen != count {
                missing += u64::from(count.saturating_sub(seen));
                if incomplete.len() < 5 {
                    incomplete.push(format!("{trace}: {seen} of {count}"));
                }
            }
        }
        assert_eq!(missing, 0, "spans lost; e.g. {incomplete:?}");
        assert_eq!(self.distinct_spans(), truth.span_count, "spans out == spans in");
        let split: Vec<_> = self.partitions.iter().filter(|(_, p)| p.len() != 1).collect();
        assert!(split.is_empty(), "traces in more than one partition: {}", split.len());
        assert_eq!(self.missing_traceparent, 0, "every record carries a traceparent");
    }
}

/// Reads `topic` from the beginning, handing each record to `on_record`, until `done` holds and
/// nothing new came for 2 s, or `timeout`.
pub fn consume_until<S>(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    state: &mut S,
    mut on_record: impl FnMut(&mut S, &rdkafka::message::BorrowedMessage<'_>),
    done: impl Fn(&S) -> bool,
) {
    let (consumer, _) = reader(brokers, topic);
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                on_record(state, &message);
            }
            Some(Err(error)) => eprintln!("reader: {error}"),
            None => {
                if done(state) && quiet_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
    }
}

/// Reads `tracepipe.spans` from the beginning until `expected` distinct spans were seen and no
/// more arrive, or `timeout`.
pub fn read_routed(brokers: &str, expected: u64, timeout: Duration) -> RoutedSpans {
    read_spans(brokers, "tracepipe.spans", expected, timeout)
}

/// Reads the spans of any topic whose values start like `TraceSpans` (spans, traces, sampled).
pub fn read_spans(brokers: &str, topic: &str, expected: u64, timeout: Duration) -> RoutedSpans {
    let mut out = RoutedSpans::default();
    let on_record = |out: &mut RoutedSpans, message: &rdkafka::message::BorrowedMessage<'_>| {
        out.records += 1;
        if !message.headers().is_some_and(|h| h.iter().any(|h| h.key == "traceparent")) {
            out.missing_traceparent += 1;
        }
        let trace = TraceSpans::decode(message.payload().unwrap()).expect("the topic holds TraceSpans-shaped values");
        let id: [u8; 16] = trace.trace_id.clone().try_into().unwrap();
        assert_eq!(message.key(), Some(&id[..]), "keyed by the trace id");
        out.partitions.entry(id).or_default().insert(message.partition());
        let spans = out.spans.entry(id).or_default();
        for span in trace.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
            assert_eq!(span.trace_id, trace.trace_id);
            *spans.entry(span.span_id.clone()).or_default() += 1;
        }
    };
    consume_until(brokers, topic, timeout, &mut out, on_record, |out| out.distinct_spans() >= expected);
    out
}

/// A record read from the dead-letter topic.
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

pub fn read_dead_letters(brokers: &str, expected: usize, timeout: Duration) -> Vec<DeadLetter> {
    let (consumer, _) = reader(brokers, "tracepipe.dlq");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            out.push(DeadLetter { key: message.key().map(<[u8]>::to_vec), value: message.payload().unwrap_or_default().to_vec(), headers });
        }
    }
    out
}

/// Produces raw records (e.g. garbage) and waits for the broker to acknowledge them.
pub fn produce_raw(brokers: &str, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for (key, value) in records {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(*value).partition(0);
            if let Some(key) = key {
                record = record.key(*key);
            }
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        }
    });
}

/// One record of `tracepipe.traces` or `tracepipe.sampled`.
pub struct TraceRecord {
    pub trace_id: [u8; 16],
    pub fragment: u32,
    pub completion: i32,
    pub truncated: bool,
    pub span_ids: Vec<Vec<u8>>,
    pub root_duration_nanos: Option<u64>,
    pub sampling_rule: String,
    pub adjusted_count: f64,
    pub spans: Vec<SpanSummary>,
    /// The record's value as it is on the topic.
    pub payload: Vec<u8>,
}

/// What a test needs to know of one span of an assembled trace.
#[derive(Debug, Clone)]
pub struct SpanSummary {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
    /// The span's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

/// What a test needs to know of one record of `tracepipe.traces` or `tracepipe.sampled`.
fn trace_record(message: &rdkafka::message::BorrowedMessage<'_>) -> TraceRecord {
    use tracepipe_schemas::v1::AssembledTrace;
    let trace = AssembledTrace::decode(message.payload().unwrap()).expect("assembled trace");
    let root = trace.spans().find(|s| s.parent_span_id.is_empty());
    TraceRecord {
        trace_id: trace.trace_id.clone().try_into().unwrap(),
        fragment: trace.fragment,
        completion: trace.completion,
        truncated: trace.truncated,
        span_ids: trace.spans().map(|s| s.span_id.clone()).collect(),
        root_duration_nanos: root.map(|r| r.end_time_unix_nano.saturating_sub(r.start_time_unix_nano)),
        sampling_rule: trace.sampling_rule.clone(),
        adjusted_count: trace.adjusted_count,
        spans: trace
            .resource_spans
            .iter()
            .flat_map(|rs| {
                let service = rs.resource.as_ref().and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name")).and_then(|kv| kv.value.as_ref()).map(|v| match &v.value {
                    Some(tracepipe_schemas::otlp_common::any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                });
                let service = service.unwrap_or_default();
                rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(move |span| SpanSummary {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    links: span.links.iter().map(|l| (l.trace_id.clone(), l.span_id.clone())).collect(),
                    attributes: span.attributes.iter().filter_map(|kv| Some((kv.key.clone(), tracepipe_schemas::attributes::to_text(kv.value.as_ref()?.value.as_ref()?)))).collect(),
                })
            })
            .collect(),
        payload: message.payload().unwrap().to_vec(),
    }
}

/// Reads assembled (or sampled) traces until `done` says enough and nothing new came for 2 s, or
/// `timeout`.
pub fn read_traces(brokers: &str, topic: &str, timeout: Duration, done: impl Fn(&[TraceRecord]) -> bool) -> Vec<TraceRecord> {
    let mut out: Vec<TraceRecord> = Vec::new();
    consume_until(brokers, topic, timeout, &mut out, |out, message| out.push(trace_record(message)), |out| done(out));
    out
}

/// The first `count` records of `topic` (fewer if `timeout` passes first), without waiting for
/// the rest.
pub fn read_first_traces(brokers: &str, topic: &str, count: usize, timeout: Duration) -> Vec<TraceRecord> {
    let (consumer, _) = reader(brokers, topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => out.push(trace_record(&message)),
            Some(Err(error)) => eprintln!("reader: {error}"),
            None => {}
        }
    }
    out
}

/// Waits until `topic` holds at least `count` records.
pub fn wait_for_records(brokers: &str, topic: &str, count: u64, timeout: Duration) {
    let (consumer, _) = reader(brokers, topic);
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while seen < count {
        assert!(Instant::now() < deadline, "{topic} has only {seen} of {count} records");
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            seen += 1;
        }
    }
}

/// `count` OTLP export requests of `per_request` generated traces each (the small scenario, its
/// seed varied by `seed`), with how many spans each holds.
pub fn export_requests(seed: u64, count: usize, per_request: usize) -> Vec<(tracepipe_schemas::ExportTraceServiceRequest, u64)> {
    let mut scenario = Scenario::from_yaml(&std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap()).unwrap();
    scenario.seed ^= seed;
    let mut generator = loadgen::TraceGenerator::new(scenario.clone());
    let encoder = loadgen::MessageEncoder::new(Encoding::OtlpProto, &scenario, generator.services());
    let start = 1_764_000_000_000_000_000 + seed * 1_000_000_000;
    (0..count)
        .map(|r| {
            let mut spans = Vec::new();
            for t in 0..per_request {
                spans.extend(generator.generate(start + ((r * per_request + t) as u64) * 1_000_000, 1.0).spans);
            }
            let span_count = spans.len() as u64;
            let (_, bytes) = encoder.encode(spans).pop().unwrap();
            (tracepipe_schemas::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(), span_count)
        })
        .collect()
}

/// `tracepipe run gateway` on free ports, listening once this returns.
pub struct Gateway {
    pub process: Process,
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
}

impl Gateway {
    /// Starts a gateway on free ports; again on others if one was taken between choosing it and
    /// binding it (tests running side by side choose ports too).
    pub fn start(cluster: &Cluster) -> Gateway {
        for _ in 0..5 {
            let (grpc, http, admin) = (free_port(), free_port(), free_port());
            let mut process = Process::spawn(
                &[
                    "run",
                    "gateway",
                    "-t",
                    cluster.topology_path.to_str().unwrap(),
                    "--admin",
                    &format!("127.0.0.1:{admin}"),
                    "--otlp-grpc-listen",
                    &format!("127.0.0.1:{grpc}"),
                    "--otlp-http-listen",
                    &format!("127.0.0.1:{http}"),
                ],
                cluster.tansu.dir.path(),
                "gateway",
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while [grpc, http].iter().any(|&port| TcpStream::connect(("127.0.0.1", port)).is_err()) {
                if process.exited() {
                    break;
                }
                assert!(Instant::now() < deadline, "the gateway does not listen:\n{}", process.log_text());
                std::thread::sleep(Duration::from_millis(50));
            }
            if !process.exited() {
                return Gateway { process, grpc, http, admin };
            }
            assert!(process.log_text().contains("Address already in use"), "the gateway exited:\n{}", process.log_text());
        }
        panic!("no free ports for the gateway after 5 tries");
    }

    /// The OTLP/HTTP traces endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http)
    }
}

/// Waits until something listens on `port`; `process` is what should be listening (its log is
/// shown if nothing does within 60 s).
pub fn wait_for_port(port: u16, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}:\n{}", process.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resident anonymous memory of a process (its heap and stacks, not the pages of its binary
/// and libraries, which grow as code first runs), in bytes.
pub fn anonymous_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
