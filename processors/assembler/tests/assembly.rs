//! The assembler as a state machine, with driven time and no broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use prost::Message;
use tracepipe_assembler::{AssemblerConfig, TraceAssembler};
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
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
        let input = InputRecord { source: P0, topic: "tracepipe.spans", offset: self.offset, key: None, payload, timestamp_ms: None };
        self.offset += 1;
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

/// One step of an arbitrary run: a record of some spans of one trace, then time passing.
#[derive(Debug, Clone)]
struct Step {
    trace: u8,
    spans: Vec<(u8, bool)>,
    advance_ms: u64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (1u8..6, proptest::collection::vec((0u8..12, any::<bool>()), 1..5), 0u64..4000)
        .prop_map(|(trace, spans, advance_ms)| Step { trace, spans, advance_ms });
    proptest::collection::vec(step, 1..60)
}

proptest! {
    #[test]
    fn every_span_is_emitted_exactly_once_and_traces_never_merge(steps in steps(), budget in prop_oneof![Just(1usize << 30), Just(4_000usize)]) {
        let config = AssemblerConfig { memory_budget_bytes: budget, max_spans: 8, ..Default::default() };
        let mut h = Harness::new(config);
        let mut now = 0;
        let mut sent: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
        for step in &steps {
            let spans: Vec<(u8, Option<u8>)> = step.spans.iter().map(|&(id, root)| (id, (!root).then_some(200))).collect();
            h.feed(&record(step.trace, &spans), now);
            sent.entry(step.trace).or_default().extend(step.spans.iter().map(|(id, _)| *id));
            now += step.advance_ms * 1_000_000;
            h.tick(now);
        }
        h.tick(now + 3600 * SECOND);
        prop_assert_eq!(h.assembler.open_traces(), 0);
        prop_assert_eq!(h.assembler.buffered_bytes(), 0);
        let mut received: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut fragments: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for trace in &h.emitted {
            let id = trace.trace_id[0];
            for span in trace.spans() {
                prop_assert_eq!(&span.trace_id, &trace.trace_id, "a trace never holds another's span");
            }
            received.entry(id).or_default().extend(span_ids(trace));
            fragments.entry(id).or_default().push(trace.fragment);
        }
        for (trace, ids) in &sent {
            let mut got = received.get(trace).cloned().unwrap_or_default();
            got.sort();
            let unique: BTreeSet<u8> = got.iter().copied().collect();
            // Within a trace's open window duplicates are dropped; after it, a repeated id is a late span.
            prop_assert_eq!(&unique, ids, "every span of trace {} is emitted", trace);
            let numbers = &fragments[trace];
            prop_assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "fragments are numbered in order: {:?}", numbers);
        }
    }
}

#[test]
fn kafka_buffers_follow_the_budget_unless_set() {
    let config = AssemblerConfig { memory_budget_bytes: 32 << 20, ..Default::default() };
    let mut kafka = tracepipe_runtime::KafkaSettings::new("localhost:9092");
    kafka.producer.insert("queue.buffering.max.kbytes".into(), "512".into());
    config.bound_kafka_buffers(&mut kafka);
    assert_eq!(kafka.consumer["queued.max.messages.kbytes"], "2048");
    assert_eq!(kafka.consumer["fetch.max.bytes"], (2048 * 1024).to_string());
    assert_eq!(kafka.producer["queue.buffering.max.kbytes"], "512", "an explicit setting wins");
}
