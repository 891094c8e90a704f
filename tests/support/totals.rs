//! What the store holds, summed, against what the load generator says it sent: the exact totals
//! the SIGKILL and scaling drills compare.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracepipe::loadgen::GroundTruth;
use tracepipe_schemas::analytics::{EdgeWindow, Rollup};
use tracepipe_store::{Store, StoreUrl};

/// A broker and topology with [`short_windows`] and the store in a directory of its own: the
/// directory (removed on drop), the store's path and the cluster.
pub fn cluster_with_store() -> (tempfile::TempDir, std::path::PathBuf, super::Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tracepipe.db");
    let url = format!("url: sqlite://{}", store.display());
    let cluster = super::Cluster::start_with(|yaml| short_windows(yaml).replace("url: sqlite://tracepipe.db", &url));
    (dir, store, cluster)
}

/// Short windows so segments close seconds after the traffic; a short sink batch interval.
pub fn short_windows(yaml: String) -> String {
    yaml.replace("    window: 1m\n    lateness: 30s\n", "    window: 5s\n    lateness: 2s\n")
}

/// Totals read back from the store.
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    /// (service, operation) → (spans, errors), from the operation rollups.
    pub operations: BTreeMap<(String, String), (u64, u64)>,
    /// (service, operation) → traces, from the bottleneck rollups.
    pub endpoints: BTreeMap<(String, String), u64>,
    /// (client, server, connection type) → calls, from the edge windows.
    pub edges: BTreeMap<(String, String, String), u64>,
    pub error_traces: u64,
}

impl Totals {
    /// "N spans, N edge calls, N error traces", for a drill's report.
    pub fn summary(&self) -> String {
        let spans: u64 = self.operations.values().map(|v| v.0).sum();
        let calls: u64 = self.edges.values().sum();
        format!("{spans} spans, {calls} edge calls, {} error traces", self.error_traces)
    }
}

pub fn stored(path: &std::path::Path) -> Totals {
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

pub fn expected(truth: &GroundTruth) -> Totals {
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
pub fn wait_for_totals(path: &std::path::Path, expected: &Totals, timeout: Duration) -> Duration {
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

