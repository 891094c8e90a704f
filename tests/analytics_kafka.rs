//! The analyzer and the dependencies processor against a real Kafka-protocol broker (Tansu) with
//! the 30-service scenario and its ground truth: the dependency graph on tracepipe.edges and in a
//! real Prometheus server, and errors attributed to their root-cause span.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{free_port, http_body, http_get, loadgen_yaml, read_json, repo_path, Cluster, Process};
use tracepipe::loadgen::{GroundTruth, Limits};

const SCENARIO: &str = "tests/scenarios/large.yaml";

/// Short windows, so edge windows and rollups are published seconds after the traffic.
fn short_windows(yaml: String) -> String {
    yaml.replace("    window: 1m\n    lateness: 30s\n", "    window: 5s\n    lateness: 5s\n")
}

/// The connection type the service-graph connector gives each kind of true edge.
fn connection_type(kind: &str) -> &'static str {
    match kind {
        "messaging" => "messaging_system",
        "database" => "database",
        "external" => "virtual_node",
        _ => "",
    }
}

type EdgeKey = (String, String, String);

fn true_edges(truth: &GroundTruth) -> BTreeSet<EdgeKey> {
    truth.edges.iter().map(|e| (e.client.clone(), e.server.clone(), connection_type(&e.kind).to_string())).collect()
}

fn precision_recall(found: &BTreeSet<EdgeKey>, truth: &BTreeSet<EdgeKey>) -> (f64, f64) {
    let correct = found.intersection(truth).count() as f64;
    (correct / found.len().max(1) as f64, correct / truth.len().max(1) as f64)
}

fn promtool(args: &[&str], dir: &Path) {
    let output = Command::new("promtool").args(args).current_dir(dir).output().expect("promtool is installed (make test installs prometheus)");
    assert!(output.status.success(), "promtool {args:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

#[test]
fn shipped_prometheus_rules_pass_promtool() {
    let dir = repo_path("deploy/prometheus");
    promtool(&["check", "rules", "tracepipe-rules.yml"], &dir);
    promtool(&["test", "rules", "tracepipe-rules.test.yml"], &dir);
}

/// A Prometheus server scraping `targets` every second.
fn start_prometheus(dir: &Path, targets: &[u16]) -> (Process, u16) {
    let port = free_port();
    let targets: Vec<String> = targets.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: tracepipe\n    static_configs: [{{ targets: [{}] }}]\n",
        repo_path("deploy/prometheus/tracepipe-rules.yml").display(),
        targets.join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    promtool(&["check", "config", config_path.to_str().unwrap()], dir);
    let process = Process::spawn_program(
        "prometheus",
        &[
            &format!("--config.file={}", config_path.display()),
            &format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir,
        "prometheus",
    );
    (process, port)
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The label sets of an instant PromQL query's result.
fn promql(port: u16, query: &str) -> Vec<BTreeMap<String, String>> {
    let response = http_get(port, &format!("/api/v1/query?query={}", url_encode(query)));
    let body: serde_json::Value = serde_json::from_str(http_body(&response)).unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| r["metric"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dependency_graph_and_error_root_causes_match_the_ground_truth() {
    let cluster = Cluster::start_with(short_windows);
    let (analyzer_port, dependencies_port) = (free_port(), free_port());
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let analyzer = cluster.spawn_with_admin("analyzer", analyzer_port);
    let dependencies = cluster.spawn_with_admin("dependencies", dependencies_port);
    analyzer.wait_for_log("partitions assigned", Duration::from_secs(60));
    dependencies.wait_for_log("partitions assigned", Duration::from_secs(60));
    let (_prometheus, prometheus_port) = start_prometheus(cluster.tansu.dir.path(), &[analyzer_port, dependencies_port]);

    // Failures from the start: a synchronous call deep in the graph, a Kafka consumer and a
    // database client, on top of the scenario's own error rates.
    let scenario = std::fs::read_to_string(repo_path(SCENARIO)).unwrap();
    let faults_at = scenario.find("\nfaults:").unwrap();
    let failing = format!(
        "{}\nfaults:\n  - {{ service: inventory, operation: \"GET /stock\", after_s: 0, error_rate: 0.1 }}\n  - {{ service: shipping, operation: \"order-created\", after_s: 0, error_rate: 0.2 }}\n  - {{ service: pricing, operation: \"Quote\", after_s: 0, error_rate: 0.05 }}\n",
        &scenario[..faults_at]
    );
    let truth = loadgen_yaml(&cluster.brokers(), &failing, Limits { spans: Some(100_000), ..Default::default() }, 10_000.0);
    let expected = true_edges(&truth);
    let kinds: BTreeSet<&str> = expected.iter().map(|(_, _, t)| t.as_str()).collect();
    assert!(kinds.contains("messaging_system") && kinds.contains("database") && kinds.contains("virtual_node") && kinds.contains(""), "{kinds:?}");

    // tracepipe.edges: the union of every edge window.
    let records = read_json(&cluster.brokers(), "tracepipe.edges", Duration::from_secs(120), |records| {
        let found: BTreeSet<EdgeKey> = records.iter().map(edge_key).collect();
        expected.is_subset(&found)
    });
    let found: BTreeSet<EdgeKey> = records.iter().map(edge_key).collect();
    let (precision, recall) = precision_recall(&found, &expected);
    eprintln!("tracepipe.edges: {} edges found, {} true; precision {:.4}, recall {:.4}", found.len(), expected.len(), precision, recall);
    for missing in expected.difference(&found) {
        eprintln!("  missing {missing:?}");
    }
    for extra in found.difference(&expected) {
        eprintln!("  not true {extra:?}");
    }
    assert!(precision >= 0.999 && recall >= 0.999);
    let calls: u64 = records.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
    assert!(calls > 0);

    // Prometheus, scraping both processors, answers PromQL on the service-graph series.
    let query = "sum by (client, server, connection_type) (traces_service_graph_request_total)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let from_prometheus = loop {
        let edges: BTreeSet<EdgeKey> = promql(prometheus_port, query)
            .into_iter()
            .map(|m| (m["client"].clone(), m["server"].clone(), m.get("connection_type").cloned().unwrap_or_default()))
            .collect();
        if edges.len() >= expected.len() || Instant::now() > deadline {
            break edges;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let (precision, recall) = precision_recall(&from_prometheus, &expected);
    eprintln!("Prometheus `{query}`: {} edges; precision {precision:.4}, recall {recall:.4}", from_prometheus.len());
    assert!(precision >= 0.999 && recall >= 0.999);
    let span_series = promql(prometheus_port, "traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\"}");
    assert!(span_series.iter().any(|m| m["service_name"] == "api-gateway"), "span metrics scraped");
    let recorded = promql(prometheus_port, "tracepipe:service_graph_requests:rate5m");
    assert!(!recorded.is_empty(), "the shipped recording rules evaluate on the scraped series");

    // Every failed trace's root cause, as the analyzer published it.
    let error_traces: BTreeMap<String, String> = read_json(&cluster.brokers(), "tracepipe.rollups", Duration::from_secs(60), |records| {
        records.iter().filter(|r| r["kind"] == "error_trace").count() >= truth.error_traces.len()
    })
    .into_iter()
    .filter(|r| r["kind"] == "error_trace")
    .map(|r| (r["trace_id"].as_str().unwrap().to_string(), r["root_cause_span_id"].as_str().unwrap().to_string()))
    .collect();
    let right = truth.error_traces.iter().filter(|(trace, span)| error_traces.get(*trace) == Some(span)).count();
    let accuracy = right as f64 / truth.error_traces.len().max(1) as f64;
    eprintln!("root cause: {right} of {} failed traces attributed to the true root-cause span ({:.2}%)", truth.error_traces.len(), accuracy * 100.0);
    assert!(truth.error_traces.len() >= 50, "the scenario fails enough traces to measure");
    assert!(accuracy >= 0.99);
}

fn edge_key(record: &serde_json::Value) -> EdgeKey {
    let text = |field: &str| record[field].as_str().unwrap().to_string();
    (text("client"), text("server"), text("connection_type"))
}
