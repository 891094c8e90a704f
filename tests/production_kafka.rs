//! tracepipe against Kafka as production runs it: TLS, SASL SCRAM over TLS, mutual TLS, and
//! records compressed with every codec by an independent client (Python confluent-kafka), through
//! router → assembler → sampler → sink into the store. TLS is stunnel in front of Tansu, see
//! `support::secure`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use support::secure::{python_client, restart_secured, Certificates, Stunnel};
use support::{free_port, http_get, Cluster, Process, Tansu, ONE_RECORD_PER_BATCH};
use tracepipe::loadgen::{self, GroundTruth, Limits, LoadgenOptions, Scenario};
use tracepipe_runtime::KafkaSettings;
use tracepipe_schemas::Encoding;
use tracepipe_store::{Store, StoreUrl};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "pipeline-secret-1";
const SHOP_PASSWORD: &str = "shop-secret-2";
const STORE_TIMEOUT: Duration = Duration::from_secs(240);

/// `yaml` with the store at `url` and every trace kept by the sampler, so that the store must
/// end up holding every span sent.
fn storing_every_trace(yaml: String, url: &str) -> String {
    yaml.replace("url: sqlite://tracepipe.db", &format!("url: {url}")).replace("{ name: baseline, type: probabilistic, rate: 0.05 }", "{ name: baseline, type: probabilistic, rate: 1.0 }")
}

/// The shipped topology on `brokers` with `client` as its `kafka.client` block, every trace kept
/// in the SQLite store `store`, and each processor's producer compressing with `codec`.
fn topology(brokers: &str, client: &str, store: &Path, codec: &str) -> String {
    let yaml = support::topology_yaml(brokers, 0)
        .replace("  client: {}", client)
        .replace(&format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1 }}"), &format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1, compression.type: {codec} }}"));
    storing_every_trace(yaml, &format!("sqlite://{}", store.display()))
}

/// Writes a variant of the cluster's topology (another producer codec, other credentials) and
/// returns its path.
fn variant(cluster: &Cluster, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let path = cluster.tansu.dir.path().join(format!("topology-{name}.yaml"));
    std::fs::write(&path, edit(std::fs::read_to_string(&cluster.topology_path).unwrap())).unwrap();
    path
}

fn spawn(cluster: &Cluster, processor: &str, topology: &Path) -> Process {
    Process::spawn(&["run", processor, "-t", topology.to_str().unwrap()], cluster.tansu.dir.path(), processor)
}

fn generate(kafka: KafkaSettings, topic: Option<&str>, encoding: Encoding, spans: u64) -> GroundTruth {
    let scenario = Scenario::from_yaml(&std::fs::read_to_string(support::repo_path("tests/scenarios/small.yaml")).unwrap()).unwrap();
    let mut kafka = kafka;
    kafka.producer.insert(ONE_RECORD_PER_BATCH.into(), "1".into());
    let options = LoadgenOptions { kafka, topic: topic.map(str::to_string), encoding: Some(encoding), rate: Some(0.0), limits: Limits { spans: Some(spans), ..Default::default() }, truth: None };
    loadgen::run(scenario, options, &CancellationToken::new()).unwrap()
}

/// Spans stored per trace id.
fn stored_spans_at(url: &StoreUrl) -> BTreeMap<String, u32> {
    let Ok(mut store) = Store::open(url) else { return BTreeMap::new() };
    let Ok(rows) = store.query("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id", &[]) else { return BTreeMap::new() };
    rows.into_iter().map(|row| (row[0].text().to_string(), row[1].int() as u32)).collect()
}

/// Waits until every trace of `expected` is stored with all its spans; returns how long it took.
fn wait_until_stored(store: &Path, expected: &BTreeMap<String, u32>, processes: &[&Process]) -> Duration {
    wait_until_stored_at(&StoreUrl::Sqlite(store.to_path_buf()), expected, processes)
}

fn wait_until_stored_at(store: &StoreUrl, expected: &BTreeMap<String, u32>, processes: &[&Process]) -> Duration {
    let started = Instant::now();
    loop {
        let stored = stored_spans_at(store);
        let missing: Vec<_> = expected.iter().filter(|(id, spans)| stored.get(*id) != Some(spans)).collect();
        if missing.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > STORE_TIMEOUT {
            let logs: String = processes.iter().map(|p| format!("--- {}\n{}\n", p.log.display(), p.log_text())).collect();
            panic!("{} of {} traces not stored with all their spans, e.g. {:?} (stored {:?})\n{logs}", missing.len(), expected.len(), missing[0], stored.get(missing[0].0));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A process that must stop by itself, non-zero, saying `expected` in its log.
fn assert_refused(mut process: Process, expected: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !process.exited() {
        assert!(Instant::now() < deadline, "still running after 90 s:\n{}", process.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = process.log_text();
    for text in expected {
        assert!(log.contains(text), "the log does not say {text:?}:\n{log}");
    }
    log.lines().filter(|line| line.contains("pipeline stopped") || line.contains("error:")).collect::<Vec<_>>().join("\n")
}

/// Spans from `tracepipe-instrument`'s exporter over the given producer settings: the trace ids
/// (hex) and spans per trace.
fn export_through_instrument(brokers: &str, producer: Vec<(String, String)>, traces: usize) -> BTreeMap<String, u32> {
    let mut export = tracepipe_instrument::KafkaExport::new(brokers, "otlp_spans");
    export.producer = producer;
    let mut config = tracepipe_instrument::Config::new("secure-shop");
    config.kafka = Some(export);
    let provider = tracepipe_instrument::tracer_provider(&config).unwrap();
    let tracer = provider.tracer("production_kafka");
    let mut ids = BTreeMap::new();
    for order in 0..traces {
        tracer.in_span(format!("POST /orders/{order}"), |context| {
            ids.insert(context.span().span_context().trace_id().to_string(), 2);
            tracer.in_span("charge card", |_| {});
        });
    }
    provider.shutdown_with_timeout(Duration::from_secs(30)).unwrap();
    ids
}

#[test]
fn sasl_scram_over_tls_carries_every_span_to_the_store_and_a_wrong_password_is_refused_clearly() {
    // SCRAM users are created while Tansu runs without authentication, on storage that survives
    // the restart with --authentication.
    let mut tansu = Tansu::start_persistent();
    let dir = tansu.dir.path().to_path_buf();
    python_client(&["--brokers", &tansu.brokers(), "scram-user", "--user", "tracepipe", "--password", PASSWORD, "--mechanism", "SCRAM-SHA-512"]);
    python_client(&["--brokers", &tansu.brokers(), "scram-user", "--user", "shop", "--password", SHOP_PASSWORD, "--mechanism", "SCRAM-SHA-256"]);
    let certificates = Certificates::generate(&dir);
    let stunnel = Stunnel::start(&dir, tansu.port, &certificates, false);
    restart_secured(&mut tansu, stunnel.port, true);

    // The password is read from a file (a mounted Secret), not written in topology.yaml.
    let password_file = dir.join("kafka-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let client = format!(
        "  client:\n    security.protocol: SASL_SSL\n    sasl.mechanisms: SCRAM-SHA-512\n    sasl.username: tracepipe\n    sasl.password: {{ file: {} }}\n    ssl.ca.location: {}",
        password_file.display(),
        certificates.ca.display()
    );
    let store = dir.join("secure.db");
    let cluster = Cluster::with_yaml(tansu, topology(&stunnel.brokers(), &client, &store, "lz4"));
    let path = cluster.topology_path.clone();
    let processes: Vec<Process> = ["router", "assembler", "sampler", "sink"].iter().map(|p| spawn(&cluster, p, &path)).collect();

    let started = Instant::now();
    let truth = generate(cluster.topology.kafka.clone(), None, Encoding::OtlpProto, 5_000);
    let shop = vec![
        ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ("sasl.mechanism".to_string(), "SCRAM-SHA-256".to_string()),
        ("sasl.username".to_string(), "shop".to_string()),
        ("sasl.password".to_string(), SHOP_PASSWORD.to_string()),
        ("ssl.ca.location".to_string(), certificates.ca.display().to_string()),
    ];
    let exported = export_through_instrument(&stunnel.brokers(), shop, 20);
    let mut expected = truth.traces.clone();
    expected.extend(exported.clone());
    let took = wait_until_stored(&store, &expected, &processes.iter().collect::<Vec<_>>());
    eprintln!(
        "SASL_SSL (SCRAM-SHA-512 for tracepipe, SCRAM-SHA-256 for the exporter): {} spans of {} traces from the load generator and {} traces from tracepipe-instrument stored, all spans, {:.1?} after the last was sent ({:.1?} in all)",
        truth.span_count,
        truth.trace_count,
        exported.len(),
        took,
        started.elapsed()
    );

    let wrong = variant(&cluster, "wrong-password", |yaml| yaml.replace(&format!("{{ file: {} }}", password_file.display()), "not-the-password"));
    let refused = assert_refused(spawn(&cluster, "router", &wrong), &["the connection to Kafka (TLS or SASL) was refused"]);
    eprintln!("wrong password:\n{refused}");

    let untrusted = variant(&cluster, "untrusted", |yaml| yaml.replace(&format!("    ssl.ca.location: {}", certificates.ca.display()), "    ssl.ca.location: /etc/ssl/certs/ca-certificates.crt"));
    let refused = assert_refused(spawn(&cluster, "router", &untrusted), &["the connection to Kafka (TLS or SASL) was refused", "certificate verify failed"]);
    eprintln!("untrusted broker certificate:\n{refused}");
    drop(processes);
    drop(stunnel);
}

#[test]
fn mutual_tls_carries_every_span_to_the_store_and_a_client_without_a_certificate_is_refused() {
    let tansu = Tansu::start();
    let dir = tansu.dir.path().to_path_buf();
    let certificates = Certificates::generate(&dir);
    let stunnel = Stunnel::start(&dir, tansu.port, &certificates, true);
    let mut tansu = tansu;
    restart_secured(&mut tansu, stunnel.port, false);
    let client = format!(
        "  client:\n    security.protocol: SSL\n    ssl.ca.location: {}\n    ssl.certificate.location: {}\n    ssl.key.location: {}",
        certificates.ca.display(),
        certificates.client_cert.display(),
        certificates.client_key.display()
    );
    let store = dir.join("mtls.db");
    let cluster = Cluster::with_yaml(tansu, topology(&stunnel.brokers(), &client, &store, "lz4"));
    let path = cluster.topology_path.clone();
    let processes: Vec<Process> = ["router", "assembler", "sampler", "sink"].iter().map(|p| spawn(&cluster, p, &path)).collect();
    let truth = generate(cluster.topology.kafka.clone(), None, Encoding::OtlpProto, 5_000);
    let mtls = vec![
        ("security.protocol".to_string(), "SSL".to_string()),
        ("ssl.ca.location".to_string(), certificates.ca.display().to_string()),
        ("ssl.certificate.location".to_string(), certificates.client_cert.display().to_string()),
        ("ssl.key.location".to_string(), certificates.client_key.display().to_string()),
    ];
    let exported = export_through_instrument(&stunnel.brokers(), mtls, 20);
    let mut expected = truth.traces.clone();
    expected.extend(exported.clone());
    let took = wait_until_stored(&store, &expected, &processes.iter().collect::<Vec<_>>());
    eprintln!("mTLS: {} spans of {} traces and {} exported traces stored, all spans, {took:.1?} after the last was sent", truth.span_count, truth.trace_count, exported.len());

    let no_certificate = variant(&cluster, "no-certificate", |yaml| {
        yaml.replace(&format!("    ssl.certificate.location: {}\n", certificates.client_cert.display()), "").replace(&format!("    ssl.key.location: {}", certificates.client_key.display()), "")
    });
    let refused = assert_refused(spawn(&cluster, "router", &no_certificate), &["the connection to Kafka (TLS or SASL) was refused", "certificate required"]);
    eprintln!("no client certificate:\n{refused}");
    drop(processes);
    drop(stunnel);
}

#[test]
fn every_codec_from_an_independent_producer_is_routed_and_tracepipe_writes_each() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("codecs.db");
    let cluster = Cluster::start_with(|yaml| {
        storing_every_trace(yaml, &format!("sqlite://{}", store.display()))
            .replace("  tracepipe.spans:", "  staging.otlp: { partitions: 3, replication: 1 }\n  staging.jaeger: { partitions: 3, replication: 1 }\n  staging.zipkin: { partitions: 3, replication: 1 }\n  tracepipe.spans:")
    });
    // Each processor's own output in another codec: the router zstd, the assembler gzip, the
    // sampler snappy (lz4, the default, is what every other test writes).
    let codec = |codec: &'static str| move |yaml: String| yaml.replace(&format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1 }}"), &format!("  producer: {{ {ONE_RECORD_PER_BATCH}: 1, compression.type: {codec} }}"));
    let router = variant(&cluster, "zstd", codec("zstd"));
    let assembler = variant(&cluster, "gzip", codec("gzip"));
    let sampler = variant(&cluster, "snappy", codec("snappy"));
    let processes = [spawn(&cluster, "router", &router), spawn(&cluster, "assembler", &assembler), spawn(&cluster, "sampler", &sampler), spawn(&cluster, "sink", &cluster.topology_path)];

    let mut expected = BTreeMap::new();
    let mut spans = 0;
    for (encoding, staging, input) in [(Encoding::OtlpProto, "staging.otlp", "otlp_spans"), (Encoding::JaegerProto, "staging.jaeger", "jaeger-spans"), (Encoding::ZipkinJson, "staging.zipkin", "zipkin")] {
        let truth = generate(KafkaSettings::new(cluster.brokers()), Some(staging), encoding, 2_000);
        let written = python_client(&["--brokers", &cluster.brokers(), "copy", "--from", staging, "--to", input, "--count", &truth.message_count.to_string()]);
        eprintln!("{input}: {} records of {} spans written by confluent-kafka as {}", truth.message_count, truth.span_count, written.trim());
        spans += truth.span_count;
        expected.extend(truth.traces);
    }
    let took = wait_until_stored(&store, &expected, &processes.iter().collect::<Vec<_>>());
    eprintln!("codecs: {spans} spans of {} traces in gzip, snappy, lz4 and zstd records stored, all spans, through zstd, gzip and snappy outputs, {took:.1?} after the last was written", expected.len());
}

/// `/ready` of a process: its status line and its components' states.
fn readiness(admin_port: u16) -> (bool, String) {
    let response = http_get(admin_port, "/ready");
    (response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"), support::http_body(&response).trim().replace('\n', "; "))
}

/// Load in the background: `spans` at `rate` per second into otlp_spans.
fn background_load(brokers: String, spans: u64, rate: f64) -> std::thread::JoinHandle<GroundTruth> {
    std::thread::spawn(move || {
        let scenario = Scenario::from_yaml(&std::fs::read_to_string(support::repo_path("tests/scenarios/small.yaml")).unwrap()).unwrap();
        let mut kafka = KafkaSettings::new(brokers);
        kafka.producer.insert(ONE_RECORD_PER_BATCH.into(), "1".into());
        // Records wait for the broker as long as the outage lasts.
        kafka.producer.insert("message.timeout.ms".into(), "600000".into());
        let options = LoadgenOptions { kafka, topic: None, encoding: Some(Encoding::OtlpProto), rate: Some(rate), limits: Limits { spans: Some(spans), ..Default::default() }, truth: None };
        loadgen::run(scenario, options, &CancellationToken::new()).unwrap()
    })
}

/// The broker is stopped for longer than the consumers' `max.poll.interval.ms` (set to 15 s here)
/// and their session timeout (10 s) while traffic waits: every processor stays up, says it is not
/// ready while the broker is gone, and carries on by itself once it is back; nothing is lost.
#[test]
fn a_broker_outage_longer_than_the_poll_interval_loses_nothing_and_ready_goes_false_and_back() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("outage.db");
    let mut cluster = Cluster::start_with_persistent(|yaml| {
        storing_every_trace(yaml, &format!("sqlite://{}", store.display()))
            .replace("  consumer: {}", "  consumer: { max.poll.interval.ms: 15000 }")
    });
    let names = ["router", "assembler", "sampler", "sink"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut processes: Vec<Process> = names.iter().zip(&ports).map(|(name, port)| cluster.spawn_with_admin(name, *port)).collect();
    processes[0].wait_for_log("partitions assigned", Duration::from_secs(60));
    let load = background_load(cluster.brokers(), 20_000, 2_000.0);
    std::thread::sleep(Duration::from_secs(4));

    cluster.tansu.stop();
    let stopped = Instant::now();
    let mut seen_not_ready: BTreeMap<&str, String> = BTreeMap::new();
    while stopped.elapsed() < Duration::from_secs(25) {
        for (name, port) in names.iter().zip(&ports) {
            let (ready, states) = readiness(*port);
            if !ready && !states.is_empty() {
                seen_not_ready.entry(name).or_insert(states);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for process in &mut processes {
        assert!(!process.exited(), "a processor exited while the broker was down:\n{}", process.log_text());
    }
    cluster.tansu.restart();
    let restarted = Instant::now();
    let truth = load.join().unwrap();
    let took = wait_until_stored(&store, &truth.traces, &processes.iter().collect::<Vec<_>>());
    let ready_again = loop {
        if ports.iter().all(|port| readiness(*port).0) {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(120), "not ready again: {:?}", ports.iter().map(|p| readiness(*p)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("broker down 25 s: {} spans of {} traces sent, all stored with all their spans {took:.1?} after the last was sent; every processor ready again {ready_again:.1?} after the broker restarted", truth.span_count, truth.trace_count);
    for (name, states) in &seen_not_ready {
        eprintln!("  {name} while the broker was down: {states}");
    }
    for name in names {
        assert!(seen_not_ready.contains_key(name), "{name} never said it was not ready while the broker was down: {seen_not_ready:?}");
    }
}

/// `pg_ctlcluster` for the machine's one PostgreSQL cluster.
fn postgres_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql").unwrap().next().unwrap().unwrap().file_name();
    let status = std::process::Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", version.to_str().unwrap(), "main", action]).status().unwrap();
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// PostgreSQL is stopped for 15 s under load and started again: the sink keeps its place in the
/// group, answers SIGTERM while the store is down, reconnects by itself, and every trace is stored
/// once with all its spans.
#[test]
fn a_postgres_restart_under_load_loses_nothing_and_sigterm_is_honoured_while_it_is_down() {
    let schema = format!("tracepipe_restart_{}", std::process::id());
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let mut client = postgres::Client::connect(base, postgres::NoTls).expect("PostgreSQL on 127.0.0.1:5432 (`make test` starts it)");
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
    drop(client);
    let url = format!("{base}?options=-csearch_path%3D{schema}");
    let cluster = Cluster::start_with(|yaml| storing_every_trace(yaml, &url));
    let path = cluster.topology_path.clone();
    let sink_port = free_port();
    let mut processes: Vec<Process> = ["router", "assembler", "sampler"].iter().map(|p| spawn(&cluster, p, &path)).collect();
    let mut sink = cluster.spawn_with_admin("sink", sink_port);
    let load = background_load(cluster.brokers(), 20_000, 2_000.0);
    std::thread::sleep(Duration::from_secs(4));

    postgres_cluster("stop");
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let (ready, states) = readiness(sink_port);
    // SIGTERM while the store is down: the sink stops within its drain deadline.
    let terminating = Instant::now();
    let code = sink.terminate();
    let terminated_in = terminating.elapsed();
    let sink = cluster.spawn_with_admin("sink", sink_port);
    std::thread::sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed()));
    postgres_cluster("start");
    let down_for = stopped.elapsed();
    let truth = load.join().unwrap();
    processes.push(sink);
    let took = wait_until_stored_at(&StoreUrl::Postgres(url.clone()), &truth.traces, &processes.iter().collect::<Vec<_>>());
    let stored = stored_spans_at(&StoreUrl::Postgres(url.clone()));
    let log = processes.last().unwrap().log_text();
    eprintln!(
        "PostgreSQL down {down_for:.1?}: {} spans of {} traces sent, {} traces stored, each once with all its spans, {took:.1?} after the last was sent; the sink said `{}` (ready: {ready}) while it was down and stopped {terminated_in:.1?} after SIGTERM (exit {code:?}); the sink started while it was down waited for it: {}",
        truth.span_count,
        truth.trace_count,
        stored.len(),
        states,
        log.contains("the store does not answer yet")
    );
    assert!(terminated_in < Duration::from_secs(15), "SIGTERM took {terminated_in:?} with the store down");
    let mut client = postgres::Client::connect(base, postgres::NoTls).unwrap();
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).unwrap();
}

/// One trace of `spans` spans, each with a 300-byte attribute, as `records` OTLP records.
fn enormous_trace(spans: usize, records: usize) -> (String, Vec<Vec<u8>>) {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
    let trace_id: Vec<u8> = (1..=16).map(|b| b as u8 * 7).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let text = |value: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) });
    let span = |index: usize| Span {
        trace_id: trace_id.clone(),
        span_id: (index as u64 + 1).to_be_bytes().to_vec(),
        parent_span_id: if index == 0 { Vec::new() } else { 1u64.to_be_bytes().to_vec() },
        name: if index == 0 { "POST /batch-import".into() } else { format!("import row {index}") },
        kind: 1,
        start_time_unix_nano: now + index as u64 * 1_000,
        end_time_unix_nano: now + index as u64 * 1_000 + 500,
        attributes: vec![KeyValue { key: "import.row".into(), value: text(&"x".repeat(300)), ..Default::default() }],
        ..Default::default()
    };
    let per_record = spans.div_ceil(records);
    let payloads = (0..spans)
        .collect::<Vec<_>>()
        .chunks(per_record)
        .map(|indexes| {
            let request = tracepipe_schemas::ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource { attributes: vec![KeyValue { key: "service.name".into(), value: text("importer"), ..Default::default() }], ..Default::default() }),
                    scope_spans: vec![ScopeSpans { spans: indexes.iter().map(|&i| span(i)).collect(), ..Default::default() }],
                    ..Default::default()
                }],
            };
            request.encode_to_vec()
        })
        .collect();
    (hex::encode(&trace_id), payloads)
}

/// `tracepipe.traces` and `tracepipe.sampled` left at Kafka's 1 MB default and a trace of about
/// 2.5 MB: the assembler learns the topics' limit from the broker and cuts the trace into
/// fragments that fit, and every span reaches the store.
#[test]
fn a_trace_larger_than_a_topic_left_at_one_megabyte_arrives_in_fragments_that_fit() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("large.db");
    let one_megabyte = "config: { max.message.bytes: 1048588 }";
    let cluster = Cluster::start_with(|yaml| {
        storing_every_trace(yaml, &format!("sqlite://{}", store.display()))
            .replace("config: { max.message.bytes: 10485760 }", one_megabyte)
    });
    let path = cluster.topology_path.clone();
    let processes: Vec<Process> = ["router", "assembler", "sampler", "sink"].iter().map(|p| spawn(&cluster, p, &path)).collect();
    processes[1].wait_for_log("partitions assigned", Duration::from_secs(60));
    let (trace_id, payloads) = enormous_trace(7_000, 8);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let records: Vec<(Option<&[u8]>, &[u8])> = payloads.iter().map(|p| (None, p.as_slice())).collect();
    support::produce_raw(&cluster.brokers(), "otlp_spans", &records);
    let expected = BTreeMap::from([(trace_id.clone(), 7_000u32)]);
    let took = wait_until_stored(&store, &expected, &processes.iter().collect::<Vec<_>>());
    let assembler_log = processes[1].log_text();
    let fitted = assembler_log.lines().find(|line| line.contains("traces are cut into fragments")).unwrap_or("").to_string();
    let dead_letters = assembler_log.matches("sent to the dead-letter topic").count();
    eprintln!("a trace of 7000 spans in {bytes} bytes of OTLP, topics at 1 MB: all 7000 spans stored {took:.1?} after it was sent; dead letters from the assembler: {dead_letters}\n  {fitted}");
    assert!(!fitted.is_empty(), "the assembler did not fit its traces to the topics:\n{assembler_log}");
}

/// A record batch no client can read (zstd by its attributes, garbage inside) in one partition,
/// behind records that can: the router goes on routing the other partitions, says once that it
/// cannot read it, reports on `/ready` which partition is stuck, and stops 30 s later with exit
/// code 3, naming the topic, partition and offset, instead of retrying in a loop with the
/// partition's lag never moving.
#[test]
fn a_batch_that_cannot_be_read_stops_the_router_naming_where_it_is() {
    let cluster = Cluster::start();
    let admin_port = free_port();
    let mut router = cluster.spawn_with_admin("router", admin_port);
    router.wait_for_log("partitions assigned", Duration::from_secs(60));
    // Records before the batch: where the router reads them first, the batch holds the
    // partition after them; where one fetch brings both, at the first of them.
    let before = generate(KafkaSettings::new(cluster.brokers()), None, Encoding::OtlpProto, 300);
    std::thread::sleep(Duration::from_secs(2));
    let written = python_client(&["--brokers", &cluster.brokers(), "corrupt-batch", "--topic", "otlp_spans", "--partition", "0"]);
    let truth = generate(KafkaSettings::new(cluster.brokers()), None, Encoding::OtlpProto, 2_000);
    let started = Instant::now();
    let mut not_ready = None;
    while !router.exited() {
        assert!(started.elapsed() < Duration::from_secs(120), "the router still runs:\n{}", router.log_text());
        if not_ready.is_none() {
            let (ready, states) = readiness(admin_port);
            if !ready && states.contains("otlp_spans partition 0") {
                not_ready = Some((started.elapsed(), states));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (not_ready_after, not_ready) = not_ready.unwrap_or_else(|| panic!("/ready never named the stuck partition:\n{}", router.log_text()));
    eprintln!("/ready {not_ready_after:.1?} after the batch was written: {not_ready}");
    // What the other partitions held was routed meanwhile (those behind the batch wait for it).
    let routed = support::read_routed(&cluster.brokers(), before.span_count + truth.span_count, Duration::from_secs(10));
    let code = router.terminate();
    let log = router.log_text();
    let stopped = log.lines().find(|line| line.contains("pipeline stopped")).unwrap_or("").to_string();
    eprintln!("{}; {} of {} spans of the other records routed; the router stopped (exit {code:?}) after {:.0?}:\n  {stopped}", written.trim(), routed.distinct_spans(), before.span_count + truth.span_count, started.elapsed());
    assert!(stopped.contains("records cannot be read (BadCompression)"), "{log}");
    assert!(stopped.contains("otlp_spans partition 0 at offset "), "{log}");
    assert!(not_ready.contains("otlp_spans partition 0 at offset "), "{not_ready}");
    assert_eq!(log.matches("a record cannot be read").count(), 1, "said once, not in a loop:\n{log}");
}
