//! A store filled the way the pipeline fills it, without Kafka: generated traces from a scenario
//! go through the analyzer and the dependencies processor (for rollups, edges and alerts) and
//! then, with every record, through the sink.

use prost::Message as _;
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_dependencies::{Dependencies, DependenciesConfig, DependenciesOutputs};
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition, UnixNanos};
use tracepipe_schemas::analytics::{Alert, AlertDetails, AlertKind, AlertState, AlertSubject, EdgeDetails, Severity, ALERT_SCHEMA};
use tracepipe_schemas::v1::AssembledTrace;
use tracepipe_schemas::Encoding;
use tracepipe_sink::{Sink, SinkConfig, SinkInput};
use tracepipe_store::{Store, StoreUrl};

pub const INPUTS: [SinkInput; 4] = [SinkInput::Traces, SinkInput::Edges, SinkInput::Rollups, SinkInput::Alerts];
const TOPICS: [&str; 4] = ["tracepipe.sampled", "tracepipe.edges", "tracepipe.rollups", "tracepipe.alerts"];

/// The SLOs the analyzer counts events of: the shop's checkout availability and product latency.
pub const SLOS: &str = "
- { name: checkout-availability, service: frontend, description: Checkouts that do not fail, events: { root: true, operation: GET /checkout }, sli: { availability: true }, objective: 99.5, window: 28d }
- { name: product-latency, service: frontend, events: { root: true, operation: GET /product }, sli: { latency: 8ms }, objective: 99, window: 28d }
";

pub fn slos() -> std::sync::Arc<[tracepipe_analytics::slo::SloSpec]> {
    let mut problems = tracepipe_processor::config::Problems::default();
    let slos = tracepipe_analytics::slo::validate_slos("slos", Some(serde_yaml_ng::from_str(SLOS).unwrap()), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    slos.into()
}

/// topology.yaml's business transactions and funnels, which the demo shop's scenario feeds.
pub fn transactions_and_funnels() -> (std::sync::Arc<[tracepipe_analytics::transactions::TransactionSpec]>, std::sync::Arc<[tracepipe_analytics::transactions::FunnelSpec]>) {
    let topology: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology.yaml")).unwrap()).unwrap();
    let mut problems = tracepipe_processor::config::Problems::default();
    let transactions = tracepipe_analytics::transactions::validate_transactions("transactions", topology.get("transactions").cloned(), &mut problems);
    let funnels = tracepipe_analytics::transactions::validate_funnels("funnels", topology.get("funnels").cloned(), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!transactions.is_empty() && !funnels.is_empty());
    (transactions.into(), funnels.into())
}

/// The generator [`records`] draws its traces from for `start_ns`: other times, other traces.
pub fn generator(scenario: &str, start_ns: u64) -> TraceGenerator {
    let mut scenario = Scenario::from_yaml(scenario).unwrap();
    scenario.seed ^= start_ns;
    TraceGenerator::new(scenario)
}

/// The `traces` traces [`records`] generates for `start_ns`, and the generator's ground truth after them.
pub fn generated(scenario: &str, traces: usize, start_ns: u64) -> (Vec<tracepipe::loadgen::GeneratedTrace>, TraceGenerator) {
    let mut generator = generator(scenario, start_ns);
    let traces = (0..traces).map(|i| generator.generate(start_ns + i as u64 * 20_000_000, i as f64 * 0.02)).collect();
    (traces, generator)
}

/// One record for the sink: (input index, payload).
pub type SinkRecord = (u16, Vec<u8>);

/// `traces` generated traces of `scenario` (the same ones for the same start) starting at `start_ns`, 20 ms apart, as the sink's
/// input records: every trace (sampled by rule `test`), then the rollups and edge windows the
/// analyzer, the funnels processor and the dependencies processor made of them (the funnels'
/// journeys closed by the clock an hour on), then one alert that fired and resolved.
pub fn records(scenario: &str, traces: usize, start_ns: u64) -> (Vec<SinkRecord>, Vec<[u8; 16]>) {
    let mut generator = generator(scenario, start_ns);
    let encoder = MessageEncoder::new(Encoding::OtlpProto, generator.scenario(), generator.services());
    let (transactions, funnels) = transactions_and_funnels();
    let funnel_steps = OutputId(2);
    let mut analyzer = Analyzer::new(AnalyzerConfig::default(), AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) })
        .with_slos(slos())
        .with_transactions(transactions)
        .with_funnels(funnels.clone(), funnel_steps);
    let mut join = tracepipe_funnels::FunnelJoin::new(funnels, tracepipe_funnels::FunnelsConfig::default(), OutputId(0));
    let mut journeys_out = Emitter::default();
    let mut dependencies = Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
    let mut out = Emitter::default();
    let mut records = Vec::new();
    let mut ids = Vec::new();
    let mut now = start_ns;
    for i in 0..traces {
        now = start_ns + i as u64 * 20_000_000;
        let trace = generator.generate(now, i as f64 * 0.02);
        let payload = encoder.assembled(&trace);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &payload, now, &mut out).unwrap();
        tracepipe_dependencies::testing::analyze(&mut dependencies, &payload, now).unwrap();
        let mut sampled = AssembledTrace::decode(payload.as_slice()).unwrap();
        sampled.sampling_rule = "test".into();
        sampled.adjusted_count = 1.0;
        records.push((0, sampled.encode_to_vec()));
        ids.push(trace.trace_id);
    }
    analyzer.drain(now, &mut out);
    let steps: Vec<Vec<u8>> = out.records().filter(|(output, _, _)| *output == funnel_steps).map(|(_, _, value)| value.to_vec()).collect();
    for (offset, payload) in steps.iter().enumerate() {
        let input = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.funnel-steps", offset: offset as i64, key: None, payload, timestamp_ms: None };
        join.on_input(&input, now, &mut journeys_out).unwrap();
    }
    join.on_tick(now + 3_600_000_000_000, &mut journeys_out);
    let mut edges_out = Emitter::default();
    dependencies.drain(now, &mut edges_out);
    for (output, _, value) in out.records().filter(|(output, _, _)| *output != funnel_steps) {
        records.push((if output == OutputId(0) { 2 } else { 3 }, value.to_vec()));
    }
    for (_, _, value) in journeys_out.records() {
        records.push((2, value.to_vec()));
    }
    for (output, _, value) in edges_out.records() {
        records.push((if output == OutputId(0) { 1 } else { 3 }, value.to_vec()));
    }
    let (first_ms, last_ms) = (start_ns / 1_000_000, now / 1_000_000);
    for (state, at) in [(AlertState::Firing, first_ms), (AlertState::Resolved, last_ms)] {
        let alert = Alert {
            schema: ALERT_SCHEMA.into(),
            key: "edge_appeared/frontend/cart".into(),
            id: format!("test-alert-{start_ns}"),
            kind: AlertKind::EdgeAppeared,
            state,
            severity: Severity::Info,
            source: "dependencies".into(),
            opened_unix_ms: first_ms,
            event_unix_ms: at,
            summary: "new edge frontend → cart".into(),
            subject: AlertSubject::Edge { client: "frontend".into(), server: "cart".into(), connection_type: String::new() },
            details: AlertDetails::Edge(EdgeDetails { calls: 5, first_seen_unix_ms: first_ms, last_seen_unix_ms: first_ms }),
        };
        records.push((3, serde_json::to_vec(&alert).unwrap()));
    }
    (records, ids)
}

/// Feeds `records` to `sink` as if read from partition 0 of each input, offsets from `first_offset`.
pub fn feed(sink: &mut Sink, records: &[SinkRecord], first_offset: i64, now: UnixNanos) {
    let mut out = Emitter::default();
    for (i, (input, payload)) in records.iter().enumerate() {
        let record = InputRecord {
            source: SourcePartition { input: *input, partition: 0 },
            topic: TOPICS[usize::from(*input)],
            offset: first_offset + i as i64,
            key: None,
            payload,
            timestamp_ms: None,
        };
        sink.on_input(&record, now, &mut out).unwrap();
    }
    sink.flush(now).unwrap();
}

pub fn sink(url: &StoreUrl, config: SinkConfig) -> Sink {
    Sink::new(config, Store::open(url).unwrap(), INPUTS.to_vec())
}

pub fn count(store: &mut Store, table: &str) -> i64 {
    store.query(&format!("SELECT COUNT(*) FROM {table}"), &[]).unwrap()[0][0].int()
}
