//! Zero-code instrumentation, verified: two Flask services run under `opentelemetry-instrument`
//! (the PyPI packages in tests/python/requirements.txt), one calling the other over HTTP, export
//! OTLP to the gateway (one over gRPC, one over HTTP/protobuf); the assembler puts each request's
//! spans from both services into one trace, with the client span of the caller the parent of the
//! server span of the callee.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use tracepipe_dependencies::{Dependencies, DependenciesConfig, DependenciesOutputs};
use tracepipe_runtime::OutputId;
use support::{free_port, http_get, read_traces, repo_path, Cluster, Gateway, Process};

const REQUESTS: usize = 20;
const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;

fn instrument_binary() -> PathBuf {
    let path = repo_path("target/python/bin/opentelemetry-instrument");
    assert!(path.exists(), "{} is missing; `make python` (part of `make test`) installs it", path.display());
    path
}

/// A Flask service under `opentelemetry-instrument`, exporting to `endpoint` with `protocol`.
fn flask_service(cluster: &Cluster, script: &str, service: &str, port: u16, protocol: &str, endpoint: &str, extra_env: &[(&str, String)]) -> Process {
    let python = repo_path("target/python/bin/python");
    let mut env = vec![
        ("OTEL_SERVICE_NAME", service.to_string()),
        ("OTEL_TRACES_EXPORTER", "otlp".to_string()),
        ("OTEL_METRICS_EXPORTER", "none".to_string()),
        ("OTEL_LOGS_EXPORTER", "none".to_string()),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol.to_string()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
        ("PORT", port.to_string()),
    ];
    env.extend(extra_env.iter().cloned());
    let script = repo_path(&format!("tests/python/{script}"));
    let args = [python.to_str().unwrap(), script.to_str().unwrap()];
    let process = Process::spawn_program_with_env(instrument_binary().to_str().unwrap(), &args, cluster.tansu.dir.path(), service, &env);
    support::wait_for_port(port, &process);
    process
}

#[test]
fn flask_services_under_opentelemetry_instrument_come_out_as_assembled_traces() {
    instrument_binary();
    let cluster = Cluster::start();
    let mut gateway = Gateway::start(&cluster);
    let (grpc, http) = (gateway.grpc, gateway.http);
    let _assembler = cluster.spawn("assembler");

    let (inventory_port, storefront_port) = (free_port(), free_port());
    let mut inventory = flask_service(&cluster, "inventory.py", "inventory", inventory_port, "grpc", &format!("http://127.0.0.1:{grpc}"), &[]);
    let mut storefront = flask_service(
        &cluster,
        "storefront.py",
        "storefront",
        storefront_port,
        "http/protobuf",
        &format!("http://127.0.0.1:{http}/v1/traces"),
        &[("INVENTORY_URL", format!("http://127.0.0.1:{inventory_port}"))],
    );
    for _ in 0..REQUESTS {
        let response = http_get(storefront_port, "/checkout");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{}", storefront.log_text());
    }
    // The SDKs export every OTEL_BSP_SCHEDULE_DELAY (200 ms); Python does not run its exit
    // handlers on SIGTERM, so give them time to export before stopping them.
    std::thread::sleep(Duration::from_secs(3));
    storefront.terminate();
    inventory.terminate();

    let traces = read_traces(&cluster.brokers(), "tracepipe.traces", Duration::from_secs(90), |traces| traces.iter().filter(|t| t.spans.len() >= 3).count() >= REQUESTS);
    let mut joined = 0;
    for trace in traces.iter().filter(|t| t.fragment == 0) {
        let services: std::collections::BTreeSet<&str> = trace.spans.iter().map(|s| s.service.as_str()).collect();
        let client = trace.spans.iter().find(|s| s.service == "storefront" && s.kind == SPAN_KIND_CLIENT);
        let server = trace.spans.iter().find(|s| s.service == "inventory" && s.kind == SPAN_KIND_SERVER);
        let root = trace.spans.iter().find(|s| s.parent_span_id.is_empty());
        if let (Some(client), Some(server), Some(root)) = (client, server, root) {
            assert_eq!(services.len(), 2, "{services:?}");
            assert_eq!(server.parent_span_id, client.span_id, "storefront's client span is inventory's server span's parent");
            assert_eq!(root.service, "storefront");
            assert!(root.name.contains("/checkout"), "root span {}", root.name);
            joined += 1;
        }
    }
    assert_eq!(joined, REQUESTS, "every request is one trace across both services:\n{}", gateway.process.log_text());

    // The dependencies processor, fed the same records, finds the storefront → inventory edge.
    let mut dependencies = Dependencies::new(DependenciesConfig::default(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
    for trace in &traces {
        tracepipe_dependencies::testing::analyze(&mut dependencies, &trace.payload, 0).unwrap();
    }
    let edges: Vec<(String, String, String, u64)> = tracepipe_dependencies::testing::edges(&dependencies);
    let edge = edges.iter().find(|(client, server, _, _)| client == "storefront" && server == "inventory");
    assert!(edge.is_some_and(|(_, _, _, calls)| *calls >= REQUESTS as u64), "{edges:?}");
    assert_eq!(gateway.process.terminate(), Some(0));
}
