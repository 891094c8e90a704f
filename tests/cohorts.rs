//! Cohorts in the analyzer, on the demo shop's traces with simulated time: requests per version
//! and per feature-flag variant exactly as generated, and a rollout of a 30% slower version to a
//! tenth of checkout's traffic judged worse (p < 0.01) by comparing the version cohorts, and by
//! the canary schedule over the store, which alerts.

mod support;

use std::collections::BTreeMap;

use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_analytics::compare::{compare, CompareSettings, Sample, Verdict};
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_runtime::{Emitter, OutputId, Processor};
use tracepipe_schemas::analytics::{CohortRollup, Rollup};
use tracepipe_schemas::Encoding;

const SHOP: &str = include_str!("scenarios/small.yaml");
const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_764_000_000 * SECOND;
const ROLLUPS: OutputId = OutputId(0);

/// Per (service, operation, attribute, value): latencies and errors merged over windows.
#[derive(Default)]
struct Cohort {
    latency_us: MergedHistogram,
    errors: u64,
}

fn cohort_rollups(out: &Emitter) -> Vec<CohortRollup> {
    out.records()
        .filter(|(o, _, _)| *o == ROLLUPS)
        .filter_map(|(_, _, v)| match serde_json::from_slice(v).unwrap() {
            Rollup::Cohort(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn a_slower_version_is_judged_worse_and_cohorts_count_what_was_generated() {
    let mut scenario = Scenario::from_yaml(SHOP).unwrap();
    let rollout_after_s = scenario.rollouts[0].after_s;
    assert_eq!(scenario.rollouts[0].service, "checkout");
    scenario.rate = 0.0;
    let mut generator = TraceGenerator::new(scenario);
    let encoder = MessageEncoder::new(Encoding::OtlpProto, generator.scenario(), generator.services());
    let config = AnalyzerConfig { window: std::time::Duration::from_secs(10), ..Default::default() };
    let mut analyzer = Analyzer::new(config, AnalyzerOutputs { rollups: ROLLUPS, alerts: OutputId(1) });
    let mut out = Emitter::default();
    let mut cohorts: BTreeMap<(String, String, String, String), Cohort> = BTreeMap::new();
    let traces_per_second = 40;
    let seconds = rollout_after_s as u64 + 300;
    let mut detected_after_s = None;
    let mut next_tick = START;
    let mut now = START;
    while now < START + seconds * SECOND {
        let elapsed = (now - START) as f64 / SECOND as f64;
        let trace = generator.generate(now, elapsed);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &encoder.assembled(&trace), now + SECOND, &mut out).unwrap();
        now += SECOND / traces_per_second;
        if now < next_tick {
            continue;
        }
        next_tick += SECOND;
        analyzer.on_tick(now + SECOND, &mut out);
        add(&mut cohorts, cohort_rollups(&out));
        out.clear();
        if detected_after_s.is_none() && elapsed > rollout_after_s {
            if let Some(c) = judge(&cohorts) {
                if c.verdict == Verdict::Worse {
                    detected_after_s = Some(elapsed - rollout_after_s);
                }
            }
        }
    }
    analyzer.drain(now, &mut out);
    add(&mut cohorts, cohort_rollups(&out));

    let c = judge(&cohorts).expect("both versions served requests");
    let latency = c.latency.as_ref().unwrap();
    println!(
        "checkout 2.0.0 against 1.0.0: {} ({}); first judged worse {:?} s after the rollout began; {} and {} requests",
        c.verdict.label(),
        c.evidence.join("; "),
        detected_after_s,
        c.baseline.count,
        c.candidate.count
    );
    assert_eq!(c.verdict, Verdict::Worse);
    assert!(latency.p_value < 0.01);
    assert!((0.15..0.45).contains(&latency.relative_shift), "{latency:?}");
    assert!(detected_after_s.is_some());

    // Requests per version and per flag variant are exactly what the generator made.
    let truth = generator.versions.clone();
    for ((service, version), (requests, errors)) in truth {
        let counted: (u64, u64) = cohorts
            .iter()
            .filter(|((s, _, attribute, value), _)| *s == service && attribute == "service.version" && *value == version)
            .fold((0, 0), |(n, e), (_, c)| (n + c.latency_us.count(), e + c.errors));
        assert_eq!(counted, (requests, errors), "{service} {version}");
    }
    let flags = &generator.business[&("frontend".to_string(), "GET /product".to_string(), "feature_flag.recommendations".to_string())];
    for (variant, generated) in &flags.values {
        let counted = cohorts[&("frontend".into(), "GET /product".into(), "feature_flag.recommendations".into(), variant.clone())].latency_us.count();
        assert_eq!(counted, *generated, "variant {variant}");
    }
}

fn add(cohorts: &mut BTreeMap<(String, String, String, String), Cohort>, rollups: Vec<CohortRollup>) {
    for r in rollups {
        let cohort = cohorts.entry((r.service, r.operation, r.attribute, r.value)).or_default();
        cohort.latency_us.add(&r.histogram_us);
        cohort.errors += r.errors;
    }
}

fn judge(cohorts: &BTreeMap<(String, String, String, String), Cohort>) -> Option<tracepipe_analytics::compare::Comparison> {
    let key = |version: &str| ("checkout".to_string(), "POST /orders".to_string(), "service.version".to_string(), version.to_string());
    let (baseline, candidate) = (cohorts.get(&key("1.0.0"))?, cohorts.get(&key("2.0.0"))?);
    Some(compare(
        Sample { latency_us: &baseline.latency_us, errors: baseline.errors },
        Sample { latency_us: &candidate.latency_us, errors: candidate.errors },
        &CompareSettings::default(),
    ))
}

#[test]
fn the_canary_of_a_slower_version_is_judged_worse_from_the_store_and_its_alert_resolves_after_a_rollback() {
    use tracepipe_health::canary::{canaries, CanarySettings};
    use tracepipe_schemas::analytics::{AlertDetails, AlertKind, AlertState, Severity};

    let mut scenario = Scenario::from_yaml(SHOP).unwrap();
    let rollout_ms = START / 1_000_000 + (scenario.rollouts[0].after_s * 1000.0) as u64;
    // The new version serves a tenth of the requests, all of them from complete_after_s, and is
    // rolled back twenty minutes after it began.
    let rollback_s = scenario.rollouts[0].after_s as u64 + 1200;
    scenario.rate = 0.0;
    let mut generator = TraceGenerator::new(scenario.clone());
    let encoder = MessageEncoder::new(Encoding::OtlpProto, generator.scenario(), generator.services());
    let mut analyzer = Analyzer::new(AnalyzerConfig::default(), AnalyzerOutputs { rollups: ROLLUPS, alerts: OutputId(1) });
    let mut out = Emitter::default();
    let mut records = Vec::new();
    let traces_per_second = 40;
    let mut now = START;
    let end = START + (rollback_s + 300) * SECOND;
    let mut next_tick = START;
    while now < end {
        let elapsed = (now - START) as f64 / SECOND as f64;
        if elapsed as u64 == rollback_s && generator.scenario().rollouts[0].share > 0.0 {
            let mut rolled_back = scenario.clone();
            rolled_back.rollouts[0].share = 0.0;
            rolled_back.rollouts[0].complete_after_s = None;
            generator = TraceGenerator::new(rolled_back);
        }
        let trace = generator.generate(now, elapsed);
        tracepipe_analyzer::testing::analyze(&mut analyzer, &encoder.assembled(&trace), now + SECOND, &mut out).unwrap();
        now += SECOND / traces_per_second;
        if now >= next_tick {
            next_tick += SECOND;
            analyzer.on_tick(now + SECOND, &mut out);
            records.extend(out.records().filter(|(o, _, _)| *o == ROLLUPS).map(|(_, _, v)| (2u16, v.to_vec())));
            out.clear();
        }
    }
    analyzer.drain(now, &mut out);
    records.extend(out.records().filter(|(o, _, _)| *o == ROLLUPS).map(|(_, _, v)| (2u16, v.to_vec())));
    let dir = tempfile::tempdir().unwrap();
    let url = tracepipe_store::StoreUrl::Sqlite(dir.path().join("tracepipe.db"));
    let mut sink = support::stored::sink(&url, tracepipe_sink::SinkConfig::default());
    support::stored::feed(&mut sink, &records, 0, now);
    let mut store = tracepipe_store::Store::open(&url).unwrap();

    // When the rollout completes, the operation's p99 per minute changes, and the change is
    // attributed to the version that took over.
    let complete_ms = START / 1_000_000 + (scenario.rollouts[0].complete_after_s.unwrap() * 1000.0) as u64;
    let orders = tracepipe_health::series::Subject::Operation { service: "checkout".into(), operation: "POST /orders".into(), span_kind: None };
    let (from_ms, to_ms) = ((START / 1_000_000) as i64, (START / 1_000_000 + rollback_s * 1000) as i64);
    let buckets = tracepipe_health::series::merged(&mut store, &orders, from_ms, to_ms, Some(60_000)).unwrap();
    let points: Vec<(i64, f64)> = buckets.iter().map(|(t, m)| (*t, m.latency_us.quantile_ms(0.99).unwrap())).collect();
    let found = tracepipe_health::changepoints::change_points(&points, &Default::default());
    let counts = tracepipe_health::series::cohort_counts(&mut store, "checkout", "POST /orders", from_ms, to_ms, 60_000).unwrap();
    let described: Vec<(i64, f64, f64, Vec<String>)> =
        found.iter().map(|c| (c.t_ms - complete_ms as i64, c.change, c.p_value, tracepipe_health::changepoints::what_changed(c.t_ms, 60_000, from_ms, &counts).iter().map(|w| w.describe()).collect())).collect();
    println!("p99 change points (ms from the rollout's completion, change, p, what changed): {described:?}");
    let at_completion = described.iter().find(|(at, ..)| at.abs() <= 120_000).expect("a change point where the rollout completed");
    assert!(at_completion.1 > 0.15, "{at_completion:?}");
    assert!(at_completion.3.iter().any(|w| w.starts_with("service.version 2.0.0 went from")), "{at_completion:?}");

    // The trends evaluator's regression search finds the same change as recent, and alerts.
    let regression_settings = tracepipe_health::changepoints::RegressionSettings::default();
    let mut regression_alerts = tracepipe_trends::CanaryAlerts::new(Vec::new(), 0);
    let soon_after = complete_ms + 12 * 60_000;
    let found = tracepipe_health::changepoints::regressions(&mut store, &regression_settings, soon_after).unwrap();
    for r in &found {
        println!("regression: {}", r.summary());
    }
    let orders_regression = found.iter().find(|r| r.service == "checkout" && r.operation == "POST /orders" && r.metric == "p99").expect("checkout's p99 regression");
    assert!(orders_regression.changed.iter().any(|c| c.value == "2.0.0" && c.share_after > 0.9), "{orders_regression:?}");
    regression_alerts.apply_regressions(&found, soon_after);
    regression_alerts.apply_regressions(&tracepipe_health::changepoints::regressions(&mut store, &regression_settings, soon_after + 3 * 3600_000).unwrap(), soon_after + 3 * 3600_000);
    let regression_events = regression_alerts.book.take_pending();
    let orders_events: Vec<_> = regression_events.iter().filter(|a| a.key == "regression:checkout:POST /orders:p99").collect();
    assert_eq!(orders_events.iter().map(|a| a.state).collect::<Vec<_>>(), vec![AlertState::Firing, AlertState::Resolved], "{regression_events:?}");
    assert!(orders_events[0].summary.contains("when service.version 2.0.0 went from"), "{}", orders_events[0].summary);

    // A p99 forecast past 350 ms within half an hour: not before the rollout completes (the p99
    // was about 300 ms), but soon after.
    let rule = tracepipe_health::forecast::ForecastRule {
        service: "checkout".into(),
        operation: "POST /orders".into(),
        metric: "p99".into(),
        above: 350.0,
        horizon: std::time::Duration::from_secs(1800),
        history: std::time::Duration::from_secs(3 * 3600),
    };
    let before = tracepipe_health::forecast::breach(&mut store, &rule, complete_ms - 60_000).unwrap();
    assert!(before.is_none(), "{before:?}");
    let after = tracepipe_health::forecast::breach(&mut store, &rule, complete_ms + 15 * 60_000).unwrap().expect("forecast to pass 350 ms");
    println!("forecast: {} ms at {} s after the rollout completed ({}, interval {:.0} to {:.0} ms)", after.point, (after.crossing_ms - complete_ms as i64) / 1000, after.forecast.model, after.lower, after.upper);
    regression_alerts.apply_forecasts(&[(rule.clone(), Some(after))], soon_after);
    regression_alerts.apply_forecasts(&[(rule, None)], soon_after + 60_000);
    let forecast_events = regression_alerts.book.take_pending();
    assert_eq!(forecast_events.iter().map(|a| (a.kind, a.state)).collect::<Vec<_>>(), vec![(AlertKind::ForecastBreach, AlertState::Firing), (AlertKind::ForecastBreach, AlertState::Resolved)]);

    let settings = CanarySettings::default();
    let mut alerts = tracepipe_trends::CanaryAlerts::new(Vec::new(), 0);
    let mut decided_at = None;
    let mut events = Vec::new();
    let mut at_ms = rollout_ms;
    while at_ms < end / 1_000_000 + 600_000 {
        let verdicts = canaries(&mut store, &settings, at_ms).unwrap();
        if decided_at.is_none() {
            if let Some(v) = verdicts.iter().find(|v| v.decided) {
                decided_at = Some((at_ms, v.clone()));
            }
        }
        alerts.apply(&verdicts, at_ms);
        events.extend(alerts.book.take_pending());
        at_ms += 15_000;
    }
    let (decided_ms, verdict) = decided_at.expect("a verdict");
    println!(
        "canary checkout 2.0.0: {} at evaluation {} of {}, {:.0} s after the rollout began ({} and {} requests; {})",
        verdict.verdict.label(),
        verdict.evaluation,
        verdict.evaluations,
        (decided_ms - rollout_ms) as f64 / 1000.0,
        verdict.comparison.baseline.count,
        verdict.comparison.candidate.count,
        verdict.comparison.evidence.join("; ")
    );
    assert_eq!((verdict.service.as_str(), verdict.operation.as_str(), verdict.baseline.as_str(), verdict.candidate.as_str()), ("checkout", "POST /orders", "1.0.0", "2.0.0"));
    assert_eq!(verdict.verdict, Verdict::Worse);
    assert!(verdict.comparison.latency.as_ref().unwrap().p_value < verdict.alpha_per_evaluation && verdict.alpha_per_evaluation <= 0.01);
    // Only checkout's operations served by both versions are judged; none other is worse.
    let fired: Vec<_> = events.iter().filter(|a| a.state == AlertState::Firing).collect();
    assert!(fired.iter().all(|a| a.kind == AlertKind::CanaryVerdict), "{fired:?}");
    let orders = fired.iter().find(|a| a.key.contains("POST /orders")).expect("an alert for POST /orders");
    assert_eq!(orders.severity, Severity::Critical);
    let AlertDetails::Canary(details) = &orders.details else { panic!("{orders:?}") };
    assert_eq!((details.verdict.as_str(), details.candidate_value.as_str()), ("worse", "2.0.0"));
    assert!(details.shift_ms.unwrap() > 0.0 && !details.evidence.is_empty());
    assert!(events.iter().any(|a| a.key == orders.key && a.state == AlertState::Resolved), "resolved after the rollback: {events:?}");
    assert_eq!(events.iter().filter(|a| a.key == orders.key).count(), 2, "one firing and one resolved event");
}
