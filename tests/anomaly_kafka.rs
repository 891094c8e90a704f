//! Latency anomaly detection against a real Kafka-protocol broker (Tansu): a fault-free minute of
//! the 30-service scenario raises no alert; then a latency fault on one operation raises an alert
//! that names it as the root cause within 30 s of its onset.

mod support;

use std::time::Duration;

use support::{loadgen_yaml, read_json, repo_path, Cluster};
use tracepipe::loadgen::Limits;

const RATE: f64 = 3_000.0;

#[test]
fn a_latency_fault_is_detected_and_attributed_and_a_fault_free_run_raises_nothing() {
    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/large.yaml")).unwrap();
    let faults_at = scenario.find("\nfaults:").expect("the scenario has a fault");
    let fault_free = format!("{}\nfaults: []\n", &scenario[..faults_at]);
    let fault = scenario[faults_at..].lines().find(|l| l.contains("service:")).unwrap().to_string();
    assert!(fault.contains("service: inventory") && fault.contains("operation: \"GET /stock\"") && fault.contains("after_s: 20"), "{fault}");

    let cluster = Cluster::start();
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let analyzer = cluster.spawn("analyzer");
    analyzer.wait_for_log("partitions assigned", Duration::from_secs(60));

    let limits = || Limits { duration: Some(Duration::from_secs(60)), ..Default::default() };
    let quiet = loadgen_yaml(&cluster.brokers(), &fault_free, limits(), RATE);
    let faulty = loadgen_yaml(&cluster.brokers(), &scenario, limits(), RATE);
    let onset_ms = faulty.faults[0].onset_unix_ms;
    eprintln!("fault-free run: {} traces; faulty run: {} traces, fault onset at {onset_ms}", quiet.trace_count, faulty.trace_count);

    let is_root_cause = |alert: &serde_json::Value| {
        let cause = &alert["details"]["root_cause"];
        alert["kind"] == "latency_anomaly" && cause["service"] == "inventory" && cause["operation"] == "GET /stock"
    };
    let alerts = read_json(&cluster.brokers(), "tracepipe.alerts", Duration::from_secs(90), |alerts| alerts.iter().any(is_root_cause));
    for alert in &alerts {
        eprintln!("alert: {} {} at {} ({})", alert["state"], alert["key"], alert["event_unix_ms"], alert["summary"]);
    }
    let before_onset: Vec<_> = alerts.iter().filter(|a| a["event_unix_ms"].as_u64().unwrap() < onset_ms).collect();
    assert!(before_onset.is_empty(), "the fault-free minute (and the faulty run before the fault) raised {} alerts", before_onset.len());

    let detected = alerts.iter().filter(|a| is_root_cause(a)).map(|a| a["opened_unix_ms"].as_u64().unwrap()).min().expect("an alert names inventory GET /stock");
    let time_to_detect = Duration::from_millis(detected - onset_ms);
    eprintln!("time to detect: {:.1} s after the fault's onset", time_to_detect.as_secs_f64());
    assert!(time_to_detect <= Duration::from_secs(30));
    let misattributed: Vec<_> = alerts.iter().filter(|a| a["kind"] == "latency_anomaly" && a["state"] == "firing" && !is_root_cause(a)).collect();
    assert!(misattributed.is_empty(), "latency alerts naming another root cause: {misattributed:?}");
    let first = alerts.iter().find(|a| is_root_cause(a)).unwrap();
    let details = &first["details"];
    assert!(details["current"]["p90_ms"].as_f64().unwrap() > details["baseline"]["p90_ms"].as_f64().unwrap());
    assert!(!details["exemplar_trace_ids"].as_array().unwrap().is_empty());
}

/// Event-time detection and alerts that survive a restart: an analyzer stopped while traffic
/// flows catches up on its backlog in seconds and raises nothing (its slices are the traffic's
/// own time, not how fast it reads); then an analyzer killed while its alert fires is replaced,
/// rebuilds the open alert from tracepipe.alerts, and resolves it once the fault is over.
#[test]
fn a_backlog_raises_nothing_and_an_alert_open_at_a_crash_resolves_after_the_restart() {
    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/large.yaml")).unwrap();
    let faults_at = scenario.find("\nfaults:").expect("the scenario has a fault");
    let fault_free = format!("{}\nfaults: []\n", &scenario[..faults_at]);
    let passing_fault = format!("{}\nfaults:\n  - {{ service: inventory, operation: \"GET /stock\", after_s: 15, for_s: 20, latency_ms: 150 }}\n", &scenario[..faults_at]);

    let cluster = Cluster::start();
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let mut analyzer = cluster.spawn("analyzer");
    analyzer.wait_for_log("partitions assigned", Duration::from_secs(60));
    let brokers = cluster.brokers();
    let quiet = std::thread::spawn(move || loadgen_yaml(&brokers, &fault_free, Limits { duration: Some(Duration::from_secs(75)), ..Default::default() }, RATE));
    // Live for 35 s (a baseline learned), stopped for 25 s while the traffic goes on, then back.
    std::thread::sleep(Duration::from_secs(35));
    assert_eq!(analyzer.terminate(), Some(0));
    std::thread::sleep(Duration::from_secs(25));
    analyzer = cluster.spawn("analyzer");
    let quiet = quiet.join().unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let alerts = read_json(&cluster.brokers(), "tracepipe.alerts", Duration::from_secs(5), |_| false);
    assert!(alerts.is_empty(), "a fault-free run with a 25 s backlog raised {alerts:#?}");
    eprintln!("fault-free run of {} traces, 25 s of it read as a backlog: no alert", quiet.trace_count);

    let brokers = cluster.brokers();
    let faulty = std::thread::spawn(move || loadgen_yaml(&brokers, &passing_fault, Limits { duration: Some(Duration::from_secs(60)), ..Default::default() }, RATE));
    let fired = read_json(&cluster.brokers(), "tracepipe.alerts", Duration::from_secs(60), |alerts| alerts.iter().any(|a| a["state"] == "firing" && a["kind"] == "latency_anomaly"));
    let firing = fired.iter().find(|a| a["state"] == "firing" && a["kind"] == "latency_anomaly").expect("the fault raised an alert").clone();
    analyzer.kill();
    let killed_at = std::time::Instant::now();
    std::thread::sleep(support::SESSION_EXPIRY);
    let restarted = cluster.spawn("analyzer");
    restarted.wait_for_log("open alerts restored", Duration::from_secs(60));
    let faulty = faulty.join().unwrap();
    let id = firing["id"].clone();
    let alerts = read_json(&cluster.brokers(), "tracepipe.alerts", Duration::from_secs(120), |alerts| alerts.iter().any(|a| a["id"] == id && a["state"] == "resolved"));
    let resolved = alerts.iter().find(|a| a["id"] == id && a["state"] == "resolved").unwrap_or_else(|| panic!("{id} never resolved after the restart: {alerts:#?}"));
    eprintln!(
        "faulty run of {} traces: {} fired, the analyzer was killed, and its replacement resolved it {:.0} s after the kill: {}",
        faulty.trace_count,
        firing["key"],
        killed_at.elapsed().as_secs_f64(),
        resolved["summary"]
    );
}
