//! The Rust example shop (examples/shop_*.rs), instrumented with `tracepipe-instrument`: a request
//! to the frontend, its HTTP call to the orders service, and the `orders.placed` event that comes
//! back over Kafka come out of the router and assembler as one trace across both services and the
//! Kafka hop; and the frontend, sampling adaptively, takes its probability from the query
//! server and records it, so the analyzer counts the traffic it did not keep.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{free_port, http_get, read_traces, repo_path, stored, Cluster, Process};
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_runtime::{Emitter, OutputId, Processor};
use tracepipe_schemas::analytics::{BottleneckRollup, Rollup, ROLLUP_SCHEMA};
use tracepipe_schemas::trace_view::TraceView;
use tracepipe_sink::SinkConfig;
use tracepipe_store::{Store, StoreUrl};

const REQUESTS: usize = 20;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

pub fn example_binary(name: &str) -> PathBuf {
    let path = repo_path(&format!("target/debug/examples/{name}"));
    assert!(path.exists(), "{} is missing; `cargo test` builds the examples", path.display());
    path
}

fn start_service(cluster: &Cluster, name: &str, port: u16, env: &[(&str, String)]) -> Process {
    let mut env = env.to_vec();
    env.push(("PORT", port.to_string()));
    env.push(("KAFKA_BROKERS", cluster.brokers()));
    let process = Process::spawn_program_with_env(example_binary(name).to_str().unwrap(), &[], cluster.tansu.dir.path(), name, &env);
    support::wait_for_port(port, &process);
    process
}

/// Tansu with an `orders.placed` topic, a router and an assembler.
fn shop_cluster() -> (Cluster, Process, Process) {
    let cluster = Cluster::start_with(|yaml| yaml.replace("  tracepipe.spans:", "  orders.placed:    { partitions: 3, replication: 1 }\n  tracepipe.spans:"));
    let router = cluster.spawn("router");
    let assembler = cluster.spawn("assembler");
    (cluster, router, assembler)
}

/// `requests` checkouts through the frontend; then, once the consumer had time for the events,
/// SIGTERM to both services, which drains and flushes their telemetry.
fn checkout_then_stop(requests: usize, frontend_port: u16, frontend: &mut Process, orders: &mut Process) {
    for item in 0..requests {
        let response = http_get(frontend_port, &format!("/checkout/{item}"));
        assert!(response.contains(" 200 "), "{response}\n{}", frontend.log_text());
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(frontend.terminate(), Some(0), "{}", frontend.log_text());
    assert_eq!(orders.terminate(), Some(0), "{}", orders.log_text());
}

#[test]
fn a_request_is_one_trace_across_the_http_call_and_the_kafka_hop() {
    let (cluster, _router, _assembler) = shop_cluster();
    let (orders_port, frontend_port) = (free_port(), free_port());
    // The orders service writes a record per export batch (the default), the frontend one per
    // trace: the router assembles a trace from both.
    let mut orders = start_service(&cluster, "shop_orders", orders_port, &[]);
    let mut frontend = start_service(&cluster, "shop_frontend", frontend_port, &[("ORDERS_URL", format!("http://127.0.0.1:{orders_port}")), ("TRACEPIPE_SPANS_RECORDS", "per-trace".into())]);
    let orders_pid = orders.pid();
    checkout_then_stop(REQUESTS, frontend_port, &mut frontend, &mut orders);

    let complete = |t: &support::TraceRecord| t.spans.iter().any(|s| s.kind == CONSUMER);
    let traces = read_traces(&cluster.brokers(), "tracepipe.traces", Duration::from_secs(90), |traces| traces.iter().filter(|t| complete(t)).count() >= REQUESTS);
    let mut joined = 0;
    for trace in traces.iter().filter(|t| complete(t)) {
        let find = |service: &str, kind: i32| trace.spans.iter().find(|s| s.service == service && s.kind == kind).unwrap_or_else(|| panic!("no {service} span of kind {kind} in {:?}", trace.spans));
        let root = find("frontend", SERVER);
        let client = find("frontend", CLIENT);
        let orders_server = find("orders", SERVER);
        let producer = find("orders", PRODUCER);
        let consumer = find("frontend", CONSUMER);
        assert!(root.parent_span_id.is_empty() && root.name == "GET /checkout/{item}", "{root:?}");
        assert_eq!(client.parent_span_id, root.span_id);
        assert_eq!(orders_server.parent_span_id, client.span_id, "the HTTP call carries the context");
        assert_eq!(orders_server.name, "POST /orders");
        assert_eq!(producer.parent_span_id, orders_server.span_id);
        assert_eq!(producer.name, "send orders.placed");
        assert_eq!(consumer.parent_span_id, producer.span_id, "the Kafka hop carries the context");
        assert_eq!(consumer.links.iter().map(|(_, span)| span.clone()).collect::<Vec<_>>(), vec![producer.span_id.clone()], "the consumer span links to the producer span");
        let confirm = trace.spans.iter().find(|s| s.name == "confirm order").expect("the service's own span");
        assert_eq!(confirm.parent_span_id, consumer.span_id, "the service's span nests under the consumer span");
        assert_eq!(confirm.attributes.get("order.id"), consumer.attributes.get("messaging.kafka.message.key"), "the order id, as text");
        // The messaging conventions' attributes, on both sides of the hop.
        for span in [producer, consumer] {
            let attribute = |key: &str| span.attributes.get(key).cloned().unwrap_or_else(|| panic!("{} has no {key}: {:?}", span.name, span.attributes));
            assert_eq!(attribute("messaging.system"), "kafka");
            assert_eq!(attribute("messaging.destination.name"), "orders.placed");
            assert!(attribute("messaging.kafka.message.key").ends_with(&format!("-{orders_pid}")), "the order id is the key");
            assert_eq!(attribute("messaging.destination.partition.id"), producer.attributes["messaging.destination.partition.id"]);
            assert_eq!(attribute("messaging.kafka.offset"), producer.attributes["messaging.kafka.offset"], "where it was stored is where it was read");
        }
        assert_eq!(producer.attributes["messaging.operation.type"], "send");
        assert_eq!(consumer.attributes["messaging.operation.type"], "process");
        assert_eq!(consumer.attributes["messaging.consumer.group.name"], "shop-frontend");
        joined += 1;
    }
    assert_eq!(joined, REQUESTS);
}

/// The reference profile (a SQLite catalog, pricing, JSON pages) traced by the standard
/// OpenTelemetry Rust stack the instrumentation benches compare with (`INSTRUMENT=otel`:
/// `tracing-opentelemetry`, the SDK's batch processor, `opentelemetry-otlp` over OTLP/HTTP to
/// tracepipe's gateway): the same request is one trace across the HTTP call and the Kafka hop,
/// with the orders service's database span, so both stacks record the same spans.
#[test]
fn the_reference_shop_traced_by_the_standard_stack_through_the_gateway_is_one_trace() {
    let (cluster, _router, _assembler) = shop_cluster();
    let gateway = support::Gateway::start(&cluster);
    let (orders_port, frontend_port) = (free_port(), free_port());
    let standard = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("INSTRUMENT", "otel".to_string()),
            ("SHOP_PROFILE", "reference".to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", gateway.http)),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
        ];
        env.extend(extra);
        env
    };
    let mut orders = start_service(&cluster, "shop_orders", orders_port, &standard(vec![]));
    let mut frontend = start_service(&cluster, "shop_frontend", frontend_port, &standard(vec![("ORDERS_URL", format!("http://127.0.0.1:{orders_port}"))]));
    let page = support::http_body(&http_get(frontend_port, "/checkout/lamp")).to_string();
    let page: serde_json::Value = serde_json::from_str(&page).unwrap_or_else(|e| panic!("{e}: {page}"));
    assert!(page["lines"].as_array().is_some_and(|lines| lines.len() == 24), "a priced order of the catalog's lines: {page}");
    assert!(page["recommendations"].as_array().is_some_and(|names| names.len() > 5), "its best lines and related products: {page}");
    checkout_then_stop(REQUESTS - 1, frontend_port, &mut frontend, &mut orders);

    let complete = |t: &support::TraceRecord| t.spans.iter().any(|s| s.kind == CONSUMER) && t.spans.iter().any(|s| s.service == "frontend" && s.kind == SERVER);
    let traces = read_traces(&cluster.brokers(), "tracepipe.traces", Duration::from_secs(90), |traces| traces.iter().filter(|t| complete(t)).count() >= REQUESTS);
    let mut joined = 0;
    for trace in traces.iter().filter(|t| complete(t)) {
        let find = |service: &str, name: &str| trace.spans.iter().find(|s| s.service == service && s.name == name).unwrap_or_else(|| panic!("no {service} span {name:?} in {:?}", trace.spans));
        let root = find("frontend", "GET /checkout/{item}");
        let client = find("frontend", "POST");
        let orders_server = find("orders", "POST /orders");
        let query = find("orders", "SELECT products");
        let producer = find("orders", "send orders.placed");
        let consumer = find("frontend", "process orders.placed");
        let confirm = find("frontend", "confirm order");
        assert!(root.parent_span_id.is_empty() && root.kind == SERVER, "{root:?}");
        assert_eq!((&client.parent_span_id, client.kind), (&root.span_id, CLIENT));
        assert_eq!(orders_server.parent_span_id, client.span_id, "the HTTP call carries the context");
        assert_eq!((&query.parent_span_id, query.attributes.get("db.system.name").map(String::as_str)), (&orders_server.span_id, Some("sqlite")));
        assert_eq!((&producer.parent_span_id, producer.kind), (&orders_server.span_id, PRODUCER));
        assert_eq!((&consumer.parent_span_id, consumer.kind), (&producer.span_id, CONSUMER), "the Kafka hop carries the context");
        assert_eq!(confirm.parent_span_id, consumer.span_id);
        assert_eq!(consumer.links.iter().map(|(_, span)| span.clone()).collect::<Vec<_>>(), vec![producer.span_id.clone()], "the consumer span links to the producer span");
        // The same attributes as tracepipe-instrument's spans carry, so the benches compare like
        // with like.
        for span in [producer, consumer] {
            for key in ["messaging.system", "messaging.destination.name", "messaging.operation.name", "messaging.kafka.message.key", "messaging.message.body.size"] {
                assert!(span.attributes.contains_key(key), "{} has no {key}: {:?}", span.name, span.attributes);
            }
            assert_eq!(span.attributes.get("messaging.destination.partition.id"), producer.attributes.get("messaging.destination.partition.id"));
            assert_eq!(span.attributes.get("messaging.kafka.offset"), producer.attributes.get("messaging.kafka.offset"), "where it was stored is where it was read");
        }
        assert!(client.attributes.contains_key("server.port") && client.attributes.contains_key("server.address"), "{:?}", client.attributes);
        assert!(!root.attributes.contains_key("code.file.path") && !root.attributes.contains_key("thread.id") && !root.attributes.contains_key("busy_ns"), "{:?}", root.attributes);
        assert_eq!(trace.spans.len(), 7, "{:?}", trace.spans);
        joined += 1;
    }
    assert_eq!(joined, REQUESTS);
}

/// A query server whose store says `GET /checkout/{item}` started 4 traces/s last minute, all
/// kept: toward 1 trace/s it serves probability 0.25.
fn query_server_with_observed_traffic(dir: &std::path::Path) -> (u16, tokio::runtime::Runtime) {
    let url = StoreUrl::Sqlite(dir.join("tracepipe.db"));
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let rollup = Rollup::Bottlenecks(BottleneckRollup {
        schema: ROLLUP_SCHEMA.into(),
        window_start_unix_ms: (now_ms / 60_000 - 2) * 60_000,
        window_seconds: 60,
        service: "frontend".into(),
        operation: "GET /checkout/{item}".into(),
        traces: 240,
        adjusted_traces: Some(240.0),
        total_ms: 2_400.0,
        contributors: Vec::new(),
        counted_in: None,
        span_kind: None,
    });
    let mut sink = stored::sink(&url, SinkConfig::default());
    stored::feed(&mut sink, &[(2, serde_json::to_vec(&rollup).unwrap())], 0, now_ms * 1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _guard = runtime.enter();
    tracepipe_query::serve_on(listener, Store::open(&url).unwrap(), Default::default(), tokio_util::sync::CancellationToken::new());
    (port, runtime)
}

#[test]
fn adaptive_sampling_follows_the_query_server_and_the_analyzer_counts_what_was_not_kept() {
    const SAMPLED_REQUESTS: usize = 200;
    let (cluster, _router, _assembler) = shop_cluster();
    let (query_port, _query_runtime) = query_server_with_observed_traffic(cluster.tansu.dir.path());
    let (orders_port, frontend_port) = (free_port(), free_port());
    let mut orders = start_service(&cluster, "shop_orders", orders_port, &[]);
    // Until its first answer the sampler keeps nothing, so every kept trace was decided by it.
    let remote = [
        ("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote".to_string()),
        ("OTEL_TRACES_SAMPLER_ARG", format!("endpoint=http://127.0.0.1:{query_port}/api/sampling,pollingIntervalMs=200,initialSamplingRate=0")),
        ("ORDERS_URL", format!("http://127.0.0.1:{orders_port}")),
    ];
    let mut frontend = start_service(&cluster, "shop_frontend", frontend_port, &remote);
    std::thread::sleep(Duration::from_secs(2));
    checkout_then_stop(SAMPLED_REQUESTS, frontend_port, &mut frontend, &mut orders);

    let complete = |t: &support::TraceRecord| t.spans.iter().any(|s| s.kind == CONSUMER);
    let traces = read_traces(&cluster.brokers(), "tracepipe.traces", Duration::from_secs(60), |traces| traces.iter().any(|t| complete(t)));
    let first_emissions: Vec<_> = traces.iter().filter(|t| t.fragment == 0).collect();
    // Binomial(200, 0.25): 50 expected, 20 to 90 is five standard deviations either way.
    assert!((20..=90).contains(&first_emissions.len()), "{} of {SAMPLED_REQUESTS} traces kept at probability 0.25", first_emissions.len());
    let mut analyzer = Analyzer::new(AnalyzerConfig::default(), AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) });
    let mut out = Emitter::default();
    for trace in &first_emissions {
        let view = TraceView::parse(&trace.payload).unwrap();
        let root = view.spans.iter().find(|s| s.parent_span_id.is_none()).expect("a root");
        assert_eq!((root.name, root.head_sampling_probability), ("GET /checkout/{item}", Some(0.25)), "the root records the probability it was kept with");
        tracepipe_analyzer::testing::analyze(&mut analyzer, &trace.payload, 0, &mut out).unwrap();
    }
    analyzer.drain(u64::MAX / 2, &mut out);
    let adjusted: f64 = out
        .records()
        .filter_map(|(_, _, value)| match serde_json::from_slice(value) {
            Ok(Rollup::Bottlenecks(r)) if r.operation == "GET /checkout/{item}" => r.adjusted_traces,
            _ => None,
        })
        .sum();
    assert_eq!(adjusted, first_emissions.len() as f64 * 4.0, "each kept trace stands for four started");
    eprintln!("adaptive sampling: {} of {SAMPLED_REQUESTS} traces kept at 0.25; the analyzer estimates {adjusted} started", first_emissions.len());
}
