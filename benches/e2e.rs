//! End-to-end benchmark against a real Kafka-protocol broker (Tansu), in one run on the same
//! broker and topic: raw consume of otlp_spans (nothing decoded) beside the router's throughput.
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
    let cluster = Cluster::start();
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
    let consumed_series = "tracepipe_consumed_messages_total{processor=\"router\",topic=\"otlp_spans\"}";
    let in_flight_series = "tracepipe_in_flight_outputs{processor=\"router\"}";
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    loop {
        let text = metrics(admin);
        if first.is_none() && metric_value(&text, consumed_series) > 0.0 {
            first = Some(Instant::now());
        }
        if metric_value(&text, routed_series) >= truth.span_count as f64 && metric_value(&text, in_flight_series) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "router did not finish:\n{}", router.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let routed = first.unwrap().elapsed();
    let router_rate = truth.span_count as f64 / routed.as_secs_f64();
    println!(
        "router      {:>9} spans, acknowledged       {:>7.2}s  {:>10.0} spans/s",
        truth.span_count, routed.as_secs_f64(), router_rate
    );
    println!("router / raw consume: {:.0}%", 100.0 * router_rate / raw_rate);
}
