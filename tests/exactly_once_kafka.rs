//! The store's derived data is exact against a real Kafka-protocol broker (Tansu) while the
//! processors that make and store it are killed: the analyzer, the dependencies processor and the
//! sink are SIGKILLed at moments during a load run and restarted, a second analyzer joins and the
//! first is killed (two rebalances); afterwards the store's totals equal the load generator's
//! ground truth exactly. And a firing alert resolves after its analyzer is restarted.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{loadgen_yaml, repo_path, Cluster, Process, SESSION_EXPIRY};
use tracepipe::loadgen::{GroundTruth, Limits};
use tracepipe_schemas::analytics::{EdgeWindow, Rollup};
use tracepipe_store::{Store, StoreUrl};

/// Short windows so segments close seconds after the traffic; a short sink batch interval.
fn short_windows(yaml: String) -> String {
    yaml.replace("    window: 1m\n    lateness: 30s\n", "    window: 5s\n    lateness: 2s\n")
}

/// Totals read back from the store.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    /// (service, operation) → (spans, errors), from the operation rollups.
    operations: BTreeMap<(String, String), (u64, u64)>,
    /// (service, operation) → traces, from the bottleneck rollups.
    endpoints: BTreeMap<(String, String), u64>,
    /// (client, server, connection type) → calls, from the edge windows.
    edges: BTreeMap<(String, String, String), u64>,
    error_traces: u64,
}

fn stored(path: &std::path::Path) -> Totals {
    let mut totals = Totals::default();
    let mut store = match Store::open(&StoreUrl::Sqlite(path.to_path_buf())) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("store not readable yet: {error}");
            return totals;
        }
    };
    let rollups = store.query("SELECT body FROM rollups", &[]).unwrap_or_else(|error| {
        eprintln!("rollups not readable yet: {error}");
        Vec::new()
    });
    for row in rollups {
        match serde_json::from_str::<Rollup>(row[0].text()) {
            Ok(Rollup::Operation(r)) => {
                let entry = totals.operations.entry((r.service, r.operation)).or_default();
                entry.0 += r.count;
                entry.1 += r.errors;
            }
            Ok(Rollup::Bottlenecks(r)) => *totals.endpoints.entry((r.service, r.operation)).or_default() += r.traces,
            Ok(Rollup::ErrorTrace(_)) => totals.error_traces += 1,
            _ => {}
        }
    }
    for row in store.query("SELECT body FROM edges", &[]).unwrap_or_default() {
        if let Ok(edge) = serde_json::from_str::<EdgeWindow>(row[0].text()) {
            *totals.edges.entry((edge.client, edge.server, edge.connection_type)).or_default() += edge.calls;
        }
    }
    totals
}

fn expected(truth: &GroundTruth) -> Totals {
    let connection_type = |kind: &str| match kind {
        "messaging" => "messaging_system",
        "database" => "database",
        "external" => "virtual_node",
        _ => "",
    };
    Totals {
        operations: truth.operations.iter().map(|o| ((o.service.clone(), o.operation.clone()), (o.spans, o.errors))).collect(),
        endpoints: truth.entries.iter().map(|o| ((o.service.clone(), o.operation.clone()), o.spans)).collect(),
        edges: truth.edge_calls.iter().map(|e| ((e.client.clone(), e.server.clone(), connection_type(&e.kind).to_string()), e.calls)).collect(),
        error_traces: truth.error_traces.len() as u64,
    }
}

/// Waits until the store holds `expected`; panics with the differences otherwise.
fn wait_for_totals(path: &std::path::Path, expected: &Totals, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let totals = stored(path);
        if totals == *expected {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            let spans: u64 = totals.operations.values().map(|v| v.0).sum();
            let truth_spans: u64 = expected.operations.values().map(|v| v.0).sum();
            let calls: u64 = totals.edges.values().sum();
            let truth_calls: u64 = expected.edges.values().sum();
            for (edge, calls) in &expected.edges {
                let got = totals.edges.get(edge).copied().unwrap_or(0);
                if got != *calls {
                    eprintln!("edge {edge:?}: stored {got}, truth {calls}");
                }
            }
            for edge in totals.edges.keys().filter(|e| !expected.edges.contains_key(*e)) {
                eprintln!("edge {edge:?}: stored {}, not in the truth", totals.edges[edge]);
            }
            for (operation, counts) in &expected.operations {
                let got = totals.operations.get(operation).copied().unwrap_or_default();
                if got != *counts {
                    eprintln!("operation {operation:?}: stored {got:?}, truth {counts:?}");
                }
            }
            for (endpoint, traces) in &expected.endpoints {
                let got = totals.endpoints.get(endpoint).copied().unwrap_or_default();
                if got != *traces {
                    eprintln!("endpoint {endpoint:?}: stored {got}, truth {traces}");
                }
            }
            panic!(
                "the store's totals differ from the truth after {timeout:?}: spans {spans} (truth {truth_spans}), edge calls {calls} (truth {truth_calls}), error traces {} (truth {})\nstored {totals:#?}\ntruth {expected:#?}",
                totals.error_traces, expected.error_traces
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn killed_processors_and_rebalances_leave_the_store_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tracepipe.db");
    let url = format!("url: sqlite://{}", store.display());
    let cluster = Cluster::start_with(|yaml| short_windows(yaml).replace("url: sqlite://tracepipe.db", &url));
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let mut analyzer = cluster.spawn("analyzer");
    let mut dependencies = cluster.spawn("dependencies");
    let mut sink = cluster.spawn("sink");
    for process in [&analyzer, &dependencies, &sink] {
        process.wait_for_log("partitions assigned", Duration::from_secs(60));
    }
    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap();
    let brokers = cluster.brokers();
    let load = std::thread::spawn(move || loadgen_yaml(&brokers, &scenario, Limits { spans: Some(60_000), ..Default::default() }, 1_500.0));

    // Twice: the analyzer, the dependencies processor and the sink SIGKILLed together while
    // traffic flows, and restarted once their sessions have expired.
    let mut kills = 0;
    for pause in [Duration::from_secs(6), Duration::from_secs(4)] {
        std::thread::sleep(pause);
        for process in [&mut analyzer, &mut dependencies, &mut sink] {
            process.kill();
            kills += 1;
        }
        std::thread::sleep(SESSION_EXPIRY);
        analyzer = cluster.spawn("analyzer");
        dependencies = cluster.spawn("dependencies");
        sink = cluster.spawn("sink");
    }
    // A second analyzer joins (the partitions are split between the two), then the first is
    // killed and its partitions move to the second once its session expires.
    analyzer.wait_for_log("partitions assigned", Duration::from_secs(60));
    let second: Process = cluster.spawn("analyzer");
    second.wait_for_log("partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    analyzer.kill();
    kills += 1;
    std::thread::sleep(SESSION_EXPIRY);
    let _third = cluster.spawn("analyzer");

    let truth = load.join().unwrap();
    let expected = expected(&truth);
    let settled = wait_for_totals(&store, &expected, Duration::from_secs(120));
    let spans: u64 = expected.operations.values().map(|v| v.0).sum();
    let calls: u64 = expected.edges.values().sum();
    eprintln!(
        "{kills} kills, 2 analyzer rebalances: {} traces, {spans} spans, {calls} edge calls, {} error traces; the store equals the truth {settled:?} after the load ended",
        truth.trace_count, expected.error_traces
    );
    drop(second);
}
