//! The analyzer and the dependencies processor in process, on traces from the 30-service
//! scenario's generator with simulated time: edges and root causes against the generator's truth,
//! anomaly and error-spike detection with driven time, and bad structure.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use tracepipe::loadgen::{GeneratedTrace, MessageEncoder, Scenario, TraceGenerator};
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_dependencies::{Dependencies, DependenciesConfig, DependenciesOutputs};
use tracepipe_runtime::{Emitter, OutputId, Processor};
use tracepipe_schemas::attributes;
use tracepipe_schemas::otlp_resource::Resource;
use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span, Status};
use tracepipe_schemas::v1::AssembledTrace;
use tracepipe_schemas::Encoding;

const SCENARIO: &str = include_str!("scenarios/large.yaml");
const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_764_000_000 * SECOND;
const ROLLUPS: OutputId = OutputId(0);
const ALERTS: OutputId = OutputId(1);

fn scenario(edit: impl FnOnce(&mut Scenario)) -> Scenario {
    let mut scenario = Scenario::from_yaml(SCENARIO).unwrap();
    edit(&mut scenario);
    scenario
}

/// Hand-made spans as an assembled trace, grouped by service as an SDK exports them.
fn assembled(trace_id: [u8; 16], spans: Vec<(String, Span)>) -> Vec<u8> {
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for (service, span) in spans {
        by_service.entry(service).or_default().push(span);
    }
    AssembledTrace {
        trace_id: trace_id.to_vec(),
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource { attributes: vec![attributes::string("service.name", service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn payload(generator: &TraceGenerator, trace: &GeneratedTrace) -> Vec<u8> {
    MessageEncoder::new(Encoding::OtlpProto, generator.scenario(), generator.services()).assembled(trace)
}

fn analyzer(edit: impl FnOnce(&mut AnalyzerConfig)) -> Analyzer {
    let mut config = AnalyzerConfig::default();
    edit(&mut config);
    Analyzer::new(config, AnalyzerOutputs { rollups: ROLLUPS, alerts: ALERTS })
}

fn json_records(out: &Emitter, output: OutputId) -> Vec<serde_json::Value> {
    out.records().filter(|(o, _, _)| *o == output).map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect()
}

/// Plays `seconds` of traffic at `traces_per_second` through the analyzer in simulated time,
/// ticking every half second; returns every record it emitted.
fn play(analyzer: &mut Analyzer, generator: &mut TraceGenerator, seconds: u64, traces_per_second: u64) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut out = Emitter::default();
    let (mut rollups, mut alerts) = (Vec::new(), Vec::new());
    let step = SECOND / traces_per_second;
    let mut now = START;
    let mut next_tick = START;
    while now < START + seconds * SECOND {
        let elapsed = (now - START) as f64 / SECOND as f64;
        let trace = generator.generate(now, elapsed);
        tracepipe_analyzer::testing::analyze(analyzer, &payload(generator, &trace), now + 3 * SECOND, &mut out).unwrap();
        now += step;
        if now >= next_tick {
            analyzer.on_tick(now + 3 * SECOND, &mut out);
            next_tick += SECOND / 2;
        }
        rollups.extend(json_records(&out, ROLLUPS));
        alerts.extend(json_records(&out, ALERTS));
        out.clear();
    }
    analyzer.drain(now, &mut out);
    rollups.extend(json_records(&out, ROLLUPS));
    alerts.extend(json_records(&out, ALERTS));
    (rollups, alerts)
}

#[test]
fn dependency_edges_are_exactly_the_generators() {
    let mut generator = TraceGenerator::new(scenario(|_| {}));
    let mut dependencies = Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
    for i in 0..5_000 {
        let trace = generator.generate(START + i * 1_000_000, 0.0);
        tracepipe_dependencies::testing::analyze(&mut dependencies, &payload(&generator, &trace), START).unwrap();
    }
    let connection_type = |kind: &str| match kind {
        "messaging" => "messaging_system",
        "database" => "database",
        "external" => "virtual_node",
        _ => "",
    };
    let truth: BTreeSet<(String, String, String)> = generator.edges.iter().map(|e| (e.client.clone(), e.server.clone(), connection_type(&e.kind).to_string())).collect();
    let found: BTreeSet<(String, String, String)> = tracepipe_dependencies::testing::edges(&dependencies).into_iter().map(|(c, s, t, _)| (c, s, t)).collect();
    assert_eq!(found, truth);
    let mut out = Emitter::default();
    dependencies.drain(START, &mut out);
    let windows = json_records(&out, OutputId(0));
    assert_eq!(windows.len(), truth.len(), "one window per edge");
    assert!(windows.iter().all(|w| w["schema"] == "tracepipe.edge/v1" && w["calls"].as_u64().unwrap() > 0));
}

#[test]
fn root_causes_are_the_generators() {
    // Every operation fails now and then, so many traces have several error spans.
    let mut generator = TraceGenerator::new(scenario(|s| {
        for service in s.services.values_mut() {
            for operation in service.operations.values_mut() {
                operation.error_rate = operation.error_rate.max(0.02);
            }
        }
    }));
    let mut analyzer = analyzer(|_| {});
    let mut out = Emitter::default();
    let mut truth = BTreeMap::new();
    for i in 0..5_000 {
        let trace = generator.generate(START + i * 1_000_000, 0.0);
        if let Some(cause) = trace.root_cause {
            truth.insert(hex::encode(trace.trace_id), hex::encode(cause));
        }
        tracepipe_analyzer::testing::analyze(&mut analyzer, &payload(&generator, &trace), START, &mut out).unwrap();
    }
    let found: BTreeMap<String, String> = json_records(&out, ROLLUPS)
        .into_iter()
        .filter(|r| r["kind"] == "error_trace")
        .map(|r| (r["trace_id"].as_str().unwrap().to_string(), r["root_cause_span_id"].as_str().unwrap().to_string()))
        .collect();
    let right = truth.iter().filter(|(t, s)| found.get(*t) == Some(s)).count();
    let accuracy = right as f64 / truth.len() as f64;
    eprintln!("root cause: {right} of {} failed traces attributed to the true span ({:.2}%)", truth.len(), accuracy * 100.0);
    assert!(truth.len() > 500);
    assert!(accuracy >= 0.99);
    assert_eq!(found.len(), truth.len(), "every failed trace and only those");
}

#[test]
fn a_latency_fault_raises_one_alert_naming_the_faulted_operation() {
    let mut generator = TraceGenerator::new(scenario(|s| {
        s.faults[0].after_s = 90.0;
        s.faults[0].latency_ms = 150.0;
    }));
    let mut analyzer = analyzer(|_| {});
    let (_, alerts) = play(&mut analyzer, &mut generator, 150, 100);
    let firing: Vec<_> = alerts.iter().filter(|a| a["state"] == "firing").collect();
    assert!(!firing.is_empty(), "no alert");
    eprintln!("{:#}", firing[0]);
    for alert in &firing {
        eprintln!("{}", alert["summary"]);
        assert_eq!(alert["kind"], "latency_anomaly");
        assert_eq!(alert["details"]["root_cause"]["service"], "inventory");
        assert_eq!(alert["details"]["root_cause"]["operation"], "GET /stock");
        let opened_s = (alert["opened_unix_ms"].as_u64().unwrap() * 1_000_000 - START) as f64 / SECOND as f64;
        assert!((90.0..=120.0).contains(&opened_s), "opened {opened_s} s in, fault at 90 s");
    }
    let keys: BTreeSet<&str> = firing.iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), firing.len(), "one open alert per key");
}

#[test]
fn a_fault_free_run_raises_no_alert() {
    let mut generator = TraceGenerator::new(scenario(|s| s.faults.clear()));
    let mut analyzer = analyzer(|_| {});
    let (rollups, alerts) = play(&mut analyzer, &mut generator, 150, 100);
    assert!(alerts.is_empty(), "{alerts:#?}");
    let bottlenecks: Vec<_> = rollups.iter().filter(|r| r["kind"] == "bottlenecks").collect();
    assert!(!bottlenecks.is_empty());
    for record in bottlenecks {
        let shares: f64 = record["contributors"].as_array().unwrap().iter().map(|c| c["share"].as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-6, "critical-path shares add up to the endpoint's time: {shares}");
        let ranked: Vec<f64> = record["contributors"].as_array().unwrap().iter().map(|c| c["critical_path_ms"].as_f64().unwrap()).collect();
        assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "ranked");
    }
    let operations: Vec<_> = rollups.iter().filter(|r| r["kind"] == "operation").collect();
    assert!(operations.iter().all(|r| r["p50_ms"].as_f64() <= r["p99_ms"].as_f64() && r["count"].as_u64().unwrap() > 0));
}

#[test]
fn an_error_spike_fires_once_and_resolves() {
    let mut generator = TraceGenerator::new(scenario(|s| {
        s.faults.clear();
        let mut fault = Scenario::from_yaml(SCENARIO).unwrap().faults[0].clone();
        fault.latency_ms = 0.0;
        fault.error_rate = 0.5;
        fault.after_s = 60.0;
        s.faults.push(fault);
    }));
    let mut analyzer = analyzer(|_| {});
    let (_, alerts) = play(&mut analyzer, &mut generator, 90, 100);
    let spikes: Vec<_> = alerts.iter().filter(|a| a["kind"] == "error_spike").collect();
    assert_eq!(spikes.iter().filter(|a| a["state"] == "firing").count(), 1, "{spikes:#?}");
    let spike = spikes[0];
    assert_eq!(spike["subject"]["service"], "inventory");
    assert_eq!(spike["subject"]["operation"], "GET /stock");
    assert_eq!(spike["details"]["exception_type"], "InternalError");
    let opened_s = (spike["opened_unix_ms"].as_u64().unwrap() * 1_000_000 - START) as f64 / SECOND as f64;
    assert!((60.0..=75.0).contains(&opened_s), "{opened_s}");
}

fn span(id: u64, parent: Option<u64>, start: u64, end: u64) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: format!("op-{id}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

#[test]
fn bad_structure_is_repaired_counted_and_bounded() {
    let mut analyzer = analyzer(|c| {
        c.max_series = 1_000;
        c.max_operations_per_service = 100;
    });
    let mut dependencies = Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
    let mut out = Emitter::default();
    let mut error = span(9, Some(1), START + 50, START + 60);
    error.status = Some(Status { code: 2, message: "boom 42".into() });
    let traces = [
        // A cycle, a self-parent, a missing parent, an end before start, a child outside its parent.
        vec![span(1, Some(2), START, START + 100), span(2, Some(1), START, START + 100)],
        vec![span(3, Some(3), START, START + 10)],
        vec![span(4, Some(99), START, START + 10), span(5, None, START, START + 100), span(6, Some(5), START + 20, START + 10)],
        vec![span(7, None, START, START + 100), span(8, Some(7), START + 50, START + 500), error],
    ];
    for spans in traces {
        let bytes = assembled([1; 16], spans.into_iter().map(|s| ("svc".to_string(), s)).collect());
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, START, &mut out).unwrap();
        tracepipe_dependencies::testing::analyze(&mut dependencies, &bytes, START).unwrap();
    }
    // Garbage is a decode error (dead-lettered by the runtime), not a panic.
    assert!(tracepipe_analyzer::testing::analyze(&mut analyzer, b"\x0a\x10garbage", START, &mut out).is_err());
    assert!(tracepipe_dependencies::testing::analyze(&mut dependencies, b"\x0a\x10garbage", START).is_err());

    // A million distinct operation names: the series stay capped.
    for batch in 0..10_000u64 {
        let spans = (0..100u64).map(|i| {
            let mut s = span(batch * 100 + i + 1, None, START, START + 1_000);
            s.name = format!("GET /users/{}", batch * 100 + i);
            ("svc".to_string(), s)
        });
        let bytes = assembled([2; 16], spans.collect());
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, START, &mut out).unwrap();
        out.clear();
    }
    assert!(analyzer.series_count() <= 1_000 + 6, "{} series", analyzer.series_count());
    analyzer.drain(START, &mut out);
    let rollups = json_records(&out, ROLLUPS);
    let overflow = rollups.iter().find(|r| r["kind"] == "operation" && r["operation"] == "__overflow__").expect("an overflow series");
    assert!(overflow["count"].as_u64().unwrap() > 990_000);
}

#[test]
fn bottleneck_rollups_weigh_traces_by_their_head_sampling_probability() {
    let mut analyzer = analyzer(|_| {});
    let mut out = Emitter::default();
    for (i, probability) in [Some(0.25), Some(0.25), Some(0.5), None].into_iter().enumerate() {
        let mut root = span(1, None, START, START + 1_000);
        root.name = "GET /checkout".into();
        if let Some(p) = probability {
            root.attributes = vec![attributes::string("sampler.type", "probabilistic"), attributes::double("sampler.param", p)];
        }
        let mut child = span(2, Some(1), START + 10, START + 900);
        child.kind = 3;
        let bytes = assembled([i as u8 + 1; 16], vec![("shop".to_string(), root), ("shop".to_string(), child)]);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, START, &mut out).unwrap();
    }
    analyzer.drain(START, &mut out);
    let rollups = json_records(&out, ROLLUPS);
    let checkout = rollups.iter().find(|r| r["kind"] == "bottlenecks" && r["operation"] == "GET /checkout").expect("a bottleneck rollup");
    assert_eq!(checkout["traces"], 4);
    // 1/0.25 + 1/0.25 + 1/0.5 + 1 (no sampler.param: counted once).
    assert_eq!(checkout["adjusted_traces"], 11.0);
}

/// Checks `value` against the subset of JSON Schema the alert schema uses: type, enum, required,
/// properties, items, anyOf and local $ref.
fn conforms(root: &serde_json::Value, schema: &serde_json::Value, value: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/$defs/").expect("local reference");
        return conforms(root, &root["$defs"][name], value, at);
    }
    if let Some(options) = schema["anyOf"].as_array() {
        let errors: Vec<String> = options.iter().filter_map(|o| conforms(root, o, value, at).err()).collect();
        return if errors.len() < options.len() { Ok(()) } else { Err(format!("{at}: matches no option ({})", errors.join("; "))) };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("array") => value.is_array(),
        Some("null") => value.is_null(),
        Some(other) => panic!("type {other}"),
    };
    if !type_ok {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        if value.get(key.as_str().unwrap()).is_none() {
            return Err(format!("{at}: missing {key}"));
        }
    }
    if let (Some(properties), Value::Object(fields)) = (schema["properties"].as_object(), value) {
        for (name, field) in fields {
            if let Some(property) = properties.get(name) {
                conforms(root, property, field, &format!("{at}.{name}"))?;
            }
        }
    }
    if let (Some(items), Value::Array(elements)) = (schema.get("items"), value) {
        for (i, element) in elements.iter().enumerate() {
            conforms(root, items, element, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn every_alert_conforms_to_the_published_schema() {
    let schema: serde_json::Value = serde_json::from_str(include_str!("../schemas/json/alert.v1.schema.json")).unwrap();
    let mut alerts = Vec::new();
    let mut generator = TraceGenerator::new(scenario(|s| {
        s.faults[0].after_s = 90.0;
        let mut errors = s.faults[0].clone();
        errors.latency_ms = 0.0;
        errors.error_rate = 0.5;
        errors.after_s = 100.0;
        errors.for_s = Some(10.0);
        s.faults.push(errors);
    }));
    alerts.extend(play(&mut analyzer(|_| {}), &mut generator, 150, 100).1);
    let mut dependencies = Dependencies::new(
        DependenciesConfig { learning: std::time::Duration::from_secs(1), vanish_after: std::time::Duration::from_secs(2), ..Default::default() },
        DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) },
    );
    let mut out = Emitter::default();
    for (i, second) in [0u64, 5, 6].into_iter().enumerate() {
        let trace = TraceGenerator::new(scenario(|_| {})).generate(START, 0.0);
        let bytes = payload(&generator, &trace);
        let now = START + second * SECOND + i as u64;
        tracepipe_dependencies::testing::analyze(&mut dependencies, &bytes, now).unwrap();
        dependencies.on_tick(now + 3 * SECOND, &mut out);
    }
    alerts.extend(json_records(&out, OutputId(1)));
    let kinds: BTreeSet<&str> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains("latency_anomaly") && kinds.contains("error_spike") && kinds.contains("edge_vanished"), "{kinds:?}");
    for alert in &alerts {
        conforms(&schema, &schema, alert, "alert").unwrap_or_else(|e| panic!("{e}\n{alert:#}"));
    }
}

#[test]
fn durations_near_the_integer_limit_saturate_and_histograms_stay_bounded() {
    let mut analyzer = analyzer(|_| {});
    let mut dependencies = Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
    let mut out = Emitter::default();
    // Two spans that both claim to end at the end of time, a client and its server.
    let mut client = span(2, Some(1), START + 1, u64::MAX - 1);
    client.kind = 3;
    let mut server = span(3, Some(2), START + 2, u64::MAX);
    server.kind = 2;
    let spans = vec![("a".to_string(), span(1, None, START, u64::MAX)), ("a".to_string(), client), ("b".to_string(), server)];
    let bytes = assembled([7; 16], spans);
    for _ in 0..3 {
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, START, &mut out).unwrap();
        tracepipe_dependencies::testing::analyze(&mut dependencies, &bytes, START).unwrap();
    }
    analyzer.drain(START, &mut out);
    let rollups: Vec<tracepipe_schemas::analytics::Rollup> = out.records().filter(|(o, _, _)| *o == ROLLUPS).map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();
    let mut operations = 0;
    for rollup in &rollups {
        if let tracepipe_schemas::analytics::Rollup::Operation(r) = rollup {
            operations += r.count;
            assert!(r.sum_ms.is_finite() && r.sum_ms > 0.0);
            let bound_ms = tracepipe_analytics::latency::MAX_RECORDED_US as f64 / 1000.0;
            assert!(r.max_ms >= bound_ms && r.max_ms <= bound_ms * 1.01, "recorded at the bound (to the histogram's 1%), not past it: {}", r.max_ms);
        }
        if let tracepipe_schemas::analytics::Rollup::Bottlenecks(r) = rollup {
            assert!(r.total_ms.is_finite());
            assert!(r.contributors.iter().all(|c| c.critical_path_ms.is_finite() && c.share <= 1.0 + 1e-9));
        }
    }
    assert_eq!(operations, 9, "every span counted");
}

/// An hour of fault-free traffic read as a backlog (processing time barely moves while the
/// traces span an hour): detection slices it by the traces' own time and raises nothing. The
/// same hour with its processing time squeezed into one slice's worth would look like one huge
/// slice to detection on processing time.
#[test]
fn an_hour_of_fault_free_backlog_raises_no_alert() {
    let mut generator = TraceGenerator::new(scenario(|s| s.faults.clear()));
    let mut analyzer = analyzer(|_| {});
    let mut out = Emitter::default();
    let (hour, traces_per_second) = (3_600u64, 20u64);
    let mut alerts = Vec::new();
    let now = START + hour * SECOND;
    for i in 0..hour * traces_per_second {
        let start = START + i * SECOND / traces_per_second;
        let trace = generator.generate(start, (start - START) as f64 / SECOND as f64);
        // Read an hour later, about a thousand traces a second: the backlog is caught up in
        // about a minute of processing time.
        let read_at = now + i * SECOND / 1_000;
        tracepipe_analyzer::testing::analyze(&mut analyzer, &payload(&generator, &trace), read_at, &mut out).unwrap();
        if i % 500 == 0 {
            analyzer.on_tick(read_at, &mut out);
            alerts.extend(json_records(&out, ALERTS));
            out.clear();
        }
    }
    analyzer.drain(now, &mut out);
    alerts.extend(json_records(&out, ALERTS));
    assert!(alerts.is_empty(), "{} alerts from a fault-free hour: {:#?}", alerts.len(), alerts.iter().take(3).collect::<Vec<_>>());
}

/// Apdex classes per service against its own threshold: a failed request is frustrated however
/// fast, and calls a service makes (client spans) are not requests it serves.
#[test]
fn apdex_counts_each_request_against_its_services_threshold() {
    let mut analyzer = analyzer(|config| {
        config.apdex.default = std::time::Duration::from_millis(500);
        config.apdex.services.insert("frontend".into(), std::time::Duration::from_millis(300));
    });
    let mut out = Emitter::default();
    const MS: u64 = 1_000_000;
    // Frontend roots: 300 ms (satisfied: at most T), 301 ms and 1200 ms (tolerating: at most 4T),
    // 1201 ms (frustrated), and a failed 10 ms one (frustrated). Each calls the cart, whose
    // 500 ms server span satisfies the cart's default T.
    for (n, (duration_ms, failed)) in [(300, false), (301, false), (1200, false), (1201, false), (10, true)].into_iter().enumerate() {
        let mut root = span(1, None, START, START + duration_ms * MS);
        root.name = "GET /checkout".into();
        if failed {
            root.status = Some(Status { code: 2, ..Default::default() });
        }
        let mut client = span(2, Some(1), START + 1, START + 2 + 500 * MS);
        client.kind = 3;
        let server = span(3, Some(2), START + 1, START + 1 + 500 * MS);
        let bytes = assembled([n as u8 + 1; 16], vec![("frontend".into(), root), ("frontend".into(), client), ("cart".into(), server)]);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, START, &mut out).unwrap();
    }
    analyzer.drain(START, &mut out);
    let mut apdex = BTreeMap::new();
    for (_, _, value) in out.records().filter(|(o, _, _)| *o == ROLLUPS) {
        if let Ok(tracepipe_schemas::analytics::Rollup::Operation(r)) = serde_json::from_slice(value) {
            apdex.insert((r.service.clone(), r.span_kind.clone()), (r.count, r.apdex));
        }
    }
    use tracepipe_schemas::analytics::ApdexCounts;
    assert_eq!(apdex[&("frontend".to_string(), "SPAN_KIND_SERVER".to_string())], (5, Some(ApdexCounts { threshold_ms: 300, satisfied: 1, tolerating: 2 })));
    assert_eq!(apdex[&("frontend".to_string(), "SPAN_KIND_CLIENT".to_string())], (5, None));
    assert_eq!(apdex[&("cart".to_string(), "SPAN_KIND_SERVER".to_string())], (5, Some(ApdexCounts { threshold_ms: 500, satisfied: 5, tolerating: 0 })));
    assert_eq!(ApdexCounts { threshold_ms: 300, satisfied: 1, tolerating: 2 }.score(5), Some(0.4));
}

/// The sampler keeps exactly the traces the analyzer names as exemplars of bad SLO events, over
/// several windows of traffic on one partition, however the other rules decide.
#[test]
fn the_sampler_keeps_the_analyzers_slo_exemplars() {
    use tracepipe_sampler::{RuleKind, SamplerConfig, SamplingRule, TailSampler};
    let yaml = "
- { name: fast-roots, service: api-gateway, events: { root: true }, sli: { latency: 20ms }, objective: 99.9, window: 28d }
- { name: roots-ok, service: api-gateway, events: { root: true }, sli: { availability: true }, objective: 99.9, window: 28d }";
    let mut problems = tracepipe_processor::config::Problems::default();
    let slos: std::sync::Arc<[_]> = tracepipe_analytics::slo::validate_slos("slos", Some(serde_yaml_ng::from_str(yaml).unwrap()), &mut problems).into();
    assert!(problems.is_empty(), "{problems:?}");
    let config = AnalyzerConfig { window: std::time::Duration::from_secs(10), lateness: std::time::Duration::from_secs(3), ..Default::default() };
    let mut analyzer = Analyzer::new(config.clone(), AnalyzerOutputs { rollups: ROLLUPS, alerts: ALERTS }).with_slos(slos.clone());
    let windows = tracepipe_sampler::slo_exemplars::ExemplarWindows { window: config.window, lateness: config.lateness };
    let drop_all = SamplerConfig { rules: vec![SamplingRule { name: "none".into(), kind: RuleKind::Drop }], decision_cache: 100_000 };
    let mut sampler = TailSampler::new(drop_all, OutputId(0)).with_slo_exemplars(slos, windows);
    let mut generator = TraceGenerator::new(scenario(|_| {}));
    let (mut out, mut sampled) = (Emitter::default(), Emitter::default());
    let mut named = BTreeSet::new();
    // 40 seconds of traffic at 200 traces a second, some arriving late by up to 2 s.
    for i in 0..8_000u64 {
        let at = START + i * 5_000_000;
        let trace = generator.generate(at.saturating_sub((i % 7) * 300_000_000), 0.0);
        let bytes = payload(&generator, &trace);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &bytes, at, &mut out).unwrap();
        let record = tracepipe_runtime::InputRecord {
            source: tracepipe_runtime::SourcePartition { input: 0, partition: 0 },
            topic: "tracepipe.traces",
            offset: i as i64,
            key: None,
            payload: &bytes,
            timestamp_ms: None,
        };
        sampler.on_input(&record, at, &mut sampled).unwrap();
    }
    analyzer.drain(START + 60 * SECOND, &mut out);
    for (_, _, value) in out.records().filter(|(o, _, _)| *o == ROLLUPS) {
        if let Ok(tracepipe_schemas::analytics::Rollup::Slo(r)) = serde_json::from_slice(value) {
            named.extend(r.bad_exemplar_trace_ids);
        }
    }
    let kept: BTreeSet<String> = sampled.records().map(|(_, key, _)| hex::encode(key)).collect();
    assert!(named.len() > 20, "exemplars over several windows and segments: {}", named.len());
    assert_eq!(kept, named, "the sampler keeps exactly the named exemplars");
}
