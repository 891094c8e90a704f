//! An SLO against a real Kafka-protocol broker (Tansu), with two analyzer instances: an error burst
//! on checkout's `POST /orders` pages within the short window's span of its onset and resolves
//! after it; nothing fires before the burst; and the events the evaluator sums in the store equal
//! the load generator's ground truth, each counted once across the two analyzers; the alert's
//! exemplar traces are stored, kept by the sampler for the SLO. In the same run, the business
//! transactions and the purchase funnel of the shipped topology, joined by the funnels processor
//! across traces, add up in the store to the ground truth's counts, sums and journeys.

mod support;

use std::time::{Duration, Instant};

use support::{loadgen_yaml, read_json, repo_path, Cluster};
use tracepipe::loadgen::Limits;

const RATE: f64 = 500.0;

/// The SLO under test: checkout's order endpoint at 99% availability, paging at 10× over 3m and 1m.
const SLOS: &str = "slos:
  - name: orders-availability
    service: checkout
    events: { operation: \"POST /orders\" }
    sli: { availability: true }
    objective: 99
    window: 1d
    alerting:
      - { severity: page, burn_rate: 10, long: 3m, short: 1m }
";

#[test]
fn an_error_burst_pages_and_resolves_and_the_events_match_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracepipe.db");
    let url = format!("url: sqlite://{}", db.display());
    let cluster = Cluster::start_with(|yaml| {
        let yaml = yaml.replace("url: sqlite://tracepipe.db", &url);
        let slos_at = yaml.find("\nslos:\n").expect("the shipped topology defines slos") + 1;
        // The shipped SLOs give way to this one; the transactions and funnels after them stay.
        let after_slos = yaml.find("\n# Business transactions").unwrap() + 1;
        let yaml = format!("{}{SLOS}\n{}", &yaml[..slos_at], &yaml[after_slos..]);
        // Short analyzer windows and a quick evaluator, so the test takes minutes, not hours.
        yaml.replace("    window: 1m\n    lateness: 30s\n    # Cardinality caps", "    window: 10s\n    lateness: 5s\n    # Cardinality caps")
            .replace("    interval: 15s", "    interval: 2s")
            // Journeys close 20 s after their first step, and a quiet partition's 5 s after its last.
            .replace("    join_window: 2m", "    join_window: 20s")
            .replace("    lateness: 30s\n    # Open journeys", "    lateness: 5s\n    # Open journeys")
    });
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let _sampler = cluster.spawn("sampler");
    let first = cluster.spawn("analyzer");
    let second = cluster.spawn("analyzer");
    let _sink = cluster.spawn("sink");
    let _funnels = cluster.spawn("funnels");
    let slo = cluster.spawn("slo");
    first.wait_for_log("partitions assigned", Duration::from_secs(60));
    second.wait_for_log("partitions assigned", Duration::from_secs(60));

    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap();
    let faults_at = scenario.find("\nfaults:").unwrap();
    let scenario = format!("{}\nfaults:\n  - {{ service: checkout, operation: \"POST /orders\", after_s: 30, for_s: 30, error_rate: 0.5 }}\n", &scenario[..faults_at]);
    let truth = loadgen_yaml(&cluster.brokers(), &scenario, Limits { duration: Some(Duration::from_secs(90)), ..Default::default() }, RATE);
    let onset_ms = truth.faults[0].onset_unix_ms;
    let orders = truth.operations.iter().find(|o| o.service == "checkout" && o.operation == "POST /orders").expect("the ground truth counts POST /orders").clone();
    eprintln!("sent {} traces; POST /orders: {} spans, {} errors; burst from {onset_ms} for 30 s", truth.trace_count, orders.spans, orders.errors);

    let key = "slo_burn_rate:checkout:orders-availability:page";
    let alerts = read_json(&cluster.brokers(), "tracepipe.alerts", Duration::from_secs(240), |alerts| alerts.iter().any(|a| a["key"] == key && a["state"] == "resolved"));
    for alert in alerts.iter().filter(|a| a["kind"] == "slo_burn_rate") {
        eprintln!("alert: {} {} at {} ({})", alert["state"], alert["key"], alert["event_unix_ms"], alert["summary"]);
    }
    let firing = alerts.iter().find(|a| a["key"] == key && a["state"] == "firing").unwrap_or_else(|| panic!("no page alert:\n{}", slo.log_text()));
    let resolved = alerts.iter().find(|a| a["key"] == key && a["state"] == "resolved").unwrap_or_else(|| panic!("the page alert did not resolve:\n{}", slo.log_text()));
    let opened = firing["opened_unix_ms"].as_u64().unwrap();
    let resolved_at = resolved["event_unix_ms"].as_u64().unwrap();
    assert!(opened > onset_ms, "the alert fired before the burst began ({opened} < {onset_ms})");
    let delay = Duration::from_millis(opened - onset_ms);
    let burst_end_ms = onset_ms + 30_000;
    eprintln!(
        "page fired {:.1} s after the burst began, resolved {:.1} s after it ended",
        delay.as_secs_f64(),
        (resolved_at.saturating_sub(burst_end_ms)) as f64 / 1000.0
    );
    // The short window (1m) sees the burst once the analyzer publishes its windows (10 s + 5 s lateness).
    assert!(delay <= Duration::from_secs(60), "the page came {delay:?} after the onset");
    assert!(resolved_at > burst_end_ms, "resolved before the burst ended");
    let details = &firing["details"];
    assert_eq!(details["slo_severity"], "page");
    assert!(!details["exemplar_trace_ids"].as_array().unwrap().is_empty(), "{details}");
    assert!(alerts.iter().filter(|a| a["kind"] == "slo_burn_rate").all(|a| a["event_unix_ms"].as_u64().unwrap() > onset_ms), "an SLO alert before the burst");

    // Every POST /orders span of the run, counted once across both analyzers.
    let started = Instant::now();
    let sums = loop {
        let sums = store_sums(&db);
        if sums == (orders.spans, orders.spans - orders.errors) || started.elapsed() > Duration::from_secs(60) {
            break sums;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("stored SLO events: {} total, {} good; ground truth: {} spans, {} good", sums.0, sums.1, orders.spans, orders.spans - orders.errors);
    assert_eq!(sums, (orders.spans, orders.spans - orders.errors));

    // The alert's exemplars are stored: the sampler kept them before any rule decided.
    let exemplars: Vec<String> = details["exemplar_trace_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect();
    let mut store = tracepipe_store::Store::open(&tracepipe_store::StoreUrl::Sqlite(db.clone())).unwrap();
    for id in &exemplars {
        let rows = store.query("SELECT sampling_rule FROM traces WHERE trace_id = $1", &[tracepipe_store::Param::Text(id)]).unwrap();
        assert_eq!(rows.first().map(|row| row[0].text().to_string()).as_deref(), Some(tracepipe_sampler::SLO_EXEMPLAR_RULE), "exemplar {id} stored as kept for the SLO");
    }
    eprintln!("{} exemplars of the page alert, all stored", exemplars.len());

    // Business transactions: every checkout, its order amounts and payment methods, once.
    let checkouts = truth.entries.iter().find(|e| e.service == "frontend" && e.operation == "GET /checkout").unwrap().spans;
    let business = |operation: &str, key: &str| truth.business.iter().find(|b| b.operation == operation && b.key == key).unwrap().clone();
    let (amounts, methods) = (business("POST /orders", "order.amount"), business("POST /orders", "payment.method"));
    let started = Instant::now();
    let stored = loop {
        let stored = transaction_sums(&mut store);
        if stored.0 == checkouts || started.elapsed() > Duration::from_secs(60) {
            break stored;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("stored checkouts {} (truth {checkouts}), order amounts {:.2} (truth {:.2}), by payment method {:?} (truth {:?})", stored.0, stored.1, amounts.sum, stored.2, methods.values);
    assert_eq!(stored.0, checkouts);
    assert!((stored.1 - amounts.sum).abs() < 1e-6 * amounts.sum, "order amounts {} against {}", stored.1, amounts.sum);
    assert_eq!(stored.2, methods.values);

    // The funnel: every journey the generator began, each once, as far as it went.
    let journey = &truth.journeys[0];
    let started = Instant::now();
    let reached = loop {
        let reached = journeys_reached(&mut store);
        if reached.first() == journey.reached.first() || started.elapsed() > Duration::from_secs(60) {
            break reached;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("stored journeys reaching each step {reached:?}; ground truth {:?}", journey.reached);
    assert_eq!(reached, journey.reached);
}

/// (checkouts, the sum of their order amounts, counts by payment method) in the store.
fn transaction_sums(store: &mut tracepipe_store::Store) -> (u64, f64, std::collections::BTreeMap<String, u64>) {
    let mut sums = (0, 0.0, std::collections::BTreeMap::new());
    for row in store.query("SELECT body FROM rollups WHERE kind = 'transaction' AND service = 'checkout'", &[]).unwrap_or_default() {
        let Ok(tracepipe_schemas::analytics::Rollup::Transaction(r)) = serde_json::from_str(row[0].text()) else { continue };
        sums.0 += r.count;
        sums.1 += r.metrics.iter().filter(|m| m.name == "order-amount").map(|m| m.sum).sum::<f64>();
        for (value, n) in r.counts_by.iter().flat_map(|c| c.values.iter()) {
            *sums.2.entry(value.clone()).or_default() += n;
        }
    }
    sums
}

/// Stored journeys of the purchase funnel that reached each of its three steps.
fn journeys_reached(store: &mut tracepipe_store::Store) -> Vec<u64> {
    let mut reached = vec![0; 3];
    for row in store.query("SELECT body FROM rollups WHERE kind = 'funnel_journey' AND service = 'purchase'", &[]).unwrap_or_default() {
        let Ok(tracepipe_schemas::analytics::Rollup::FunnelJourney(j)) = serde_json::from_str(row[0].text()) else { continue };
        for step in 0..j.reached.len().min(3) {
            reached[step] += 1;
        }
    }
    reached
}

fn store_sums(db: &std::path::Path) -> (u64, u64) {
    let Ok(mut store) = tracepipe_store::Store::open(&tracepipe_store::StoreUrl::Sqlite(db.to_path_buf())) else { return (0, 0) };
    let Ok(rows) = store.query("SELECT CAST(COALESCE(SUM(total), 0) AS BIGINT), CAST(COALESCE(SUM(good), 0) AS BIGINT) FROM rollups WHERE kind = 'slo' AND operation = 'orders-availability'", &[]) else {
        return (0, 0);
    };
    rows.first().map_or((0, 0), |row| (row[0].int() as u64, row[1].int() as u64))
}
