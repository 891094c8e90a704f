//! The router against a real Kafka-protocol broker (Tansu): zero loss in every encoding, through
//! SIGKILL, a rebalance and a broker restart; poison messages to the DLQ.

mod support;

use std::time::Duration;

use prost::Message;
use support::{loadgen, produce_raw, read_dead_letters, read_routed, Cluster};
use tracepipe::loadgen::Limits;
use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use tracepipe_schemas::{Encoding, ExportTraceServiceRequest};

const SPANS: u64 = 100_000;
const READ_TIMEOUT: Duration = Duration::from_secs(240);

fn routes_without_loss(encoding: Encoding) {
    let cluster = Cluster::start();
    let router = cluster.spawn("router");
    let truth = cluster.loadgen(encoding, SPANS, 0.0);
    let routed = read_routed(&cluster.brokers(), truth.span_count, READ_TIMEOUT);
    routed.assert_complete(&truth);
    eprintln!("{encoding}: {} spans in {} messages routed as {} records, {} duplicates", truth.span_count, truth.message_count, routed.records, routed.duplicates());
    drop(router);
}

#[test]
fn otlp_proto_routes_100k_spans_without_loss() {
    routes_without_loss(Encoding::OtlpProto);
}

#[test]
fn otlp_json_routes_100k_spans_without_loss() {
    routes_without_loss(Encoding::OtlpJson);
}

#[test]
fn jaeger_proto_routes_100k_spans_without_loss() {
    routes_without_loss(Encoding::JaegerProto);
}

#[test]
fn zipkin_json_routes_100k_spans_without_loss() {
    routes_without_loss(Encoding::ZipkinJson);
}

/// Load runs for ~5 s in the background while the test does something disruptive.
fn background_load(cluster: &Cluster) -> std::thread::JoinHandle<tracepipe::loadgen::GroundTruth> {
    let brokers = cluster.brokers();
    std::thread::spawn(move || {
        loadgen(&brokers, "tests/scenarios/small.yaml", Encoding::OtlpProto, Limits { spans: Some(SPANS), ..Default::default() }, 20_000.0)
    })
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let cluster = Cluster::start();
    let mut router = cluster.spawn("router");
    router.wait_for_log("partitions assigned", Duration::from_secs(60));
    let load = background_load(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    router.kill();
    std::thread::sleep(support::SESSION_EXPIRY);
    let restarted = cluster.spawn("router");
    let truth = load.join().unwrap();
    let routed = read_routed(&cluster.brokers(), truth.span_count, READ_TIMEOUT);
    routed.assert_complete(&truth);
    eprintln!("sigkill: {} spans, {} duplicates replayed after the kill", truth.span_count, routed.duplicates());
    drop(restarted);
}

#[test]
fn second_router_joining_mid_stream_loses_nothing() {
    let cluster = Cluster::start();
    let first = cluster.spawn("router");
    first.wait_for_log("partitions assigned", Duration::from_secs(60));
    let load = background_load(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    let second = cluster.spawn("router");
    let truth = load.join().unwrap();
    let routed = read_routed(&cluster.brokers(), truth.span_count, READ_TIMEOUT);
    routed.assert_complete(&truth);
    second.wait_for_log("partitions assigned", Duration::from_secs(60));
    assert!(first.log_text().contains("partitions revoked"), "the first router gave partitions up");
    eprintln!("rebalance: {} spans, {} duplicates", truth.span_count, routed.duplicates());
}

#[test]
fn broker_restart_loses_nothing() {
    let mut cluster = Cluster::start_persistent();
    let router = cluster.spawn("router");
    router.wait_for_log("partitions assigned", Duration::from_secs(60));
    let load = background_load(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    cluster.tansu.restart();
    let truth = load.join().unwrap();
    let routed = read_routed(&cluster.brokers(), truth.span_count, READ_TIMEOUT);
    routed.assert_complete(&truth);
    eprintln!("broker restart: {} spans, {} duplicates", truth.span_count, routed.duplicates());
}

fn otlp(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }] }.encode_to_vec()
}

fn span(trace: u8, id: u8) -> Span {
    Span { trace_id: vec![trace; 16], span_id: vec![id; 8], name: "op".into(), ..Default::default() }
}

#[test]
fn poison_goes_to_the_dlq_with_reasons_and_the_stream_continues() {
    let cluster = Cluster::start();
    let mut router = cluster.spawn("router");
    let mut zero_trace = span(9, 9);
    zero_trace.trace_id = vec![0; 16];
    let records = [
        (None, otlp(vec![span(1, 1)])),
        (Some(&b"k"[..]), b"\x0a\xff\xff\xff\x0fgarbage".to_vec()),
        (None, otlp(vec![zero_trace, span(2, 1)])),
        (None, otlp(vec![span(3, 1)])),
    ];
    let records: Vec<(Option<&[u8]>, &[u8])> = records.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    produce_raw(&cluster.brokers(), "otlp_spans", &records);

    let dead = read_dead_letters(&cluster.brokers(), 2, Duration::from_secs(90));
    assert_eq!(dead.len(), 2);
    // The two land on different partitions of the DLQ topic (one has a key, one has none), so
    // they are told apart by what they say, not by the order they are read in.
    let of_kind = |kind: &str| dead.iter().find(|d| d.headers["tracepipe.dlq.kind"] == kind).unwrap_or_else(|| panic!("no {kind} record in the DLQ"));
    let garbage = of_kind("decode");
    assert_eq!(garbage.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(garbage.value, records[1].1);
    assert_eq!(garbage.headers["tracepipe.dlq.processor"], "router");
    assert_eq!(garbage.headers["tracepipe.dlq.kind"], "decode");
    assert!(garbage.headers["tracepipe.dlq.reason"].starts_with("otlp_proto: invalid protobuf"), "{}", garbage.headers["tracepipe.dlq.reason"]);
    assert_eq!(garbage.headers["tracepipe.dlq.source.topic"], "otlp_spans");
    assert_eq!(garbage.headers["tracepipe.dlq.source.partition"], "0");
    assert_eq!(garbage.headers["tracepipe.dlq.source.offset"], "1");
    assert!(garbage.headers.contains_key("traceparent"));
    let partial = of_kind("rejected_spans");
    assert_eq!(partial.headers["tracepipe.dlq.reason"], "otlp_proto: 1 spans rejected: all-zero trace id (1)");
    assert_eq!(partial.headers["tracepipe.dlq.source.offset"], "2");

    let routed = read_routed(&cluster.brokers(), 3, Duration::from_secs(60));
    assert_eq!(routed.distinct_spans(), 3, "the valid spans before, among and after the poison are routed");
    assert_eq!(router.terminate(), Some(0), "drains and exits cleanly");
}
