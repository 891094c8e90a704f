//! The Rust example shop (examples/shop_*.rs), instrumented with `tracepipe-instrument`: a request
//! to the frontend, its HTTP call to the orders service, and the `orders.placed` event that comes
//! back over Kafka come out of the router and assembler as one trace across both services and the
//! Kafka hop.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{free_port, http_get, read_traces, repo_path, Cluster, Process};

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

#[test]
fn a_request_is_one_trace_across_the_http_call_and_the_kafka_hop() {
    let cluster = Cluster::start_with(|yaml| yaml.replace("  tracepipe.spans:", "  orders.placed:    { partitions: 3, replication: 1 }\n  tracepipe.spans:"));
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let (orders_port, frontend_port) = (free_port(), free_port());
    let mut orders = start_service(&cluster, "shop_orders", orders_port, &[]);
    let mut frontend = start_service(&cluster, "shop_frontend", frontend_port, &[("ORDERS_URL", format!("http://127.0.0.1:{orders_port}"))]);
    for item in 0..REQUESTS {
        let response = http_get(frontend_port, &format!("/checkout/{item}"));
        assert!(response.contains(" 200 "), "{response}\n{}", frontend.log_text());
    }
    // Let the consumer process the events, then stop both: SIGTERM drains and flushes telemetry.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(frontend.terminate(), Some(0), "{}", frontend.log_text());
    assert_eq!(orders.terminate(), Some(0), "{}", orders.log_text());

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
        assert!(trace.spans.iter().any(|s| s.name == "confirm order" && s.parent_span_id == consumer.span_id));
        joined += 1;
    }
    assert_eq!(joined, REQUESTS);
}
