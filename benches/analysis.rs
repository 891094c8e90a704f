//! The analyzer and the dependencies processor in spans per second, in process, on assembled
//! traces of the 30-service scenario; and the analyzer on the demo shop's traces without and with
//! the shipped topology's SLOs, business transactions and funnels, for what those cost.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_dependencies::{Dependencies, DependenciesConfig, DependenciesOutputs};
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_schemas::Encoding;

const SCENARIO: &str = include_str!("../tests/scenarios/large.yaml");
const START: u64 = 1_764_000_000_000_000_000;

/// `tracepipe.traces` records for ~`spans` spans of `scenario`, as the assembler emits them.
fn assembled_traces(scenario: &str, spans: u64) -> (Vec<Vec<u8>>, u64) {
    let scenario = Scenario::from_yaml(scenario).unwrap();
    let mut generator = TraceGenerator::new(scenario.clone());
    let encoder = MessageEncoder::new(Encoding::OtlpProto, &scenario, generator.services());
    let (mut traces, mut total) = (Vec::new(), 0);
    while total < spans {
        let trace = generator.generate(START + total * 10_000, 0.0);
        total += trace.spans.len() as u64;
        traces.push(encoder.assembled(&trace));
    }
    (traces, total)
}

fn input(payload: &[u8], offset: i64) -> InputRecord<'_> {
    InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.traces", offset, key: None, payload, timestamp_ms: None }
}

/// Feeds every trace 1 ms apart (processing time) and ticks every 500 ms, as the runtime does.
fn run(processor: &mut impl Processor, traces: &[Vec<u8>], out: &mut Emitter) {
    let mut now = START;
    for (offset, trace) in traces.iter().enumerate() {
        now += 1_000_000;
        processor.on_input(&input(trace, offset as i64), now, out).unwrap();
        if offset % 500 == 0 {
            processor.on_tick(now, out);
        }
        out.clear();
    }
}

fn analysis(c: &mut Criterion) {
    let (traces, spans) = assembled_traces(SCENARIO, 200_000);
    let bytes: usize = traces.iter().map(Vec::len).sum();
    eprintln!("{} traces, {spans} spans, {} bytes per span encoded", traces.len(), bytes as u64 / spans);
    let mut out = Emitter::default();
    let mut group = c.benchmark_group("analyzer");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("spans", |b| {
        b.iter(|| run(&mut Analyzer::new(AnalyzerConfig::default(), AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) }), &traces, &mut out))
    });
    group.finish();
    let mut group = c.benchmark_group("dependencies");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("spans", |b| {
        b.iter(|| run(&mut Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) }), &traces, &mut out))
    });
    group.finish();
}

/// The shipped topology's SLOs, transactions and funnels.
fn shipped_definitions() -> tracepipe::topology::Topology {
    tracepipe::topology::Topology::from_yaml(include_str!("../topology.yaml")).expect("the shipped topology")
}

fn shop(c: &mut Criterion) {
    let (traces, spans) = assembled_traces(include_str!("../tests/scenarios/small.yaml"), 100_000);
    let topology = shipped_definitions();
    let mut out = Emitter::default();
    let mut group = c.benchmark_group("analyzer-shop");
    group.throughput(Throughput::Elements(spans));
    let outputs = AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) };
    group.bench_function("plain", |b| b.iter(|| run(&mut Analyzer::new(AnalyzerConfig::default(), outputs), &traces, &mut out)));
    // The default analyzer splits requests into cohorts (versions, environments, feature flags);
    // without them, what that costs.
    let no_cohorts = AnalyzerConfig { cohorts: tracepipe_analyzer::cohorts::CohortConfig { attributes: Vec::new(), feature_flags: false, ..Default::default() }, ..AnalyzerConfig::default() };
    group.bench_function("plain-without-cohorts", |b| b.iter(|| run(&mut Analyzer::new(no_cohorts.clone(), outputs), &traces, &mut out)));
    group.bench_function("slos-transactions-funnels", |b| {
        b.iter(|| {
            let mut analyzer = Analyzer::new(AnalyzerConfig::default(), outputs)
                .with_slos(topology.slos.clone())
                .with_transactions(topology.transactions.clone())
                .with_funnels(topology.funnels.clone(), OutputId(2));
            run(&mut analyzer, &traces, &mut out)
        })
    });
    group.bench_function("slos", |b| b.iter(|| run(&mut Analyzer::new(AnalyzerConfig::default(), outputs).with_slos(topology.slos.clone()), &traces, &mut out)));
    group.bench_function("transactions", |b| b.iter(|| run(&mut Analyzer::new(AnalyzerConfig::default(), outputs).with_transactions(topology.transactions.clone()), &traces, &mut out)));
    group.bench_function("funnels", |b| b.iter(|| run(&mut Analyzer::new(AnalyzerConfig::default(), outputs).with_funnels(topology.funnels.clone(), OutputId(2)), &traces, &mut out)));
    group.finish();
}

criterion_group!(benches, analysis, shop);
criterion_main!(benches);
