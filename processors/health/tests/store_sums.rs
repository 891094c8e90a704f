//! Sums over the store are exact: partial counts of two analyzer instances add
//! up, a segment published again (a replay, a restart) replaces its earlier version instead of
//! adding to it, and windows outside a range are left out of it.

use tracepipe_analytics::slo::{validate_slos, AlertSeverity};
use tracepipe_processor::config::Problems;
use tracepipe_schemas::analytics::{ApdexCounts, CountedIn, OperationRollup, Rollup, SloRollup, ROLLUP_SCHEMA};
use tracepipe_sink::Batch;
use tracepipe_store::{Store, StoreUrl};

const MINUTE_MS: u64 = 60_000;

fn rollup(window_start_ms: u64, partition: i32, records: u64, total: u64, good: u64) -> Vec<u8> {
    serde_json::to_vec(&Rollup::Slo(SloRollup {
        schema: ROLLUP_SCHEMA.into(),
        window_start_unix_ms: window_start_ms,
        window_seconds: 60,
        slo: "checkout-availability".into(),
        service: "frontend".into(),
        total,
        good,
        bad_exemplar_trace_ids: if good < total { vec![format!("{partition:032x}")] } else { Vec::new() },
        counted_in: Some(CountedIn { topic: "tracepipe.traces".into(), partition, first_offset: 0, first_timestamp_ms: None, records, late: false }),
    }))
    .unwrap()
}

fn write(store: &mut Store, records: &[Vec<u8>]) {
    let mut batch = Batch::default();
    for (offset, record) in records.iter().enumerate() {
        batch.add_rollup(format!("tracepipe.rollups/0/{offset}"), record).unwrap();
    }
    let mut tx = store.transaction().unwrap();
    batch.write(&mut tx).unwrap();
    tx.commit().unwrap();
}

#[test]
fn sqlite_sums_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    partial_counts_add_up_and_a_replayed_segment_counts_once(StoreUrl::parse(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap());
}

#[test]
fn postgres_sums_are_exact() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!("tracepipe_slo_test_{}_{}", std::process::id(), nanos % 1_000_000_000);
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let mut client = postgres::Client::connect(base, postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (database test, trust auth); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`");
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
    partial_counts_add_up_and_a_replayed_segment_counts_once(StoreUrl::Postgres(format!("{base}?options=-csearch_path%3D{schema}")));
}

fn partial_counts_add_up_and_a_replayed_segment_counts_once(url: StoreUrl) {
    let mut store = Store::open(&url).unwrap();
    let mut problems = Problems::default();
    let yaml = "- { name: checkout-availability, service: frontend, events: { root: true }, sli: { availability: true }, objective: 99, window: 28d }";
    let slos = validate_slos("slos", Some(serde_yaml_ng::from_str(yaml).unwrap()), &mut problems);
    assert!(problems.is_empty());
    let slo = &slos[0];
    let now_ms = 1_000 * 86_400_000;

    // Two analyzer instances (partitions 0 and 1) over the last 3 minutes: 1000 events a minute
    // each; in the last minute partition 0 saw 200 bad, partition 1 saw 100 bad.
    let mut records = Vec::new();
    for minute in 1..=3u64 {
        let start = now_ms - minute * MINUTE_MS;
        let bad = |partition: i32| if minute == 1 { [200, 100][partition as usize] } else { 0 };
        records.push(rollup(start, 0, 10, 1000, 1000 - bad(0)));
        records.push(rollup(start, 1, 10, 1000, 1000 - bad(1)));
    }
    // An hour ago, outside the 5m and 30m windows: 500 events, all bad.
    records.push(rollup(now_ms - 60 * MINUTE_MS, 0, 5, 500, 0));
    write(&mut store, &records);
    // The same segments published again, some as an earlier, smaller version: nothing changes.
    write(&mut store, &records[..2]);
    write(&mut store, &[rollup(now_ms - MINUTE_MS, 0, 4, 400, 300)]);

    let evaluated = tracepipe_health::slo::evaluate_from_store(&mut store, slo, now_ms).unwrap();
    let status = &evaluated.status;
    let five_minutes = std::time::Duration::from_secs(300);
    assert_eq!(status.error_ratio(five_minutes), 300.0 / 6000.0, "{status:#?}");
    assert_eq!((status.period.total, status.period.good), (6500, 5700));
    // 800 bad of 6500 against a 1% budget: spent 800 / 65 = 12.3 times over.
    assert!((status.budget_remaining - (1.0 - 800.0 / 65.0)).abs() < 1e-9);
    // 5% bad over 5m and 30m is 5× the budget, below both page rates; 800 / 6500 = 12.3% over
    // 1h, 6h and 3d is 12.3×: the ticket pair (3d and 6h, 1×) is exceeded.
    assert!(!status.firing(AlertSeverity::Page), "{status:#?}");
    assert!(status.firing(AlertSeverity::Ticket), "{status:#?}");
    let ticket = &status.alerts.iter().find(|(severity, _)| *severity == AlertSeverity::Ticket).unwrap().1[0];
    assert!((ticket.long_burn_rate - 800.0 / 65.0).abs() < 1e-9 && (ticket.short_burn_rate - 800.0 / 65.0).abs() < 1e-9, "{ticket:?}");
    assert!(!evaluated.exemplars.is_empty());

    // The burn-down over the 28 days, a point a day: untouched until the last day, then the
    // budget as the status has it.
    let points = tracepipe_health::slo::burn_down(&mut store, slo, now_ms, 28).unwrap();
    assert_eq!(points.len(), 28);
    assert!(points[..27].iter().all(|p| p.total == 0 && p.budget_remaining == 1.0), "{points:?}");
    let last = points.last().unwrap();
    assert_eq!((last.unix_ms, last.total, last.good), (now_ms, 6500, 5700));
    assert!((last.budget_remaining - status.budget_remaining).abs() < 1e-12);
}

fn operation(window_start_ms: u64, service: &str, kind: &str, count: u64, errors: u64, latency_us: u64, apdex: Option<(u64, u64, u64)>) -> Vec<u8> {
    serde_json::to_vec(&Rollup::Operation(OperationRollup {
        schema: ROLLUP_SCHEMA.into(),
        window_start_unix_ms: window_start_ms,
        window_seconds: 60,
        service: service.into(),
        operation: "GET /".into(),
        span_kind: kind.into(),
        count,
        errors,
        sum_ms: (count * latency_us) as f64 / 1000.0,
        p50_ms: latency_us as f64 / 1000.0,
        p90_ms: latency_us as f64 / 1000.0,
        p99_ms: latency_us as f64 / 1000.0,
        max_ms: latency_us as f64 / 1000.0,
        histogram_us: vec![(latency_us, count)],
        apdex: apdex.map(|(threshold_ms, satisfied, tolerating)| ApdexCounts { threshold_ms, satisfied, tolerating }),
        counted_in: Some(CountedIn { topic: "tracepipe.traces".into(), partition: 0, first_offset: window_start_ms as i64, first_timestamp_ms: None, records: 1, late: false }),
    }))
    .unwrap()
}

#[test]
fn the_overview_sums_the_latest_windows_of_requests_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&StoreUrl::parse(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap()).unwrap();
    let now_ms = 1_000 * 86_400_000;
    let latest = now_ms - 2 * MINUTE_MS;
    let mut records = Vec::new();
    // Five minutes of frontend requests, 600 a minute, 6 failed, 500 satisfied and 90 tolerating
    // its 300 ms; before them a window the 5-minute overview leaves out.
    for minute in 0..5 {
        records.push(operation(latest - minute * MINUTE_MS, "frontend", "SPAN_KIND_SERVER", 600, 6, 120_000, Some((300, 500, 90))));
    }
    records.push(operation(latest - 5 * MINUTE_MS, "frontend", "SPAN_KIND_SERVER", 99_999, 99_999, 1, Some((300, 0, 0))));
    // Its calls to the cart are not requests it served; the cart's own server spans are.
    records.push(operation(latest, "frontend", "SPAN_KIND_CLIENT", 1000, 1000, 1, None));
    records.push(operation(latest, "cart", "SPAN_KIND_SERVER", 300, 0, 4_000, Some((500, 300, 0))));
    // A service that only calls others is not listed.
    records.push(operation(latest, "loadgen", "SPAN_KIND_CLIENT", 600, 0, 1, None));
    write(&mut store, &records);

    let overview = tracepipe_health::services::overview(&mut store, &[], now_ms, std::time::Duration::from_secs(300)).unwrap();
    assert_eq!((overview.from_unix_ms, overview.to_unix_ms), (latest - 4 * MINUTE_MS, latest + MINUTE_MS));
    let names: Vec<&str> = overview.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["cart", "frontend"]);
    let frontend = &overview.services[1];
    assert_eq!((frontend.requests, frontend.errors), (3000, 30));
    assert_eq!(frontend.requests_per_second, 10.0);
    assert_eq!(frontend.error_ratio, 0.01);
    assert_eq!(frontend.p99_ms, Some(120.0));
    assert_eq!(frontend.apdex, Some((2500.0 + 450.0 / 2.0) / 3000.0));
    assert_eq!((frontend.apdex_threshold_ms, frontend.status), (Some(300), None));
    let cart = &overview.services[0];
    assert_eq!((cart.requests, cart.apdex, cart.p50_ms), (300, Some(1.0), Some(4.0)));
}
