//! End-to-end benchmark against a real Kafka-protocol broker (Tansu), in one run on the same
//! broker and topic: raw consume of otlp_spans (nothing decoded), then router → assembler →
//! sampler running together on the same backlog (each stage timed from its first record to its
//! last, and the whole from the router's first record to the sampler's last decision), then the
//! analyzer and the dependencies processor on the assembled backlog.
//! `TRACEPIPE_BENCH_SPANS` sets the load (default 1 000 000 spans).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::{free_port, metric_value, metrics, Cluster};
use tracepipe_runtime::KafkaSettings;
use tracepipe_schemas::Encoding;

/// Reads `topic` from the beginning, decoding nothing: `expected` records when the count is
/// known, else everything until nothing arrives for [`QUIET`] (a partition's watermarks are not a
/// record count on every broker: Tansu's advance by batch). Returns the time from the first
/// record to the last, the records and their bytes.
fn raw_consume(brokers: &str, topic: &str, expected: Option<u64>) -> (Duration, u64, u64) {
    let consumer: BaseConsumer = KafkaSettings::new(brokers).consumer_config("tracepipe-bench-raw", "tracepipe-bench").create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..metadata.topics()[0].partitions().len() {
        list.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let (mut seen, mut bytes, mut first, mut last) = (0u64, 0u64, None, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(600);
    while expected.is_none_or(|expected| seen < expected) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                use rdkafka::Message;
                last = Instant::now();
                first.get_or_insert(last);
                seen += 1;
                bytes += message.payload().map_or(0, |p| p.len() as u64);
            }
            _ if expected.is_none() && first.is_some() && last.elapsed() >= QUIET => break,
            _ => {}
        }
    }
    if let Some(expected) = expected {
        assert_eq!(seen, expected, "raw consume saw every message");
    }
    (last.duration_since(first.expect("the topic holds records")), seen, bytes)
}

/// How long a topic of unknown size must stay silent for its raw read to be over.
const QUIET: Duration = Duration::from_secs(3);

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

    let (raw, _, bytes) = raw_consume(&cluster.brokers(), "otlp_spans", Some(truth.message_count));
    let raw_rate = truth.span_count as f64 / raw.as_secs_f64();
    println!(
        "raw consume {:>9} spans                     {:>7.2}s  {:>10.0} spans/s  {:>7.1} MB/s",
        truth.span_count, raw.as_secs_f64(), raw_rate, bytes as f64 / raw.as_secs_f64() / 1e6
    );

    // Router, assembler and sampler together, as deployed: each stage's rate from its first
    // record to its last, and the pipeline's from the router's first record to the sampler's
    // last decision (which includes the assembler's 2 s grace after the last span).
    let spans = truth.span_count as f64;
    let traces = truth.trace_count as f64;
    let stages = [
        Stage::new(&cluster, "router", "tracepipe_consumed_messages_total{processor=\"router\",topic=\"otlp_spans\"}", move |m| {
            metric_value(m, "tracepipe_router_routed_spans_total{encoding=\"otlp_proto\"}") >= spans && metric_value(m, "tracepipe_in_flight_outputs{processor=\"router\"}") == 0.0
        }),
        Stage::new(&cluster, "assembler", "tracepipe_assembler_spans_total", move |m| metric_value(m, "tracepipe_assembler_spans_total") >= spans),
        Stage::new(&cluster, "sampler", "tracepipe_consumed_messages_total{processor=\"sampler\",topic=\"tracepipe.traces\"}", move |m| {
            let decided: f64 = m.lines().filter(|l| l.starts_with("tracepipe_sampler_decisions_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
            decided >= traces
        }),
    ];
    let [router, assembler, sampler] = measure_together(stages);
    // What each stage read, consumed raw from the same broker: Kafka's cost is per record, and
    // the assembler and sampler read many small records where the router read few large ones.
    let [spans_raw, traces_raw] = ["tracepipe.spans", "tracepipe.traces"].map(|topic| {
        let (took, records, bytes) = raw_consume(&cluster.brokers(), topic, None);
        println!(
            "raw consume {:>9} records of {topic:<17} {:>7.2}s  {:>10.0} records/s  {:>7.1} MB/s",
            records,
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64(),
            bytes as f64 / took.as_secs_f64() / 1e6
        );
        took
    });
    let rate = |stage: &Timed| spans / stage.took().as_secs_f64();
    println!("router      {:>9} spans, acknowledged       {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)", truth.span_count, router.took().as_secs_f64(), rate(&router), 100.0 * rate(&router) / raw_rate);
    let of_raw = |stage: &Timed, raw: Duration| 100.0 * raw.as_secs_f64() / stage.took().as_secs_f64();
    println!(
        "assembler   {:>9} spans taken              {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume of tracepipe.spans)",
        truth.span_count,
        assembler.took().as_secs_f64(),
        rate(&assembler),
        of_raw(&assembler, spans_raw)
    );
    println!(
        "sampler     {:>9} traces decided            {:>7.2}s  {:>10.0} traces/s ({:.0} spans/s; {:.0}% of raw consume of tracepipe.traces)",
        truth.trace_count,
        sampler.took().as_secs_f64(),
        traces / sampler.took().as_secs_f64(),
        rate(&sampler),
        of_raw(&sampler, traces_raw)
    );
    let pipeline = sampler.done.duration_since(router.first);
    println!(
        "router → assembler → sampler, end to end: {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume; includes the 2 s grace)",
        pipeline.as_secs_f64(),
        spans / pipeline.as_secs_f64(),
        100.0 * spans / pipeline.as_secs_f64() / raw_rate
    );

    // Every trace is in tracepipe.traces now: the analyzer and the dependencies processor read
    // that backlog at their own speed.
    let [analyzed] = measure_together([Stage::new(&cluster, "analyzer", "tracepipe_analyzer_spans_total", move |m| metric_value(m, "tracepipe_analyzer_spans_total") >= spans)]);
    let analyzed = analyzed.took();
    let analyzer_rate = truth.span_count as f64 / analyzed.as_secs_f64();
    println!("analyzer    {:>9} spans analyzed           {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)", truth.span_count, analyzed.as_secs_f64(), analyzer_rate, 100.0 * analyzer_rate / raw_rate);
    let [mapped] = measure_together([Stage::new(&cluster, "dependencies", "tracepipe_dependencies_traces_total", move |m| {
        metric_value(m, "tracepipe_dependencies_traces_total") >= traces
    })]);
    let mapped = mapped.took();
    let dependencies_rate = truth.span_count as f64 / mapped.as_secs_f64();
    println!(
        "dependencies{:>9} spans mapped             {:>7.2}s  {:>10.0} spans/s  ({:.0}% of raw consume)",
        truth.span_count,
        mapped.as_secs_f64(),
        dependencies_rate,
        100.0 * dependencies_rate / raw_rate
    );
}

/// A processor started for the pipeline run: its admin port, the series whose first non-zero
/// value marks its first record, and when it is done.
struct Stage {
    process: support::Process,
    admin: u16,
    started: &'static str,
    done: Box<dyn Fn(&str) -> bool>,
}

impl Stage {
    fn new(cluster: &Cluster, name: &str, started: &'static str, done: impl Fn(&str) -> bool + 'static) -> Stage {
        let admin = free_port();
        Stage { process: cluster.spawn_with_admin(name, admin), admin, started, done: Box::new(done) }
    }
}

/// When a stage took its first record and finished.
struct Timed {
    first: Instant,
    done: Instant,
}

impl Timed {
    fn took(&self) -> Duration {
        self.done.duration_since(self.first)
    }
}

/// Polls every stage's /metrics until all are done.
fn measure_together<const N: usize>(stages: [Stage; N]) -> [Timed; N] {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: [Option<Instant>; N] = [None; N];
    let mut done: [Option<Instant>; N] = [None; N];
    while done.iter().any(Option::is_none) {
        for (i, stage) in stages.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let text = metrics(stage.admin);
            let now = Instant::now();
            if first[i].is_none() && metric_value(&text, stage.started) > 0.0 {
                first[i] = Some(now);
            }
            if first[i].is_some() && (stage.done)(&text) {
                done[i] = Some(now);
            }
            assert!(now < deadline, "did not finish:\n{}", stage.process.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::array::from_fn(|i| Timed { first: first[i].unwrap(), done: done[i].unwrap() })
}
