//! The assembler and sampler against a real Kafka-protocol broker (Tansu) with the 30-service
//! scenario and its ground truth: completeness, no loss through SIGKILL and a rebalance, and the
//! sampler keeping every error and slow trace at a 1% base rate.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{loadgen, read_traces, Cluster, TraceRecord};
use tracepipe::loadgen::{GroundTruth, Limits};
use tracepipe_schemas::v1::Completion;
use tracepipe_schemas::Encoding;

const SCENARIO: &str = "tests/scenarios/large.yaml";
const READ_TIMEOUT: Duration = Duration::from_secs(240);

fn hex_id(id: &[u8; 16]) -> String {
    hex::encode(id)
}

fn run_load(cluster: &Cluster, spans: u64, rate: f64) -> std::thread::JoinHandle<GroundTruth> {
    let brokers = cluster.brokers();
    std::thread::spawn(move || loadgen(&brokers, SCENARIO, Encoding::OtlpProto, Limits { spans: Some(spans), ..Default::default() }, rate))
}

/// Every span of the truth, by trace, as seen across all records (fragments included).
fn spans_seen(records: &[TraceRecord]) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    let mut seen: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for record in records {
        seen.entry(hex_id(&record.trace_id)).or_default().extend(record.span_ids.iter().cloned());
    }
    seen
}

fn assert_every_span_present(truth: &GroundTruth, records: &[TraceRecord]) {
    let seen = spans_seen(records);
    let missing: u64 = truth
        .traces
        .iter()
        .map(|(id, &count)| u64::from(count).saturating_sub(seen.get(id).map_or(0, |s| s.len() as u64)))
        .sum();
    assert_eq!(missing, 0, "every generated span appears in tracepipe.traces at least once");
}

fn all_spans_in(truth: &GroundTruth) -> impl Fn(&[TraceRecord]) -> bool + '_ {
    move |records| spans_seen(records).values().map(|s| s.len() as u64).sum::<u64>() >= truth.span_count
}

/// A router and an assembler on `cluster`, the assembler with its partitions.
fn router_and_assembler(cluster: &Cluster) -> (support::Process, support::Process) {
    let router = cluster.spawn("router");
    let assembler = cluster.spawn("assembler");
    assembler.wait_for_log("partitions assigned", Duration::from_secs(60));
    (router, assembler)
}

#[test]
fn assembles_at_least_999_in_1000_traces_complete() {
    let cluster = Cluster::start();
    let (_router, _assembler) = router_and_assembler(&cluster);
    let truth = run_load(&cluster, 100_000, 10_000.0).join().unwrap();
    let records = read_traces(&cluster.brokers(), "tracepipe.traces", READ_TIMEOUT, all_spans_in(&truth));
    assert_every_span_present(&truth, &records);
    let first: BTreeMap<String, &TraceRecord> = records.iter().filter(|r| r.fragment == 0).map(|r| (hex_id(&r.trace_id), r)).collect();
    let complete = truth.traces.iter().filter(|(id, &count)| first.get(*id).is_some_and(|r| r.span_ids.len() == count as usize)).count();
    let completeness = complete as f64 / truth.trace_count as f64;
    let fragments = records.iter().filter(|r| r.fragment > 0).count();
    eprintln!("completeness: {complete} of {} traces complete in their first emission ({:.3}%), {fragments} late fragments", truth.trace_count, completeness * 100.0);
    assert!(completeness >= 0.999, "completeness {completeness}");
}

/// Runs the load, disrupts the assembler with `disrupt` once traces are coming out, and checks
/// that every span made it; returns the log of the assembler `disrupt` started, if any.
fn disrupted_run(disrupt: impl FnOnce(&Cluster, &mut support::Process) -> Option<support::Process>) -> Option<String> {
    let cluster = Cluster::start();
    let (_router, mut assembler) = router_and_assembler(&cluster);
    let load = run_load(&cluster, 100_000, 10_000.0);
    // Disrupt while traces are being emitted, with more still open.
    support::wait_for_records(&cluster.brokers(), "tracepipe.traces", 1_000, Duration::from_secs(60));
    let other = disrupt(&cluster, &mut assembler);
    let truth = load.join().unwrap();
    let records = read_traces(&cluster.brokers(), "tracepipe.traces", READ_TIMEOUT, all_spans_in(&truth));
    assert_every_span_present(&truth, &records);
    let emitted: usize = records.iter().map(|r| r.span_ids.len()).sum();
    eprintln!("{} spans generated, {emitted} emitted ({} replayed)", truth.span_count, emitted as u64 - truth.span_count);
    other.map(|process| process.log_text())
}

#[test]
fn sigkill_of_the_assembler_loses_no_span() {
    disrupted_run(|cluster, assembler| {
        assembler.kill();
        std::thread::sleep(support::SESSION_EXPIRY);
        Some(cluster.spawn("assembler"))
    });
}

#[test]
fn a_second_assembler_joining_loses_no_span() {
    let log = disrupted_run(|cluster, _| Some(cluster.spawn("assembler"))).unwrap();
    // The partitions really moved: the newcomer took some of them over.
    assert!(log.lines().any(|l| l.contains("partitions assigned") && l.contains("(0, ")), "the second assembler was given partitions:\n{log}");
}

#[test]
fn keeps_every_error_and_slow_trace_at_a_one_percent_base_rate() {
    let rules = "    rules:\n      - { name: errors, type: errors }\n      - { name: slow, type: latency, threshold: 150ms }\n      - { name: baseline, type: probabilistic, rate: 0.01 }\n";
    let cluster = Cluster::start_with(|yaml| {
        let start = yaml.find("    rules:\n").unwrap();
        format!("{}{rules}", &yaml[..start])
    });
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let sampler = cluster.spawn("sampler");
    sampler.wait_for_log("partitions assigned", Duration::from_secs(60));
    let truth = run_load(&cluster, 60_000, 10_000.0).join().unwrap();
    let assembled = read_traces(&cluster.brokers(), "tracepipe.traces", READ_TIMEOUT, all_spans_in(&truth));
    let slow: BTreeSet<String> = assembled
        .iter()
        .filter(|r| r.fragment == 0 && r.root_duration_nanos.is_some_and(|d| d >= 150_000_000))
        .map(|r| hex_id(&r.trace_id))
        .collect();
    let errors: BTreeSet<String> = truth.error_traces.keys().cloned().collect();
    let wanted: BTreeSet<String> = slow.union(&errors).cloned().collect();
    let sampled = read_traces(&cluster.brokers(), "tracepipe.sampled", READ_TIMEOUT, |records| {
        let kept: BTreeSet<String> = records.iter().map(|r| hex_id(&r.trace_id)).collect();
        wanted.is_subset(&kept)
    });
    let kept: BTreeMap<String, &TraceRecord> = sampled.iter().filter(|r| r.fragment == 0).map(|r| (hex_id(&r.trace_id), r)).collect();
    let kept_errors = errors.iter().filter(|id| kept.contains_key(*id)).count();
    let kept_slow = slow.iter().filter(|id| kept.contains_key(*id)).count();
    let baseline = kept.values().filter(|r| r.sampling_rule == "baseline").count();
    eprintln!(
        "sampling: {} traces; kept {kept_errors}/{} error traces, {kept_slow}/{} slow traces, {baseline} by the 1% baseline ({} kept in all)",
        truth.trace_count,
        errors.len(),
        slow.len(),
        kept.len()
    );
    assert!(!errors.is_empty() && !slow.is_empty(), "the scenario produces errors and slow traces");
    assert_eq!(kept_errors, errors.len(), "every error trace is kept");
    assert_eq!(kept_slow, slow.len(), "every trace above the threshold is kept");
    for record in kept.values() {
        match record.sampling_rule.as_str() {
            "baseline" => assert!((record.adjusted_count - 100.0).abs() < 1e-9),
            "errors" | "slow" => assert_eq!(record.adjusted_count, 1.0),
            other => panic!("unexpected rule {other}"),
        }
    }
}

/// A 3 MB trace, sent in several requests as an SDK's batches would carry it: the router writes
/// it in payloads of at most 512 KiB, the assembler joins them and writes the whole trace as one
/// record, which the producer and the topic take.
#[test]
fn a_trace_of_megabytes_comes_out_whole() {
    use prost::Message;
    use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
    let cluster = Cluster::start();
    let (_router, _assembler) = router_and_assembler(&cluster);
    let trace_id = [0x5a; 16];
    let span = |id: u16| Span {
        trace_id: trace_id.to_vec(),
        span_id: [&[7u8; 6][..], &id.to_be_bytes()].concat(),
        parent_span_id: if id == 0 { Vec::new() } else { [&[7u8; 6][..], &0u16.to_be_bytes()].concat() },
        name: format!("step {id}"),
        start_time_unix_nano: 1_764_000_000_000_000_000,
        end_time_unix_nano: 1_764_000_000_000_000_000 + u64::from(id),
        attributes: vec![tracepipe_schemas::attributes::string("db.statement", &"x".repeat(1_500))],
        ..Default::default()
    };
    let requests: Vec<Vec<u8>> = (0..5u16)
        .map(|batch| {
            let spans = (batch * 400..(batch + 1) * 400).map(span).collect();
            tracepipe_schemas::ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }] }.encode_to_vec()
        })
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = requests.iter().map(|r| (None, r.as_slice())).collect();
    support::produce_raw(&cluster.brokers(), "otlp_spans", &records);
    let traces = read_traces(&cluster.brokers(), "tracepipe.traces", READ_TIMEOUT, |t| t.iter().map(|r| r.span_ids.len()).sum::<usize>() >= 2_000);
    assert_eq!(traces.len(), 1, "one record: {:?}", traces.iter().map(|t| (t.span_ids.len(), t.payload.len())).collect::<Vec<_>>());
    let trace = &traces[0];
    assert_eq!(trace.span_ids.len(), 2_000);
    assert_eq!(trace.completion, Completion::RootAndGrace as i32);
    assert!(trace.payload.len() > 3_000_000, "{} bytes", trace.payload.len());
}

#[test]
fn overload_at_ten_times_the_memory_budget_stays_bounded() {
    const BUDGET: u64 = 32 << 20;
    // Traces stay open for 50 s, so everything piles up unless the budget evicts. The librdkafka
    // queues are left to what the budget gives them.
    let cluster = Cluster::start_with(|yaml| {
        yaml.replace("grace: 2s", "grace: 50s")
            .replace("idle_timeout: 10s", "idle_timeout: 55s")
            .replace("memory_budget: 256MiB", "memory_budget: 32MiB")
            // Nothing here resumes from a committed offset, so producers batch as in production
            // (one record per batch would add librdkafka's per-record overhead to the measure).
            .replace("  producer: { batch.num.messages: 1 }", "  producer: {}")
    });
    let _router = cluster.spawn("router");
    let admin = support::free_port();
    let assembler = cluster.spawn_with_admin("assembler", admin);
    assembler.wait_for_log("partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let baseline = support::anonymous_rss_bytes(assembler.pid());
    // About 300 bytes of state per span: 1.1M spans is ten times the budget.
    let load = run_load(&cluster, 1_100_000, 0.0);
    let mut peak = baseline;
    let mut evicted = 0.0;
    let mut assembled = 0.0;
    let mut peak_buffered = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !load.is_finished() || assembled < 1_100_000.0 {
        assert!(std::time::Instant::now() < deadline, "assembler did not take all spans:\n{}", assembler.log_text());
        peak = peak.max(support::anonymous_rss_bytes(assembler.pid()));
        let metrics = support::metrics(admin);
        evicted = support::metric_value(&metrics, "tracepipe_assembler_evicted_traces_total");
        assembled = support::metric_value(&metrics, "tracepipe_assembler_spans_total");
        peak_buffered = peak_buffered.max(support::metric_value(&metrics, "tracepipe_assembler_buffered_bytes") as u64);
        std::thread::sleep(Duration::from_millis(100));
    }
    let truth = load.join().unwrap();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "overload: {} spans through a {} MiB budget (peak counted {} MiB); anonymous RSS {} MiB idle, {} MiB peak (+{} MiB); {evicted} traces emitted early",
        truth.span_count,
        BUDGET >> 20,
        peak_buffered >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(evicted > 0.0, "traces were emitted early under memory pressure and counted");
    assert!(peak_buffered <= BUDGET / 16 * 9, "the counted state stays within its 9/16 of the budget");
    // What the process holds beyond its idle self: the budget, and at most a fifth more.
    assert!(growth <= BUDGET + BUDGET / 5, "anonymous RSS grew by {} MiB, over the budget + 20% ({} MiB)", growth >> 20, (BUDGET + BUDGET / 5) >> 20);
    // The early emissions are flagged as such on the topic (no trace can complete otherwise
    // before its 50 s grace).
    let first = support::read_first_traces(&cluster.brokers(), "tracepipe.traces", 100, READ_TIMEOUT);
    assert_eq!(first.len(), 100);
    assert!(first.iter().all(|r| r.completion == Completion::MemoryPressure as i32 && r.truncated), "traces emitted early are marked memory_pressure and truncated");
    assert!(assembler.log_text().lines().all(|l| !l.contains("panicked")));
}
