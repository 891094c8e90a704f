//! The assembler as a state machine, with driven time and no broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use prost::Message;
use tracepipe_assembler::{AssemblerConfig, TraceAssembler};
use tracepipe_processor::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use tracepipe_schemas::v1::{AssembledTrace, Completion, TraceSpans};

const SECOND: u64 = 1_000_000_000;
const P0: SourcePartition = SourcePartition { input: 0, partition: 0 };

fn record(trace: u8, spans: &[(u8, Option<u8>)]) -> Vec<u8> {
    TraceSpans {
        trace_id: vec![trace; 16],
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .map(|&(id, parent)| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![id; 8],
                        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                        name: format!("op-{id}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

struct Harness {
    assembler: TraceAssembler,
    out: Emitter,
    offset: i64,
    emitted: Vec<AssembledTrace>,
}

impl Harness {
    fn new(config: AssemblerConfig) -> Self {
        Harness { assembler: TraceAssembler::new(config, OutputId(0)), out: Emitter::default(), offset: 0, emitted: Vec::new() }
    }

    fn feed(&mut self, payload: &[u8], now: u64) {
        self.feed_at(P0, self.offset, payload, now);
        self.offset += 1;
    }

    fn feed_at(&mut self, source: SourcePartition, offset: i64, payload: &[u8], now: u64) {
        let input = InputRecord { source, topic: "tracepipe.spans", offset, key: None, payload, timestamp_ms: None };
        self.assembler.on_input(&input, now, &mut self.out).unwrap();
        self.collect();
    }

    fn tick(&mut self, now: u64) {
        self.assembler.on_tick(now, &mut self.out);
        self.collect();
    }

    fn collect(&mut self) {
        for (_, key, value) in self.out.records() {
            let trace = AssembledTrace::decode(value).unwrap();
            assert_eq!(key, trace.trace_id.as_slice());
            self.emitted.push(trace);
        }
        self.out.clear();
    }
}

fn span_ids(trace: &AssembledTrace) -> Vec<u8> {
    trace.spans().map(|s| s.span_id[0]).collect()
}

#[test]
fn root_and_grace_completes_a_trace() {
    let mut h = Harness::new(AssemblerConfig::default());
    h.feed(&record(1, &[(2, Some(1))]), 0);
    h.feed(&record(1, &[(1, None)]), SECOND / 2);
    assert_eq!(h.assembler.low_watermark(P0), Some(0));
    h.tick(2 * SECOND);
    assert!(h.emitted.is_empty(), "grace runs from the last span");
    h.tick(SECOND / 2 + 2 * SECOND);
    let trace = &h.emitted[0];
    assert_eq!(trace.completion, Completion::RootAndGrace as i32);
    assert_eq!((trace.span_count, trace.fragment, trace.truncated), (2, 0, false));
    assert_eq!(span_ids(trace), vec![2, 1]);
    assert_eq!(h.assembler.low_watermark(P0), None);
    assert_eq!(h.assembler.buffered_bytes(), 0);
}

#[test]
fn idle_timeout_without_root_and_late_fragments() {
    let mut h = Harness::new(AssemblerConfig::default());
    h.feed(&record(1, &[(2, Some(1))]), 0);
    h.tick(9 * SECOND);
    assert!(h.emitted.is_empty());
    h.tick(10 * SECOND);
    assert_eq!(h.emitted[0].completion, Completion::IdleTimeout as i32);
    h.feed(&record(1, &[(1, None)]), 11 * SECOND);
    h.tick(13 * SECOND);
    let late = &h.emitted[1];
    assert_eq!((late.fragment, late.span_count), (1, 1));
    assert_eq!(late.trace_id, vec![1; 16]);
}

#[test]
fn limits_truncate() {
    let config = AssemblerConfig { max_spans: 3, max_duration: Duration::from_secs(5), ..Default::default() };
    let mut h = Harness::new(config);
    h.feed(&record(1, &[(1, Some(9)), (2, Some(9))]), 0);
    h.feed(&record(1, &[(3, Some(9)), (4, Some(9))]), 0);
    assert_eq!(h.emitted[0].completion, Completion::MaxSpans as i32);
    assert!(h.emitted[0].truncated);
    assert_eq!(h.emitted[0].span_count, 4);
    h.feed(&record(2, &[(10, Some(9))]), 0);
    h.feed(&record(2, &[(11, Some(9))]), 4 * SECOND);
    h.tick(5 * SECOND);
    let long = h.emitted.iter().find(|t| t.trace_id == vec![2; 16]).unwrap();
    assert_eq!(long.completion, Completion::MaxDuration as i32);
    assert!(long.truncated);
}

#[test]
fn a_trace_reaching_max_trace_bytes_is_emitted_truncated_and_continues_as_a_fragment() {
    let config = AssemblerConfig { max_trace_bytes: 64 << 10, ..Default::default() };
    let mut h = Harness::new(config);
    let big = |trace: u8, ids: std::ops::Range<u8>| {
        let mut message = TraceSpans::decode(record(trace, &ids.map(|id| (id, Some(200))).collect::<Vec<_>>()).as_slice()).unwrap();
        for span in message.resource_spans[0].scope_spans[0].spans.iter_mut() {
            span.name = "x".repeat(4_000);
        }
        message.encode_to_vec()
    };
    // 20 spans of about 4 KB: past 64 KiB with the 17th.
    for id in 1..=20u8 {
        h.feed(&big(1, id..id + 1), 0);
    }
    let first = &h.emitted[0];
    assert_eq!((first.completion, first.truncated, first.fragment), (Completion::MaxBytes as i32, true, 0));
    assert_eq!(first.span_count, 17);
    h.tick(60 * SECOND);
    let rest = &h.emitted[1];
    assert_eq!((rest.fragment, rest.span_count), (1, 3), "the spans after the cut come out as the next fragment");
}

#[test]
fn duplicate_span_ids_are_dropped_and_counted() {
    let mut h = Harness::new(AssemblerConfig::default());
    h.feed(&record(1, &[(1, None), (2, Some(1))]), 0);
    h.feed(&record(1, &[(2, Some(1)), (3, Some(1)), (3, Some(1))]), 0);
    h.tick(3 * SECOND);
    let trace = &h.emitted[0];
    assert_eq!(span_ids(trace), vec![1, 2, 3]);
    assert_eq!((trace.span_count, trace.duplicate_spans), (3, 2));
}

#[test]
fn memory_budget_emits_the_costliest_traces_early() {
    let config = AssemblerConfig { memory_budget_bytes: 20_000, ..Default::default() };
    let mut h = Harness::new(config.clone());
    for trace in 1..=100u8 {
        h.feed(&record(trace, &[(1, Some(9)), (2, Some(1))]), u64::from(trace) * 1000);
        assert!(h.assembler.counted_bytes() <= config.memory_budget_bytes, "{}", h.assembler.counted_bytes());
    }
    assert!(!h.emitted.is_empty());
    assert!(h.emitted.iter().all(|t| t.completion == Completion::MemoryPressure as i32 && t.truncated));
    assert_eq!(h.emitted[0].trace_id, vec![1; 16], "oldest first when sizes are equal");
}

#[test]
fn unreadable_records_are_poison() {
    let mut assembler = TraceAssembler::new(AssemblerConfig::default(), OutputId(0));
    let mut out = Emitter::default();
    for payload in [&b"\x0a\x10short"[..], b"\xff\xff", &record(1, &[(1, None)])[..10]] {
        let input = InputRecord { source: P0, topic: "t", offset: 0, key: None, payload, timestamp_ms: None };
        assert_eq!(assembler.on_input(&input, 0, &mut out).unwrap_err().kind, "decode");
    }
}

/// A record the span view reads but protobuf refuses (a name that is not UTF-8), holding a
/// duplicate so that it must be re-encoded: poison, and the open trace is as it was.
#[test]
fn a_record_refused_while_dropping_duplicates_changes_nothing() {
    let mut h = Harness::new(AssemblerConfig::default());
    h.feed(&record(1, &[(1, None)]), 0);
    let (spans, bytes) = (h.assembler.buffered_spans(), h.assembler.buffered_bytes());
    let mut bad = record(1, &[(1, None), (2, Some(1))]);
    let at = bad.windows(4).position(|w| w == b"op-2").unwrap();
    bad[at + 3] = 0xff;
    let input = InputRecord { source: P0, topic: "tracepipe.spans", offset: 1, key: None, payload: &bad, timestamp_ms: None };
    assert_eq!(h.assembler.on_input(&input, 0, &mut h.out).unwrap_err().kind, "decode");
    assert_eq!((h.assembler.buffered_spans(), h.assembler.buffered_bytes()), (spans, bytes));
    // Span 2 was not taken, so when it comes readable it is not a duplicate.
    h.offset = 2;
    h.feed(&record(1, &[(2, Some(1))]), 0);
    h.tick(3 * SECOND);
    assert_eq!(span_ids(&h.emitted[0]), vec![1, 2]);
    assert_eq!(h.emitted[0].duplicate_spans, 0);
}

/// One step of an arbitrary run: a record with `spans` new spans of one trace (one of them a
/// root if `root`), perhaps resending an earlier span of it, then time passing.
#[derive(Debug, Clone)]
struct Step {
    trace: u8,
    spans: u8,
    root: bool,
    resend: bool,
    advance_ms: u64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (1u8..7, 1u8..4, proptest::bool::weighted(0.2), proptest::bool::weighted(0.15), 0u64..4000)
        .prop_map(|(trace, spans, root, resend, advance_ms)| Step { trace, spans, root, resend, advance_ms });
    proptest::collection::vec(step, 1..80)
}

/// A fed record, as the partition log holds it.
struct Logged {
    partition: i32,
    offset: i64,
    trace: u8,
    span_ids: Vec<u8>,
    payload: Vec<u8>,
}

/// Runs `steps` through an assembler whose input is spread over three partitions (a trace
/// always on the same one, as keying by trace id does). With `crash_at`, the assembler is
/// replaced at that step by a fresh one that replays each partition from its low watermark, as
/// a restart after SIGKILL does. Checks after every step that no partition's watermark is past a
/// record holding a span not yet emitted.
fn run(steps: &[Step], config: AssemblerConfig, crash_at: Option<usize>) -> Result<(Harness, Vec<Logged>), TestCaseError> {
    let mut h = Harness::new(config.clone());
    let mut now = 0;
    let mut next_id: BTreeMap<u8, u8> = BTreeMap::new();
    let mut log: Vec<Logged> = Vec::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        if crash_at == Some(i) {
            let mut fresh = Harness::new(config.clone());
            fresh.emitted = std::mem::take(&mut h.emitted);
            for record in &log {
                let source = SourcePartition { input: 0, partition: record.partition };
                // Nothing held: everything up to the partition's last record was committed.
                let committed = h.assembler.low_watermark(source).unwrap_or(last_offset[&record.partition] + 1);
                if record.offset >= committed {
                    fresh.feed_at(source, record.offset, &record.payload, now);
                }
            }
            h = fresh;
        }
        let first = *next_id.entry(step.trace).or_insert(1);
        let mut spans: Vec<(u8, Option<u8>)> = (0..step.spans).map(|k| (first + k, Some(200))).collect();
        if step.root {
            spans[0].1 = None;
        }
        if step.resend && first > 1 {
            spans.push((first - 1, Some(200)));
        }
        next_id.insert(step.trace, first + step.spans);
        let partition = i32::from(step.trace % 3);
        let offset = *last_offset.entry(partition).and_modify(|o| *o += 1).or_insert(0);
        let payload = record(step.trace, &spans);
        let source = SourcePartition { input: 0, partition };
        h.feed_at(source, offset, &payload, now);
        log.push(Logged { partition, offset, trace: step.trace, span_ids: spans.iter().map(|s| s.0).collect(), payload });
        now += step.advance_ms * 1_000_000;
        h.tick(now);

        let emitted: BTreeSet<(u8, u8)> = h.emitted.iter().flat_map(|t| span_ids(t).into_iter().map(|id| (t.trace_id[0], id))).collect();
        for record in &log {
            if record.span_ids.iter().any(|id| !emitted.contains(&(record.trace, *id))) {
                let watermark = h.assembler.low_watermark(SourcePartition { input: 0, partition: record.partition });
                prop_assert!(
                    watermark.is_some_and(|w| w <= record.offset),
                    "partition {} offset {} holds an unemitted span but the watermark is {:?}",
                    record.partition,
                    record.offset,
                    watermark
                );
            }
        }
    }
    h.tick(now + 3600 * SECOND);
    prop_assert_eq!(h.assembler.open_traces(), 0);
    prop_assert_eq!(h.assembler.buffered_bytes(), 0);
    Ok((h, log))
}

fn budgets() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize << 30), Just(4_000usize)]
}

proptest! {
    /// Spans sent once come out exactly once, whatever the interleaving, timing and memory
    /// pressure; a resent span comes out again only as a late span after its trace was emitted.
    #[test]
    fn every_span_is_emitted_exactly_once_and_traces_never_merge(steps in steps(), budget in budgets()) {
        let config = AssemblerConfig { memory_budget_bytes: budget, max_spans: 8, ..Default::default() };
        let (h, log) = run(&steps, config, None)?;
        let resent: BTreeSet<u8> = steps.iter().filter(|s| s.resend).map(|s| s.trace).collect();
        let mut sent: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
        for record in &log {
            sent.entry(record.trace).or_default().extend(&record.span_ids);
        }
        let mut received: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut fragments: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for trace in &h.emitted {
            let id = trace.trace_id[0];
            for span in trace.spans() {
                prop_assert_eq!(&span.trace_id, &trace.trace_id, "a trace never holds another's span");
            }
            let ids = span_ids(trace);
            let unique: BTreeSet<u8> = ids.iter().copied().collect();
            prop_assert_eq!(unique.len(), ids.len(), "no span twice in one emission of trace {}", id);
            received.entry(id).or_default().extend(ids);
            fragments.entry(id).or_default().push(trace.fragment);
        }
        for (trace, ids) in &sent {
            let mut got = received.get(trace).cloned().unwrap_or_default();
            got.sort();
            if resent.contains(trace) {
                let unique: BTreeSet<u8> = got.iter().copied().collect();
                prop_assert_eq!(&unique, ids, "every span of trace {} is emitted", trace);
            } else {
                let expected: Vec<u8> = ids.iter().copied().collect();
                prop_assert_eq!(&got, &expected, "every span of trace {} is emitted exactly once", trace);
            }
            let numbers = &fragments[trace];
            prop_assert!(numbers.iter().enumerate().all(|(i, n)| *n as usize == i), "fragments are numbered 0, 1, 2, ...: {:?}", numbers);
        }
    }

    /// A crash at any step, followed by a replay from the watermarks, emits every span at least
    /// once and still never merges traces.
    #[test]
    fn a_restart_that_replays_from_the_watermark_loses_no_span(steps in steps(), budget in budgets(), crash in any::<prop::sample::Index>()) {
        let config = AssemblerConfig { memory_budget_bytes: budget, max_spans: 8, ..Default::default() };
        let (h, log) = run(&steps, config, Some(crash.index(steps.len())))?;
        let emitted: BTreeSet<(u8, u8)> = h.emitted.iter().flat_map(|t| span_ids(t).into_iter().map(|id| (t.trace_id[0], id))).collect();
        for trace in &h.emitted {
            prop_assert!(trace.spans().all(|s| s.trace_id == trace.trace_id), "a trace never holds another's span");
        }
        for record in &log {
            for id in &record.span_ids {
                prop_assert!(emitted.contains(&(record.trace, *id)), "span {} of trace {} was lost", id, record.trace);
            }
        }
    }
}

#[test]
fn kafka_buffers_follow_the_budget_unless_set() {
    let config = AssemblerConfig { memory_budget_bytes: 64 << 20, ..Default::default() };
    let mut kafka = tracepipe_runtime::KafkaSettings::new("localhost:9092");
    kafka.producer.insert("queue.buffering.max.kbytes".into(), "512".into());
    config.bound_kafka_buffers(&mut kafka.consumer, &mut kafka.producer);
    assert_eq!(kafka.consumer["queued.max.messages.kbytes"], "2048");
    assert_eq!(kafka.consumer["fetch.max.bytes"], (2048 * 1024).to_string());
    assert_eq!(kafka.producer["queue.buffering.max.kbytes"], "512", "an explicit setting wins");
}
