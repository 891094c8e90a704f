//! End-to-end benchmark against a real Kafka-protocol broker (Tansu), in one run on the same
//! broker and topic: raw consume of otlp_spans (nothing decoded) beside the router's throughput,
//! then the assembler and sampler on what the router produced, then the analyzer and the
//! dependencies processor on the assembled backlog.
//! `TRACEPIPE_BENCH_SPANS` sets the load (default 1 000 000 spans).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::{free_port, metric_value, metrics, Cluster};
use tracepipe_runtime::KafkaSettings;
use tracepipe_schemas::Encoding;

fn raw_consume(brokers: &str, topic: &str, messages: u64) -> (Duration, u64) {
    let consumer: BaseConsumer = KafkaSettings::new(brokers).consumer_config("tracepipe-bench-raw", "tracepipe-bench").create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..metadata.topics()[0].partitions().len() {
        list.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let (mut seen, mut bytes, mut first) = (0u64, 0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < messages && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            first.get_or_insert_with(Instant::now);
            seen += 1;
            bytes += message.payload().map_or(0, |p| p.len() as u64);
        }
    }
    assert_eq!(seen, messages, "raw consume saw every message");
    (first.unwrap().elapsed(), bytes)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let spans: u64 = std::env::var("TRACEPIPE_BENCH_SPANS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let cluster = Cluster::start_batched();
    let started = Instant::now();
    let truth = cluster.loadgen(Encoding::OtlpProto, spans, 0.0);
    let produce = started.elapsed();
    println!(
        "loadgen     {:>9} spans in {:>6} messages  {:>7.2}s  {:>10.0} spans/s",
        truth.span_count, truth.message_count, produce.as_secs_f64(), truth.span_count as f64 / produce.as_secs_f64()
    );

    let (raw, bytes) = raw_consume(&cluster.brokers(), "otlp_spans", truth.message_count);
    let raw_rate = truth.span_count as f64 / raw.as_secs_f64();
    println!(
        "raw consume {:>9} spans                     {:>7.2}s  {:>10.0} spans/s  {:>7.1} MB/s",
        truth.span_count, raw.as_secs_f64(), raw_rate, bytes as f64 / raw.as_secs_f64() / 1e6
    );

    let admin = free_port();
    let router = cluster.spawn_with_admin("router", admin);
    let routed_series = "tracepipe_router_routed_spans_total{encoding=\"otlp_proto\"}";
    let routed = measure(&router, admin, "tracepipe_consumed_messages_total{processor=\"router\",topic=\"otlp_spans\"}", |m| {
        metric_value(m, routed_series) >= truth.span_count as f64 && metric_value(m, "tracepipe_in_flight_outputs{processor=\"router\"}") == 0.0
    });
    let router_rate = truth.span_count as f64 / routed.as_secs_f64();
    println!("router      {:>9} spans, acknowledged       {:>7.2}s  {:>10.0} spans/s", truth.span_count, routed.as_secs_f64(), router_rate);
    println!("router / raw consume: {:.0}%", 100.0 * router_rate / raw_rate);

    // The assembler and sampler then take the routed backlog; the assembler's rate is measured
    // on its input side (completion waits a grace period by design), the sampler's by decisions.
    let assembler_admin = free_port();
    let assembler = cluster.spawn_with_admin("assembler", assembler_admin);
    let sampler_admin = free_port();
    let sampler = cluster.spawn_with_admin("sampler", sampler_admin);
    let assembled = measure(&assembler, assembler_admin, "tracepipe_assembler_spans_total", |m| {
        metric_value(m, "tracepipe_assembler_spans_total") >= truth.span_count as f64
    });
    let assembler_rate = truth.span_count as f64 / assembled.as_secs_f64();
    println!("assembler   {:>9} spans taken              {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)", truth.span_count, assembled.as_secs_f64(), assembler_rate, 100.0 * assembler_rate / raw_rate);
    let sampled = measure(&sampler, sampler_admin, "tracepipe_consumed_messages_total{processor=\"sampler\",topic=\"tracepipe.traces\"}", |m| {
        let decided: f64 = m.lines().filter(|l| l.starts_with("tracepipe_sampler_decisions_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
        decided >= truth.trace_count as f64
    });
    let sampler_rate = truth.trace_count as f64 / sampled.as_secs_f64();
    println!(
        "sampler     {:>9} traces decided            {:>7.2}s  {:>10.0} traces/s ({:.0} spans/s)",
        truth.trace_count,
        sampled.as_secs_f64(),
        sampler_rate,
        sampler_rate * truth.span_count as f64 / truth.trace_count as f64
    );

    // Every trace is in tracepipe.traces now: the analyzer and the dependencies processor read
    // that backlog at their own speed.
    let analyzer_admin = free_port();
    let analyzer = cluster.spawn_with_admin("analyzer", analyzer_admin);
    let analyzed = measure(&analyzer, analyzer_admin, "tracepipe_analyzer_spans_total", |m| metric_value(m, "tracepipe_analyzer_spans_total") >= truth.span_count as f64);
    let analyzer_rate = truth.span_count as f64 / analyzed.as_secs_f64();
    println!("analyzer    {:>9} spans analyzed           {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)", truth.span_count, analyzed.as_secs_f64(), analyzer_rate, 100.0 * analyzer_rate / raw_rate);
    drop(analyzer);
    let dependencies_admin = free_port();
    let dependencies = cluster.spawn_with_admin("dependencies", dependencies_admin);
    let mapped = measure(&dependencies, dependencies_admin, "tracepipe_dependencies_traces_total", |m| {
        metric_value(m, "tracepipe_dependencies_traces_total") >= truth.trace_count as f64
    });
    let dependencies_rate = truth.span_count as f64 / mapped.as_secs_f64();
    println!(
        "dependencies{:>9} spans mapped             {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)",
        truth.span_count,
        mapped.as_secs_f64(),
        dependencies_rate,
        100.0 * dependencies_rate / raw_rate
    );
}

/// Polls a processor's /metrics from the first time `started` is non-zero until `done`.
fn measure(process: &support::Process, admin: u16, started: &str, done: impl Fn(&str) -> bool) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    loop {
        let text = metrics(admin);
        if first.is_none() && metric_value(&text, started) > 0.0 {
            first = Some(Instant::now());
        }
        if first.is_some() && done(&text) {
            return first.unwrap().elapsed();
        }
        assert!(Instant::now() < deadline, "did not finish:\n{}", process.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}
