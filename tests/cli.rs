//! The binary's commands as a person runs them: validate, and `up` on the embedded broker.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use support::{free_port, metric_value, metrics, produce_raw, repo_path, Process};
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_schemas::{Encoding, ExportTraceServiceRequest};

const SAMPLE: &str = "tests/data/otlp_spans.pb";

fn tracepipe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracepipe")).args(args).output().unwrap()
}

#[test]
fn validate_accepts_the_shipped_topology() {
    let out = tracepipe(&["validate", repo_path("topology.yaml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn validate_prints_every_mistake_and_exits_non_zero() {
    let out = tracepipe(&["validate", repo_path("tests/data/topology-with-mistakes.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "topics.tracepipe.spans.partitions: must be between 1 and 10000, got 0",
        "processors.router.inputs[0].encoding: unknown encoding `otlp_protobuf`",
        "processors.router.batch: unknown key `batch`",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");
}

/// The sample file published in the README's `make up` walkthrough: one OTLP request of a few
/// traces. `TRACEPIPE_REGENERATE_DATA=1` rewrites it from the small scenario.
#[test]
fn sample_otlp_file_is_a_valid_request() {
    let path = repo_path(SAMPLE);
    if std::env::var_os("TRACEPIPE_REGENERATE_DATA").is_some() {
        let scenario = Scenario::from_yaml(&std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap()).unwrap();
        let mut generator = TraceGenerator::new(scenario.clone());
        let encoder = MessageEncoder::new(Encoding::OtlpProto, &scenario, generator.services());
        let mut spans = Vec::new();
        for i in 0..4 {
            spans.extend(generator.generate(1_764_000_000_000_000_000 + i * 1_000_000_000, 0.0).spans);
        }
        let (_, bytes) = encoder.encode(spans).remove(0);
        std::fs::write(&path, bytes).unwrap();
    }
    let request = ExportTraceServiceRequest::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let spans: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
    assert_eq!(spans, sample_span_count());
}

fn sample_span_count() -> usize {
    28
}

#[test]
fn up_routes_a_published_otlp_file() {
    let listen = free_port();
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let query = free_port();
    let store = dir.path().join("tracepipe.db");
    let storage = format!("sqlite://{}", store.display());
    let mut up = Process::spawn(
        &["up", "--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}"), "--query-listen", &format!("127.0.0.1:{query}"), "--storage", &storage],
        dir.path(),
        "up",
    );
    up.wait_for_log("partitions assigned", Duration::from_secs(60));
    let sample = std::fs::read(repo_path(SAMPLE)).unwrap();
    produce_raw(&format!("127.0.0.1:{listen}"), "otlp_spans", &[(None, &sample)]);
    let series = "tracepipe_router_routed_spans_total{encoding=\"otlp_proto\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_value(&metrics(admin), series) < sample_span_count() as f64 {
        assert!(Instant::now() < deadline, "spans not counted as routed:\n{}", up.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Assembled, kept (a shape not seen before), stored and served by the query API.
    let deadline = Instant::now() + Duration::from_secs(90);
    let service = loop {
        let body: serde_json::Value = serde_json::from_str(support::http_body(&support::http_get(query, "/api/services"))).unwrap_or_default();
        if let Some(service) = body["data"].as_array().and_then(|s| s.first()).and_then(|s| s.as_str()) {
            break service.to_string();
        }
        assert!(Instant::now() < deadline, "no service in the query api:\n{}", up.log_text());
        std::thread::sleep(Duration::from_millis(500));
    };
    let traces: serde_json::Value = serde_json::from_str(support::http_body(&support::http_get(query, &format!("/api/traces?service={service}&start=0")))).unwrap();
    assert_eq!(traces["data"].as_array().map(Vec::len), Some(1), "{traces}");
    assert!(store.exists(), "the store is the SQLite file named by --storage");
    assert_eq!(up.terminate(), Some(0), "{}", up.log_text());
}

/// (operation spans, edge calls) in the store's rollups and edge windows.
fn stored_totals(store: &std::path::Path) -> (u64, u64) {
    let Ok(mut store) = tracepipe_store::Store::open(&tracepipe_store::StoreUrl::Sqlite(store.to_path_buf())) else { return (0, 0) };
    let sum = |store: &mut tracepipe_store::Store, sql: &str, field: &str| -> u64 {
        store.query(sql, &[]).unwrap_or_default().iter().filter_map(|row| serde_json::from_str::<serde_json::Value>(row[0].text()).ok()).filter_map(|v| v[field].as_u64()).sum()
    };
    (sum(&mut store, "SELECT body FROM rollups WHERE kind = 'operation'", "count"), sum(&mut store, "SELECT body FROM edges", "calls"))
}

/// `tracepipe up` twice on one SQLite file: the second run's embedded broker starts its offsets at
/// 0 again, and its rollups and edge windows are stored beside the first run's, not dropped as
/// duplicates of them.
#[test]
fn up_twice_on_one_store_stores_both_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tracepipe.db");
    let mut expected = (0, 0);
    for run in 1..=2 {
        let listen = free_port();
        let storage = format!("sqlite://{}", store.display());
        let (admin, query) = (free_port().to_string(), free_port().to_string());
        let mut up = Process::spawn(
            &["up", "--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}"), "--query-listen", &format!("127.0.0.1:{query}"), "--storage", &storage, "--otlp-grpc-listen", &format!("127.0.0.1:{}", free_port()), "--otlp-http-listen", &format!("127.0.0.1:{}", free_port())],
            dir.path(),
            "up",
        );
        up.wait_for_log("partitions assigned", Duration::from_secs(60));
        let truth = support::loadgen(&format!("127.0.0.1:{listen}"), "tests/scenarios/small.yaml", Encoding::OtlpProto, tracepipe::loadgen::Limits { traces: Some(50), ..Default::default() }, 0.0);
        expected.0 += truth.span_count;
        expected.1 += truth.edge_calls.iter().map(|e| e.calls).sum::<u64>();
        // This run's spans and calls beside the last run's.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let totals = stored_totals(&store);
            if totals == expected {
                break;
            }
            assert!(Instant::now() < deadline, "run {run}: stored (spans, edge calls) {totals:?}, expected {expected:?}:\n{}", up.log_text());
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(up.terminate(), Some(0), "{}", up.log_text());
    }
}

#[test]
fn shipped_scenarios_are_valid_and_generate_what_they_describe() {
    for (file, services) in [("tests/scenarios/small.yaml", 5), ("tests/scenarios/large.yaml", 30)] {
        let scenario = Scenario::from_yaml(&std::fs::read_to_string(repo_path(file)).unwrap()).unwrap();
        assert_eq!(scenario.services.len(), services, "{file}");
        let mut generator = TraceGenerator::new(scenario);
        for i in 0..2000 {
            let trace = generator.generate(1_764_000_000_000_000_000 + i * 1_000_000, 30.0);
            let roots = trace.spans.iter().filter(|(_, s)| s.parent_span_id.is_empty()).count();
            assert_eq!(roots, 1, "one root per trace");
            let consumers = trace.spans.iter().filter(|(_, s)| s.kind == 5);
            for (_, consumer) in consumers {
                assert_eq!(consumer.links.len(), 1, "consumer spans link to their producer");
                assert_eq!(consumer.links[0].span_id, consumer.parent_span_id);
            }
        }
        let kinds: std::collections::BTreeSet<_> = generator.edges.iter().map(|e| e.kind.clone()).collect();
        assert!(kinds.contains("messaging") && kinds.contains("database") && kinds.contains("external"), "{file}: {kinds:?}");
    }
}

#[test]
fn scenario_mistakes_are_all_reported() {
    let text = "name: broken\nentrypoints: [{service: a, operation: x}]\nservices:\n  a:\n    operations:\n      x: { calls: [{service: b, operation: y}, {database: d, external: e}], error_rate: 2 }\n";
    let error = Scenario::from_yaml(text).unwrap_err().to_string();
    for expected in ["no operation `y` in service `b`", "give exactly one of service, database, external", "error_rate: must be between 0 and 1"] {
        assert!(error.contains(expected), "missing `{expected}` in {error}");
    }
}

/// `up` where its addresses are taken: by a Kafka broker (it says so, and how to use that broker),
/// by another program, or the admin server's port; each named, with exit code 5.
#[test]
fn up_says_which_address_is_taken_and_by_what() {
    let tansu = support::Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sqlite://{}", dir.path().join("t.db").display());
    let run = |listen: String, admin: String| {
        let output = Command::new(env!("CARGO_BIN_EXE_tracepipe"))
            .args(["up", "--listen", &listen, "--admin", &admin, "--storage", &storage, "--query-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--otlp-grpc-listen", &format!("127.0.0.1:{}", free_port()), "--otlp-http-listen", &format!("127.0.0.1:{}", free_port())])
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, stderr) = run(tansu.brokers(), format!("127.0.0.1:{}", free_port()));
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains(&format!("{} is already taken by a Kafka broker", tansu.brokers())), "{stderr}");
    assert!(stderr.contains(&format!("tracepipe up --brokers {}", tansu.brokers())), "{stderr}");
    eprintln!("Kafka on the embedded broker's address:\n{stderr}");

    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = other.local_addr().unwrap().to_string();
    let (code, stderr) = run(taken.clone(), format!("127.0.0.1:{}", free_port()));
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {taken}: another program (not a Kafka broker)")), "{stderr}");

    let (code, stderr) = run(format!("127.0.0.1:{}", free_port()), taken.clone());
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains(&format!("the admin server (/metrics, /healthz, /ready) cannot listen on {taken}")), "{stderr}");
    eprintln!("admin port taken:\n{stderr}");
}

/// `tracepipe slo rules` on the shipped topology's SLOs, checked by promtool: a burst of errors
/// on checkout pages (both page pairs are looked at) and opens a ticket that outlasts it, while
/// product pages that stay within their budget raise nothing.
#[test]
fn slo_rules_pass_promtool_and_fire_only_on_the_burst() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("slo-rules.yml");
    let out = tracepipe(&["slo", "rules", "-t", repo_path("topology.yaml").to_str().unwrap(), "-o", rules.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("checkout-availability: span metrics do not tell roots apart"), "{notes}");
    let checkout = |status: &str| format!("traces_span_metrics_duration_milliseconds_count{{service_name=\"frontend\", span_name=\"GET /checkout\", span_kind=\"SPAN_KIND_SERVER\", status_code=\"{status}\"}}");
    let product = |suffix: &str| format!("traces_span_metrics_duration_milliseconds_{suffix}{{service_name=\"frontend\", span_name=\"GET /product\", span_kind=\"SPAN_KIND_SERVER\", status_code=\"STATUS_CODE_UNSET\"");
    let labels = |slo: &str| format!("sloth_id: frontend-{slo}, sloth_service: frontend, sloth_slo: {slo}");
    let alert = |severity: &str| {
        format!(
            "          - exp_labels: {{ severity: {severity}, sloth_severity: {severity}, {} }}\n            exp_annotations: {{ summary: \"checkout-availability (frontend) burns its error budget too fast ({severity})\" }}\n",
            labels("checkout-availability")
        )
    };
    // Checkout: 600 a minute; from minute 10 to 20, half of them fail (a 0.5 error ratio against
    // a 2.5% budget). Product: 1000 a minute, 99.5% within 400 ms (a 1% budget).
    let test = format!(
        "rule_files: [slo-rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n\
         \x20     - series: '{}'\n        values: '0+600x10 6300+300x9 9600+600x59'\n\
         \x20     - series: '{}'\n        values: '0x10 300+300x9 3000x59'\n\
         \x20     - series: '{}}}'\n        values: '0+1000x80'\n\
         \x20     - series: '{}, le=\"400\"}}'\n        values: '0+995x80'\n\
         \x20   promql_expr_test:\n\
         \x20     - expr: slo:sli_error:ratio_rate5m{{sloth_slo=\"checkout-availability\"}}\n        eval_time: 15m\n        exp_samples:\n\
         \x20         - labels: 'slo:sli_error:ratio_rate5m{{sloth_id=\"frontend-checkout-availability\", sloth_service=\"frontend\", sloth_slo=\"checkout-availability\", sloth_window=\"5m\"}}'\n            value: 0.5\n\
         \x20   alert_rule_test:\n\
         \x20     - {{ eval_time: 9m, alertname: SloErrorBudgetBurnPage, exp_alerts: [] }}\n\
         \x20     - eval_time: 20m\n        alertname: SloErrorBudgetBurnPage\n        exp_alerts:\n{}\
         \x20     - eval_time: 20m\n        alertname: SloErrorBudgetBurnTicket\n        exp_alerts:\n{}\
         \x20     - {{ eval_time: 80m, alertname: SloErrorBudgetBurnPage, exp_alerts: [] }}\n\
         \x20     - eval_time: 80m\n        alertname: SloErrorBudgetBurnTicket\n        exp_alerts:\n{}",
        checkout("STATUS_CODE_UNSET"),
        checkout("STATUS_CODE_ERROR"),
        product("count"),
        product("bucket"),
        alert("page"),
        alert("ticket"),
        alert("ticket"),
    );
    std::fs::write(dir.path().join("slo-rules.test.yml"), &test).unwrap();
    for args in [vec!["check", "rules", "slo-rules.yml"], vec!["test", "rules", "slo-rules.test.yml"]] {
        let output = Command::new("promtool").args(&args).current_dir(dir.path()).output().expect("promtool is installed (make test installs prometheus)");
        assert!(output.status.success(), "promtool {args:?}: {}{}\n{test}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
}

/// `up --demo` traces tracepipe's own work: its processors are services of their own, and the
/// Kafka hops between them are edges of the service map, router to assembler to the rest.
#[test]
fn the_demo_shows_tracepipe_itself_in_the_service_map() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sqlite://{}", dir.path().join("tracepipe.db").display());
    let (listen, admin, query) = (free_port(), free_port(), free_port());
    let mut up = Process::spawn(
        &[
            "up", "--demo", "--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}"), "--query-listen", &format!("127.0.0.1:{query}"), "--storage", &storage,
            "--otlp-grpc-listen", &format!("127.0.0.1:{}", free_port()), "--otlp-http-listen", &format!("127.0.0.1:{}", free_port()),
        ],
        dir.path(),
        "up",
    );
    // Edge windows close a minute and the lateness after their start.
    let deadline = Instant::now() + Duration::from_secs(240);
    let wanted = [("tracepipe-router", "tracepipe-assembler"), ("tracepipe-assembler", "tracepipe-analyzer"), ("tracepipe-assembler", "tracepipe-sampler")];
    loop {
        let body: serde_json::Value = serde_json::from_str(support::http_body(&support::http_get(query, "/api/v1/edges"))).unwrap_or_default();
        let edges: Vec<(String, String, String)> = body["data"]
            .as_array()
            .map(|edges| edges.iter().map(|e| (e["client"].as_str().unwrap_or("").into(), e["server"].as_str().unwrap_or("").into(), e["connection_type"].as_str().unwrap_or("").into())).collect())
            .unwrap_or_default();
        let found = wanted.iter().all(|(client, server)| edges.iter().any(|(c, s, kind)| c == client && s == server && kind == "messaging_system"));
        // The sink's spans are of the traced records the sampler kept, stored once they went
        // round the pipeline again.
        let services: serde_json::Value = serde_json::from_str(support::http_body(&support::http_get(query, "/api/services"))).unwrap_or_default();
        let sink_traced = services["data"].as_array().is_some_and(|names| names.iter().any(|s| s == "tracepipe-sink"));
        if found && sink_traced {
            break;
        }
        assert!(Instant::now() < deadline, "tracepipe's own hops are not in the service map (edges {edges:?}, services {services})\n{}", up.log_text());
        std::thread::sleep(Duration::from_secs(2));
    }
    let published = metric_value(&metrics(admin), "tracepipe_self_trace_spans_total{outcome=\"published\",processor=\"router\"}");
    assert!(published > 0.0, "the router published spans of its own");
    assert_eq!(up.terminate(), Some(0), "{}", up.log_text());
}
