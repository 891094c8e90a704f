//! Derived data is exact in the store whatever happens on the way: the analyzer and the
//! dependencies processor are fed the same partitioned input (with unreadable records among it)
//! in any interleaving and chunking, their outputs and dead letters acknowledged in any order,
//! crash at any point (outputs not yet acknowledged are lost or delivered, at random), restart
//! from the positions the pipeline's offset protocol would have committed, and replay; the sink
//! stores what was delivered. The store must end up with the same rollups and edge windows as one
//! clean run, and its totals must equal the input's.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_dependencies::{Dependencies, DependenciesConfig, DependenciesOutputs};
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_schemas::analytics::Rollup;
use tracepipe_schemas::Encoding;
use tracepipe_sink::{Sink, SinkConfig, SinkInput};
use tracepipe_store::{Store, StoreUrl};

const SCENARIO: &str = include_str!("scenarios/small.yaml");
const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_764_000_000 * SECOND;
const PARTITIONS: usize = 3;

/// One input record: its payload and the timestamp the assembler's producer gave it.
struct Record {
    payload: Vec<u8>,
    timestamp_ms: i64,
}

/// `traces` traces over about `traces × 50 ms`, spread over the partitions; one in twenty
/// arrives 20 to 90 s after it started (a trace the assembler held for long), the rest a few
/// seconds after they start. Returns the partitions and the spans per (service, operation).
fn input(traces: usize, seed: u64) -> (Vec<Vec<Record>>, BTreeMap<(String, String), u64>) {
    let mut scenario = Scenario::from_yaml(SCENARIO).unwrap();
    scenario.seed = seed;
    let mut generator = TraceGenerator::new(scenario);
    let encoder = MessageEncoder::new(Encoding::OtlpProto, generator.scenario(), generator.services());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut partitions: Vec<Vec<(u64, Record)>> = (0..PARTITIONS).map(|_| Vec::new()).collect();
    let mut spans = BTreeMap::new();
    for i in 0..traces {
        let start = START + i as u64 * 50_000_000;
        let trace = generator.generate(start, i as f64 * 0.05);
        for (service, span) in &trace.spans {
            *spans.entry((generator.service_of(*service).to_string(), span.name.clone())).or_insert(0) += 1;
        }
        let delay = if rng.u8(0..20) == 0 { rng.u64(20..90) * SECOND } else { rng.u64(2..5) * SECOND };
        let emitted = start + delay;
        let record = Record { payload: encoder.assembled(&trace), timestamp_ms: (emitted / 1_000_000) as i64 };
        let partition = rng.usize(0..PARTITIONS);
        partitions[partition].push((emitted, record));
        // Now and then a record no processor can read: it goes to the dead-letter topic.
        if rng.u8(0..25) == 0 {
            partitions[partition].push((emitted, Record { payload: b"\x0a\x10not a trace".to_vec(), timestamp_ms: (emitted / 1_000_000) as i64 }));
        }
    }
    // A partition holds its records in the order the assembler emitted them.
    let partitions = partitions
        .into_iter()
        .map(|mut records| {
            records.sort_by_key(|(emitted, _)| *emitted);
            records.into_iter().map(|(_, record)| record).collect()
        })
        .collect();
    (partitions, spans)
}

/// What a dead letter is sent to, in this model.
const DEAD_LETTER: OutputId = OutputId(99);

/// A processor's output in flight: its bytes and the input offset it holds, if any.
struct InFlight {
    value: Vec<u8>,
    output: OutputId,
    hold: Option<(usize, i64)>,
    /// Acknowledged long after the others.
    slow: bool,
}

/// The analyzer and the dependencies processor run over `partitions` as the pipeline runs them,
/// crashing `crashes` times; what they deliver goes to the returned store.
fn run(partitions: &[Vec<Record>], seed: u64, crashes: usize) -> Store {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sink = Sink::new(SinkConfig::default(), Store::open(&StoreUrl::Sqlite(":memory:".into())).unwrap(), vec![SinkInput::Rollups, SinkInput::Edges]);
    let mut sink_offset = 0i64;
    let mut deliver = |sink: &mut Sink, input: u16, value: &[u8]| {
        let topic = if input == 0 { "tracepipe.rollups" } else { "tracepipe.edges" };
        let record = InputRecord { source: SourcePartition { input, partition: 0 }, topic, offset: sink_offset, key: None, payload: value, timestamp_ms: None };
        sink_offset += 1;
        sink.on_input(&record, START, &mut Emitter::default()).unwrap();
    };
    let total: usize = partitions.iter().map(Vec::len).sum();
    let crash_points: Vec<usize> = (0..crashes).map(|_| rng.usize(0..total.max(1))).collect();
    let mut committed = vec![0i64; PARTITIONS];
    let mut processed = 0usize;
    loop {
        // One incarnation of both processors, reading from the committed positions.
        // Short windows, so the input spans many segments.
        let (window, lateness) = (std::time::Duration::from_secs(5), std::time::Duration::from_secs(2));
        let mut analyzer = Analyzer::new(AnalyzerConfig { window, lateness, ..AnalyzerConfig::default() }, AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) });
        let mut dependencies = Dependencies::new(DependenciesConfig { window, lateness, ..DependenciesConfig::default() }, DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
        let mut next = committed.clone();
        // Outputs not yet acknowledged, per processor (0 analyzer, 1 dependencies).
        let mut in_flight: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
        let mut now = START;
        let crash_at = crash_points.iter().copied().filter(|&p| p > processed).min();
        let finished = loop {
            let open: Vec<usize> = (0..PARTITIONS).filter(|&p| (next[p] as usize) < partitions[p].len()).collect();
            if open.is_empty() {
                break true;
            }
            if crash_at.is_some_and(|at| processed >= at) {
                break false;
            }
            // A chunk of one partition, as a poll returns it.
            let p = open[rng.usize(0..open.len())];
            for _ in 0..rng.usize(1..8) {
                let offset = next[p];
                let Some(record) = partitions[p].get(offset as usize) else { break };
                now += rng.u64(0..200_000_000);
                let input = InputRecord {
                    source: SourcePartition { input: 0, partition: p as i32 },
                    topic: "tracepipe.traces",
                    offset,
                    key: None,
                    payload: &record.payload,
                    timestamp_ms: Some(record.timestamp_ms),
                };
                for (i, processor) in [&mut analyzer as &mut dyn Processor, &mut dependencies].into_iter().enumerate() {
                    // As the pipeline does: the input's outputs and dead letter hold its offset,
                    // or the processor's low watermark of the partition if older.
                    let hold = processor.low_watermark(input.source).map_or(offset, |low| low.min(offset));
                    let mut out = Emitter::default();
                    out.begin_input(tracepipe_runtime::SourceOffset { source: input.source, offset: hold }, tracepipe_runtime::trace_context::TraceContext::child_of(None));
                    if processor.on_input(&input, now, &mut out).is_err() {
                        in_flight[i].push(InFlight { value: Vec::new(), output: DEAD_LETTER, hold: Some((p, hold)), slow: rng.u8(0..4) == 0 });
                    }
                    out.end_input();
                    if rng.u8(0..4) == 0 {
                        processor.on_tick(now, &mut out);
                    }
                    collect(&out, &mut in_flight[i], &mut rng);
                }
                next[p] = offset + 1;
                processed += 1;
            }
            // Acknowledgements arrive in any order, a few of them long after the others (a retried
            // delivery); then, sometimes, a commit.
            for (i, flight) in in_flight.iter_mut().enumerate() {
                let mut k = 0;
                while k < flight.len() {
                    let acked = if flight[k].slow { rng.u8(0..40) == 0 } else { rng.bool() };
                    if !acked {
                        k += 1;
                        continue;
                    }
                    let output = flight.swap_remove(k);
                    if output.output == OutputId(0) {
                        deliver(&mut sink, i as u16, &output.value);
                    }
                }
            }
            if rng.bool() {
                for p in 0..PARTITIONS {
                    let mut position = next[p];
                    for (i, processor) in [&analyzer as &dyn Processor, &dependencies].into_iter().enumerate() {
                        let source = SourcePartition { input: 0, partition: p as i32 };
                        if let Some(low) = processor.low_watermark(source) {
                            position = position.min(low);
                        }
                        for output in &in_flight[i] {
                            if let Some((hp, ho)) = output.hold {
                                if hp == p {
                                    position = position.min(ho);
                                }
                            }
                        }
                    }
                    assert!(position >= committed[p], "a commit never goes back");
                    committed[p] = position;
                }
            }
        };
        if finished {
            // Shutdown: what is held goes out and is delivered.
            let mut out = Emitter::default();
            analyzer.drain(now, &mut out);
            collect(&out, &mut in_flight[0], &mut rng);
            let mut out = Emitter::default();
            dependencies.drain(now, &mut out);
            collect(&out, &mut in_flight[1], &mut rng);
            for (i, flight) in in_flight.iter_mut().enumerate() {
                for output in flight.drain(..) {
                    if output.output == OutputId(0) {
                        deliver(&mut sink, i as u16, &output.value);
                    }
                }
            }
            sink.flush(now).unwrap();
            return sink.into_store();
        }
        // A crash: some unacknowledged outputs made it to the broker, the rest are lost.
        for (i, flight) in in_flight.iter_mut().enumerate() {
            for output in flight.drain(..) {
                if output.output == OutputId(0) && rng.bool() {
                    deliver(&mut sink, i as u16, &output.value);
                }
            }
        }
        sink.flush(now).unwrap();
    }
}

fn collect(out: &Emitter, flight: &mut Vec<InFlight>, rng: &mut fastrand::Rng) {
    for record in out.emitted() {
        let hold = record.hold.map(|h| (h.source.partition as usize, h.offset));
        flight.push(InFlight { value: out.value(record).to_vec(), output: record.output, hold, slow: rng.u8(0..20) == 0 });
    }
}

/// Every stored rollup and edge window: (key, body).
fn contents(store: &mut Store) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for table in ["rollups", "edges"] {
        for row in store.query(&format!("SELECT record_key, body FROM {table} ORDER BY record_key"), &[]).unwrap() {
            rows.push((row[0].text().to_string(), row[1].text().to_string()));
        }
    }
    rows
}

/// Spans per (service, operation) in the stored operation rollups.
fn stored_spans(store: &mut Store) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    for row in store.query("SELECT body FROM rollups WHERE kind = 'operation'", &[]).unwrap() {
        if let Rollup::Operation(r) = serde_json::from_str(row[0].text()).unwrap() {
            *totals.entry((r.service, r.operation)).or_insert(0) += r.count;
        }
    }
    totals
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn crashes_replays_and_chunking_change_nothing_in_the_store(seed in any::<u64>(), crashes in 0usize..4) {
        let (partitions, spans) = input(400, seed % 1000);
        let mut clean = run(&partitions, seed.rotate_left(17), 0);
        let mut disturbed = run(&partitions, seed, crashes);
        prop_assert_eq!(stored_spans(&mut clean), spans.clone(), "one clean run counts every span once");
        prop_assert_eq!(stored_spans(&mut disturbed), spans, "so does one with crashes and replays");
        prop_assert_eq!(contents(&mut clean), contents(&mut disturbed));
    }
}
