//! The query server over a store the sink filled: the Jaeger API's shapes and parameters,
//! tracepipe's own API (service health and SLOs included), the bearer token, and the UI in a
//! real headless Chromium.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::stored;
use tracepipe::loadgen::TraceGenerator;
use tokio_util::sync::CancellationToken;
use tracepipe_sink::SinkConfig;
use tracepipe_store::{Store, StoreUrl};

const SMALL: &str = include_str!("scenarios/small.yaml");
const TRACES: usize = 400;

struct Server {
    port: u16,
    /// When the stored traces begin: [`stored::generated`] draws the same ones again.
    start: u64,
    url: StoreUrl,
    ids: Vec<[u8; 16]>,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn server(token: Option<&str>) -> Server {
    server_of(SMALL, token)
}

/// A query server over the traces of `scenario` and their analytics.
fn server_of(scenario: &str, token: Option<&str>) -> Server {
    server_where(scenario, token, |_, _| true)
}

/// A query server over the traces of `scenario` and their analytics, of a start whose generated
/// traces also satisfy `wanted`.
fn server_where(scenario: &str, token: Option<&str>, wanted: impl Fn(&[tracepipe::loadgen::GeneratedTrace], &TraceGenerator) -> bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("tracepipe.db"));
    // The generator is seeded by the start time; of the starts a millisecond apart, the first
    // whose traces include failures (and what the test needs), so that every view has something
    // to show whatever the clock says.
    let start = now_ns() - 60_000_000_000;
    let (start, mut records, ids) = (0..100)
        .map(|k| start - k * 1_000_000)
        .filter(|start| {
            let (traces, generator) = stored::generated(scenario, TRACES, *start);
            wanted(&traces, &generator)
        })
        .map(|start| {
            let (records, ids) = stored::records(scenario, TRACES, start);
            (start, records, ids)
        })
        .find(|(_, records, _)| records.iter().any(|(input, payload)| *input == 2 && matches!(serde_json::from_slice(payload), Ok(tracepipe_schemas::analytics::Rollup::ErrorGroup(_)))))
        .expect("a start whose traces include failures and what the test needs");
    records.push((3, error_spike(&ids[..3])));
    let mut sink = stored::sink(&url, SinkConfig::default());
    stored::feed(&mut sink, &records, 0, now_ns());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let shutdown = CancellationToken::new();
    let store = Store::open(&url).unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _guard = runtime.enter();
    let (transactions, funnels) = stored::transactions_and_funnels();
    let config = tracepipe_query::QueryConfig { bearer_token: token.map(str::to_string), slos: stored::slos(), transactions, funnels, ..Default::default() };
    tracepipe_query::serve_on(listener, store, config, shutdown.clone());
    Server { port, start, url, ids, shutdown, _runtime: runtime, _dir: dir }
}

fn is_checkout(trace: &tracepipe::loadgen::GeneratedTrace) -> bool {
    trace.spans.iter().any(|(_, s)| s.parent_span_id.is_empty() && s.name == "GET /checkout")
}

/// Whether a checkout reached the card provider (those paid by voucher do not).
fn charged(trace: &tracepipe::loadgen::GeneratedTrace, generator: &TraceGenerator) -> bool {
    use tracepipe_schemas::otlp_trace::span::SpanKind;
    trace.spans.iter().any(|(r, s)| generator.service_of(*r) == "checkout" && s.name == "POST" && s.kind == SpanKind::Client as i32)
}

/// A query server over the small shop's traces, of a start whose checkouts include charged ones
/// and one paid by voucher (3% of checkouts, so some starts have none).
fn server_with_voucher_checkouts() -> Server {
    server_where(SMALL, None, |traces, generator| {
        let checkouts = || traces.iter().filter(|t| is_checkout(t));
        checkouts().any(|t| charged(t, generator)) && checkouts().any(|t| !charged(t, generator))
    })
}

/// A firing error-spike alert whose exemplars are `traces`.
fn error_spike(traces: &[[u8; 16]]) -> Vec<u8> {
    use tracepipe_schemas::analytics::*;
    let now_ms = now_ns() / 1_000_000;
    let alert = Alert {
        schema: ALERT_SCHEMA.into(),
        key: "error_spike:checkout:POST /orders:g1".into(),
        id: format!("error_spike:checkout:POST /orders:g1@{now_ms}"),
        kind: AlertKind::ErrorSpike,
        state: AlertState::Firing,
        severity: Severity::Warning,
        source: "analyzer".into(),
        opened_unix_ms: now_ms,
        event_unix_ms: now_ms,
        summary: "checkout POST /orders: 12 PaymentDeclined errors in 5 s, baseline 0.4".into(),
        subject: AlertSubject::Operation { service: "checkout".into(), operation: "POST /orders".into() },
        details: AlertDetails::Errors(ErrorDetails {
            group: "g1".into(),
            exception_type: "PaymentDeclined".into(),
            message: "card declined".into(),
            baseline_per_window: 0.4,
            current_per_window: 12,
            window_seconds: 5,
            exemplar_trace_ids: traces.iter().map(hex::encode).collect(),
        }),
    };
    serde_json::to_vec(&alert).unwrap()
}

/// (status, body) of GET `path`.
fn get(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string()))
}

fn json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = get(port, path, "");
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
}

fn ok(port: u16, path: &str) -> Value {
    let (status, body) = json(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    assert!(body["errors"].is_null(), "{path}: {body}");
    body["data"].clone()
}

fn bad(port: u16, path: &str, status: u16, mentions: &str) {
    let (got, body) = json(port, path);
    assert_eq!(got, status, "{path}: {body}");
    assert!(body["data"].is_null());
    let msg = body["errors"][0]["msg"].as_str().unwrap();
    assert_eq!(body["errors"][0]["code"], status);
    assert!(msg.contains(mentions), "{path}: `{msg}` should mention `{mentions}`");
}

fn assert_jaeger_trace(trace: &Value) {
    let id = trace["traceID"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    let processes = trace["processes"].as_object().unwrap();
    for span in trace["spans"].as_array().unwrap() {
        assert_eq!(span["traceID"], id);
        assert_eq!(span["spanID"].as_str().unwrap().len(), 16);
        assert!(span["operationName"].is_string());
        assert!(span["startTime"].as_i64().unwrap() > 1_600_000_000_000_000, "µs since the epoch");
        assert!(span["duration"].is_i64());
        assert!(span["references"].is_array() && span["logs"].is_array());
        for tag in span["tags"].as_array().unwrap() {
            assert!(["string", "bool", "int64", "float64", "binary"].contains(&tag["type"].as_str().unwrap()), "{tag}");
        }
        let process = &processes[span["processID"].as_str().unwrap()];
        assert!(process["serviceName"].is_string());
    }
}

#[test]
fn jaeger_api_answers_in_jaegers_shapes() {
    let server = server(None);
    let port = server.port;
    let services = ok(port, "/api/services");
    let services: BTreeSet<&str> = services.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(services, BTreeSet::from(["cart", "catalog", "checkout", "frontend", "shipping"]));
    let operations = ok(port, "/api/services/frontend/operations");
    assert!(!operations.as_array().unwrap().is_empty());
    let with_kinds = ok(port, "/api/operations?service=frontend&spanKind=server");
    assert!(with_kinds.as_array().unwrap().iter().all(|o| o["spanKind"] == "server" && o["name"].is_string()));

    let traces = ok(port, "/api/traces?service=frontend&limit=5");
    assert_eq!(traces.as_array().unwrap().len(), 5);
    traces.as_array().unwrap().iter().for_each(assert_jaeger_trace);

    // One trace by id: every span the generator made of it.
    let id = hex::encode(server.ids[7]);
    let trace = ok(port, &format!("/api/traces/{id}"));
    assert_eq!(trace[0]["traceID"], id.as_str());
    assert_jaeger_trace(&trace[0]);
    let by_query = ok(port, &format!("/api/traces?traceID={id}"));
    assert_eq!(by_query[0]["spans"].as_array().unwrap().len(), trace[0]["spans"].as_array().unwrap().len());

    // Filters: tags in logfmt and JSON, durations, operation.
    let errors = ok(port, "/api/traces?service=checkout&tags=error%3Dtrue&limit=50");
    for t in errors.as_array().unwrap() {
        assert!(t["spans"].as_array().unwrap().iter().any(|s| s["tags"].as_array().unwrap().iter().any(|tag| tag["key"] == "error" && tag["value"] == true)));
    }
    let json_tags = ok(port, "/api/traces?service=checkout&tags=%7B%22error%22%3A%22true%22%7D&limit=50");
    assert_eq!(json_tags.as_array().unwrap().len(), errors.as_array().unwrap().len());
    let slow = ok(port, "/api/traces?service=frontend&minDuration=50ms&limit=100");
    for t in slow.as_array().unwrap() {
        assert!(t["spans"].as_array().unwrap().iter().any(|s| s["duration"].as_i64().unwrap() >= 50_000));
    }
    let op = operations[0].as_str().unwrap();
    let by_op = ok(port, &format!("/api/traces?service=frontend&operation={}&limit=20", op.replace(' ', "%20").replace('/', "%2F")));
    for t in by_op.as_array().unwrap() {
        assert!(t["spans"].as_array().unwrap().iter().any(|s| s["operationName"] == op));
    }
    let range = ok(port, &format!("/api/traces?service=frontend&start=1&end={}", 1_000_000));
    assert!(range.as_array().unwrap().is_empty(), "nothing stored in 1970");

    let dependencies = ok(port, &format!("/api/dependencies?endTs={}&lookback=3600000", now_ns() / 1_000_000 + 60_000));
    let links: BTreeSet<(String, String)> = dependencies
        .as_array()
        .unwrap()
        .iter()
        .inspect(|d| assert!(d["callCount"].as_u64().unwrap() > 0))
        .map(|d| (d["parent"].as_str().unwrap().to_string(), d["child"].as_str().unwrap().to_string()))
        .collect();
    assert!(links.contains(&("frontend".into(), "checkout".into())) || links.iter().any(|(p, _)| p == "frontend"), "{links:?}");

    // Bad parameters and missing things.
    bad(port, "/api/traces?limit=5", 400, "'service'");
    bad(port, "/api/traces?service=frontend&minDuration=abc", 400, "minDuration");
    bad(port, "/api/traces?service=frontend&maxDuration=10", 400, "missing unit");
    bad(port, "/api/traces?service=frontend&minDuration=2s&maxDuration=1s", 400, "greater than");
    bad(port, "/api/traces?service=frontend&limit=many", 400, "'limit'");
    bad(port, "/api/traces?service=frontend&start=10&end=5", 400, "after");
    bad(port, "/api/traces?service=frontend&tags=%7Bbroken", 400, "tags");
    bad(port, "/api/operations", 400, "'service'");
    bad(port, "/api/operations?service=frontend&spanKind=sideways", 400, "spanKind");
    bad(port, "/api/dependencies?endTs=yesterday", 400, "endTs");
    bad(port, "/api/traces/not-hex", 400, "trace id");
    bad(port, &format!("/api/traces/{}", "ab".repeat(16)), 404, "not found");
    bad(port, "/api/no/such/thing", 404, "no such");
}

#[test]
fn tracepipes_own_api() {
    let server = server(None);
    let port = server.port;
    let resolved = ok(port, "/api/v1/alerts?state=resolved");
    assert_eq!(resolved.as_array().unwrap().len(), 1);
    assert_eq!(resolved[0]["schema"], "tracepipe.alert/v1");
    let open = ok(port, "/api/v1/alerts?state=open");
    let open: Vec<&str> = open.as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(open, ["error_spike"], "the edge alert resolved; the error spike still fires");
    bad(port, "/api/v1/alerts?state=sideways", 400, "state");

    let bottlenecks = ok(port, "/api/v1/bottlenecks");
    assert!(!bottlenecks.as_array().unwrap().is_empty());
    for endpoint in bottlenecks.as_array().unwrap() {
        let share: f64 = endpoint["contributors"].as_array().unwrap().iter().map(|c| c["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 0.01, "shares of {} add up to {share}", endpoint["operation"]);
    }
    let edges = ok(port, "/api/v1/edges");
    assert!(edges.as_array().unwrap().iter().any(|e| e["connection_type"] == "database"), "{edges}");
    assert!(edges.as_array().unwrap().iter().all(|e| e["calls"].as_u64().unwrap() > 0));
    let errors = ok(port, "/api/v1/errors");
    for group in errors.as_array().unwrap() {
        assert!(group["count"].as_u64().unwrap() > 0 && group["exemplar_trace_ids"].is_array());
    }
    let operations = ok(port, "/api/v1/operations?service=frontend");
    assert!(operations.as_array().unwrap().iter().all(|o| o["p99_ms"].as_f64().unwrap() >= o["p50_ms"].as_f64().unwrap()));
    bad(port, "/api/v1/edges?start=x", 400, "'start'");

    let id = hex::encode(server.ids[3]);
    let detail = ok(port, &format!("/api/v1/traces/{id}"));
    let trace = &detail[0];
    assert_jaeger_trace(trace);
    let root = trace["spans"].as_array().unwrap().iter().find(|s| s["references"].as_array().unwrap().iter().all(|r| r["refType"] != "CHILD_OF")).unwrap();
    let path = trace["criticalPath"].as_object().unwrap();
    assert!(path.contains_key(root["spanID"].as_str().unwrap()), "the root is on its critical path");
    let on_path_us: i64 = path.values().map(|v| v.as_i64().unwrap()).sum();
    let root_us = root["duration"].as_i64().unwrap();
    assert!((on_path_us - root_us).abs() <= path.len() as i64 + 1, "self times on the path add up to the root's duration: {on_path_us} vs {root_us}");
    assert_eq!(trace["sampling"]["rule"], "test");
}

#[test]
fn sampling_strategies_are_served_in_jaegers_format() {
    let server = server(None);
    let port = server.port;
    let bottlenecks = ok(port, "/api/v1/bottlenecks");
    let busiest = bottlenecks.as_array().unwrap().iter().max_by_key(|e| e["traces"].as_u64().unwrap()).unwrap();
    let service = busiest["service"].as_str().unwrap();
    let operation = busiest["operation"].as_str().unwrap();
    let (status, body) = get(port, &format!("/api/sampling?service={service}"), "");
    assert_eq!(status, 200, "{body}");
    let strategy: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(strategy["strategyType"], "PROBABILISTIC");
    // What an instrumented service reads: the busiest root operation (hundreds of traces in
    // about a minute, far above the 1 trace/s target) sampled down, below the default.
    let strategies = tracepipe_instrument::sampling::Strategies::from_jaeger_json(body.as_bytes()).unwrap();
    let probability = strategies.probability(operation);
    assert!(probability > 0.0 && probability < 0.5, "{operation}: {probability} in {body}");
    assert_eq!(strategies.probability("GET /never-seen"), 1.0, "unseen operations get the default");
    let unknown: Value = serde_json::from_str(&get(port, "/api/sampling?service=nobody", "").1).unwrap();
    assert_eq!(unknown["operationSampling"]["perOperationStrategies"], serde_json::json!([]));
    bad(port, "/api/sampling", 400, "service");
}

#[test]
fn a_configured_bearer_token_guards_the_api() {
    let server = server(Some("s3cret"));
    let (status, _) = get(server.port, "/api/services", "");
    assert_eq!(status, 401);
    let (status, _) = get(server.port, "/api/services", "Authorization: Bearer wrong\r\n");
    assert_eq!(status, 401);
    let (status, body) = get(server.port, "/api/services", "Authorization: Bearer s3cret\r\n");
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(server.port, "/", "");
    assert_eq!(status, 200, "the UI's files hold no data");
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .expect("headless Chromium (apt-get install chromium; make test installs it)")
}

/// Loads `url` in headless Chromium, lets its scripts and requests run, and returns the DOM.
fn chromium_dom(url: &str, screenshot: Option<&PathBuf>) -> String {
    let mut command = Command::new(chromium());
    command.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=15000"]);
    // Screenshots tall enough for the longest view (transactions, then funnels).
    match screenshot {
        Some(path) => command.args([format!("--screenshot={}", path.display()), "--window-size=1400,1700".to_string()]),
        None => command.args(["--dump-dom", "--window-size=1400,1000"]),
    };
    let out = command.arg(url).output().unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_ui_finds_a_trace_and_shows_its_waterfall_in_chromium() {
    let server = server(None);
    let base = format!("http://127.0.0.1:{}", server.port);
    // Search: the results list links each trace.
    let search = chromium_dom(&format!("{base}/#/search?service=frontend&limit=10"), None);
    assert!(search.contains(r#"data-ready="search""#), "the search view rendered: {search}");
    let marker = r#"data-trace-id=""#;
    let at = search.find(marker).unwrap_or_else(|| panic!("no trace in the search results: {search}")) + marker.len();
    let id = &search[at..at + 32];
    // The waterfall: one row per span, the critical path marked.
    let trace = chromium_dom(&format!("{base}/#/trace/{id}"), None);
    assert!(trace.contains(r#"data-ready="trace""#), "the trace view rendered: {trace}");
    let rows = trace.matches(r#"class="wf-row"#).count();
    let spans = ok(server.port, &format!("/api/traces/{id}"))[0]["spans"].as_array().unwrap().len();
    assert_eq!(rows, spans, "one waterfall row per span");
    assert!(trace.contains("wf-row critical"), "the critical path is highlighted");
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();
    let screenshot = artefacts.join("trace-waterfall.png");
    chromium_dom(&format!("{base}/#/trace/{id}"), Some(&screenshot));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a screenshot was saved");
    eprintln!("screenshot: {}", screenshot.display());
    // The service map and the alerts render too.
    let map = chromium_dom(&format!("{base}/#/map"), None);
    assert!(map.contains(r#"data-ready="map""#) && map.contains("class=\"node"), "the service map rendered");
    chromium_dom(&format!("{base}/#/map"), Some(&artefacts.join("service-map.png")));
    let alerts = chromium_dom(&format!("{base}/#/alerts"), None);
    assert!(alerts.contains("alert-row"), "the alerts list rendered");
}

/// What a person reads on a page: the DOM's text without scripts, styles and tags.
fn visible_text(dom: &str) -> String {
    let mut text = dom.to_string();
    for hidden in ["script", "style"] {
        let mut kept = String::new();
        let mut tail = text.as_str();
        while let Some(start) = tail.find(&format!("<{hidden}")) {
            kept.push_str(&tail[..start]);
            let end = tail[start..].find(&format!("</{hidden}>")).map_or(tail.len(), |e| start + e + hidden.len() + 3);
            tail = &tail[end..];
        }
        kept.push_str(tail);
        text = kept;
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", " ");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The trace ids the page links to, in order.
fn trace_links(dom: &str) -> Vec<String> {
    dom.match_indices(r#"data-trace-id=""#).map(|(at, marker)| dom[at + marker.len()..at + marker.len() + 32].to_string()).collect()
}

#[test]
fn every_view_shows_what_a_person_reads_in_chromium() {
    let server = server(None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();
    let page = |route: &str, ready: &str| {
        let dom = chromium_dom(&format!("{base}/#/{route}"), None);
        assert!(dom.contains(&format!(r#"data-ready="{ready}""#)), "#/{route} rendered: {dom}");
        let text = visible_text(&dom);
        for wrong in ["[object", "undefined", "NaN", "http://", "Could not load"] {
            assert!(!text.contains(wrong), "#/{route} shows `{wrong}`: {text}");
        }
        chromium_dom(&format!("{base}/#/{route}"), Some(&artefacts.join(format!("{ready}.png"))));
        (dom, text)
    };

    // Bottlenecks: a card per endpoint with its traces and each operation's share.
    let endpoints = ok(server.port, "/api/v1/bottlenecks?limit=20");
    let endpoints = endpoints.as_array().unwrap();
    assert!(!endpoints.is_empty());
    let (dom, text) = page("bottlenecks", "bottlenecks");
    assert_eq!(dom.matches(r#"class="card endpoint""#).count(), endpoints.len(), "one card per endpoint");
    for endpoint in endpoints {
        let title = format!("{}: {}", endpoint["service"].as_str().unwrap(), endpoint["operation"].as_str().unwrap());
        assert!(text.contains(&title), "`{title}` in {text}");
        assert!(text.contains(&format!("{} traces", endpoint["traces"])), "{text}");
        let top = &endpoint["contributors"][0];
        assert!(text.contains(&format!("{:.1}%", top["share"].as_f64().unwrap() * 100.0)), "the top share of {title} in {text}");
    }

    // Alerts: the spike's summary, and its exemplars as links to those traces.
    let (dom, text) = page("alerts", "alerts");
    assert!(text.contains("checkout POST /orders: 12 PaymentDeclined errors in 5 s"), "{text}");
    assert!(text.contains("new edge frontend → cart"), "{text}");
    let expected: Vec<String> = server.ids[..3].iter().map(hex::encode).collect();
    assert_eq!(trace_links(&dom), expected, "the exemplars are links to their traces");
    for id in &expected {
        assert!(text.contains(&id[..12]), "the link reads as the trace id's start: {text}");
    }

    // Errors: each group with its count, and links to exemplar traces.
    let groups = ok(server.port, "/api/v1/errors");
    let groups = groups.as_array().unwrap();
    assert!(!groups.is_empty(), "the scenario fails some traces");
    let (dom, text) = page("errors", "errors");
    for group in groups {
        assert!(text.contains(group["message"].as_str().unwrap()), "{text}");
    }
    let linked: BTreeSet<String> = trace_links(&dom).into_iter().collect();
    let exemplars: BTreeSet<String> = groups.iter().flat_map(|g| g["exemplar_trace_ids"].as_array().unwrap().iter().take(3).map(|id| id.as_str().unwrap().to_string())).collect();
    assert_eq!(linked, exemplars, "every group's first exemplars are links");

    // The service map names every service and peer.
    let (_, text) = page("map", "map");
    for node in ["frontend", "cart", "checkout"] {
        assert!(text.contains(node), "{node} on the map: {text}");
    }

    // Search: the results list the traces it found.
    let (dom, text) = page("search?service=frontend&limit=10", "search");
    assert_eq!(trace_links(&dom).len(), 10, "ten results: {text}");
    eprintln!("screenshots: {}", artefacts.display());
}

/// Root spans of `operation` on the frontend: (all, not failed, at most `max_us` long, shorter than `max_us`).
fn root_truth(url: &StoreUrl, operation: &str, max_us: i64) -> (i64, i64, i64, i64) {
    let mut store = Store::open(url).unwrap();
    let rows = store
        .query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN error = 0 THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN duration_us <= $1 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN duration_us < $1 THEN 1 ELSE 0 END), 0) FROM spans WHERE parent_span_id = '' AND service = 'frontend' AND operation = $2",
            &[tracepipe_store::Param::Int(max_us), tracepipe_store::Param::Text(operation)],
        )
        .unwrap();
    (rows[0][0].int(), rows[0][1].int(), rows[0][2].int(), rows[0][3].int())
}

#[test]
fn service_health_and_slos_match_the_stored_traces_and_show_in_chromium() {
    let server = server(None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();

    // Every generated trace is stored, so the stored root spans are the SLOs' ground truth.
    let slos = ok(server.port, "/api/v1/slos");
    let slos = slos.as_array().unwrap();
    assert_eq!(slos.len(), 2);
    let (checkouts, failed_free, _, _) = root_truth(&server.url, "GET /checkout", 0);
    let checkout = &slos[0];
    assert_eq!(checkout["name"], "checkout-availability");
    assert_eq!((checkout["events"]["total"].as_i64(), checkout["events"]["good"].as_i64()), (Some(checkouts), Some(failed_free)), "{checkout}");
    assert!(checkouts > 50, "the scenario's checkouts: {checkouts}");
    let (products, _, within, shorter) = root_truth(&server.url, "GET /product", 8_000);
    let latency = &slos[1];
    let good = latency["events"]["good"].as_i64().unwrap();
    assert_eq!(latency["events"]["total"].as_i64(), Some(products));
    assert!((shorter..=within).contains(&good), "{good} good product views, {shorter}..={within} stored under 8 ms");
    let budget = |bad: f64, total: f64, objective: f64| 1.0 - bad / (total * (1.0 - objective));
    let expected = budget((products - good) as f64, products as f64, 0.99);
    assert!((latency["budget_remaining"].as_f64().unwrap() - expected).abs() < 1e-9, "{latency}");
    let burn_down = latency["burn_down"].as_array().unwrap();
    assert_eq!(burn_down.len(), 96);
    assert_eq!(burn_down.last().unwrap()["total"].as_i64(), Some(products));
    bad(server.port, "/api/v1/slos/nonexistent", 404, "no SLO named 'nonexistent'");
    bad(server.port, "/api/v1/slos?points=0", 400, "points");

    // The overview: the frontend's requests are its server spans, every one a root.
    let services = ok(server.port, "/api/v1/services");
    let frontend = services.as_array().unwrap().iter().find(|s| s["service"] == "frontend").expect("the frontend in the overview").clone();
    let (carts, _, _, _) = root_truth(&server.url, "POST /cart", 0);
    let (tracking, _, _, _) = root_truth(&server.url, "GET /orders/status", 0);
    assert_eq!(frontend["requests"].as_i64(), Some(checkouts + products + carts + tracking), "{frontend}");
    assert_eq!(frontend["apdex_threshold_ms"], 500);
    let worst = slos.iter().map(|s| s["status"].as_str().unwrap()).max_by_key(|s| ["healthy", "degraded", "failing"].iter().position(|x| x == s)).unwrap();
    assert_eq!(frontend["status"], worst);
    bad(server.port, "/api/v1/services?window=0s", 400, "window");

    let (dom, text) = {
        let dom = chromium_dom(&format!("{base}/#/services"), None);
        assert!(dom.contains(r#"data-ready="services""#), "#/services rendered: {dom}");
        chromium_dom(&format!("{base}/#/services"), Some(&artefacts.join("services.png")));
        let text = visible_text(&dom);
        (dom, text)
    };
    assert_eq!(dom.matches(r#"class="service-row""#).count(), services.as_array().unwrap().len(), "a row per service: {text}");
    let row = format!(
        "frontend {worst} {:.1} {:.2}% ",
        frontend["requests_per_second"].as_f64().unwrap(),
        frontend["error_ratio"].as_f64().unwrap() * 100.0
    );
    assert!(text.contains(&row), "`{row}` in {text}");
    assert!(text.contains(&format!("{:.2} T=500 ms", frontend["apdex"].as_f64().unwrap())), "{text}");
    assert!(text.contains("checkout-availability") && text.contains("product-latency"), "{text}");

    let dom = chromium_dom(&format!("{base}/#/slos"), None);
    assert!(dom.contains(r#"data-ready="slos""#), "#/slos rendered: {dom}");
    chromium_dom(&format!("{base}/#/slos"), Some(&artefacts.join("slos.png")));
    let text = visible_text(&dom);
    for wrong in ["[object", "undefined", "NaN", "Could not load"] {
        assert!(!text.contains(wrong), "#/slos shows `{wrong}`: {text}");
    }
    assert_eq!(dom.matches(r#"class="card slo""#).count(), 2);
    assert_eq!(dom.matches(r#"class="budget"#).count(), 2, "a burn-down line per SLO");
    assert!(text.contains("checkout-availability frontend"), "{text}");
    assert!(text.contains("objective 99.500% rolling 28d, good = not an error"), "{text}");
    assert!(text.contains("objective 99.000% rolling 28d, good = at most 8 ms"), "{text}");
    assert!(text.contains(&format!("{failed_free} good of {checkouts} events")), "{text}");
    assert!(text.contains(&format!("error budget left {:.1}%", expected * 100.0)), "{text}");
    assert!(text.contains("page 1h and 5m 14.4×"), "the alerting windows: {text}");
    eprintln!("screenshots: {}", artefacts.display());
}

/// The funnel journeys in the store.
fn stored_journeys(url: &StoreUrl) -> Vec<tracepipe_schemas::analytics::FunnelJourney> {
    let mut store = Store::open(url).unwrap();
    let rows = store.query("SELECT body FROM rollups WHERE kind = 'funnel_journey'", &[]).unwrap();
    rows.iter()
        .map(|row| match serde_json::from_str(row[0].text()).unwrap() {
            tracepipe_schemas::analytics::Rollup::FunnelJourney(j) => j,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// `value` as Chromium's `toLocaleString` writes it in English: thousands separated by commas.
fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (whole, fraction) = text.split_once('.').map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    fraction.map_or(out.clone(), |f| format!("{out}.{f}"))
}

#[test]
fn transactions_and_funnels_match_the_generated_traces_and_show_in_chromium() {
    use tracepipe_schemas::otlp_trace::span::SpanKind;
    let server = server_with_voucher_checkouts();
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();

    // The ground truth: the same traces, drawn again, and what their generator recorded.
    let (traces, generator) = stored::generated(SMALL, TRACES, server.start);
    let spans_of = |service: &str, operation: &str, kind: SpanKind| -> Vec<(usize, &tracepipe_schemas::otlp_trace::Span)> {
        traces
            .iter()
            .enumerate()
            .flat_map(|(t, trace)| trace.spans.iter().map(move |(s, span)| (t, *s, span)))
            .filter(|(_, s, span)| generator.service_of(*s) == service && span.name == operation && span.kind == kind as i32)
            .map(|(t, _, span)| (t, span))
            .collect()
    };
    let failed = |span: &tracepipe_schemas::otlp_trace::Span| span.status.as_ref().is_some_and(|s| s.code == 2);
    let duration_ms = |span: &tracepipe_schemas::otlp_trace::Span| (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
    let entries = spans_of("frontend", "GET /checkout", SpanKind::Server);
    let charges = spans_of("checkout", "POST", SpanKind::Client);
    let shipped = spans_of("shipping", "order-placed", SpanKind::Consumer);
    let business = |service: &str, operation: &str, key: &str| generator.business[&(service.to_string(), operation.to_string(), key.to_string())].clone();
    let amounts = business("checkout", "POST /orders", "order.amount");
    let methods = business("checkout", "POST /orders", "payment.method");
    let types = business("frontend", "GET /checkout", "order.type");

    let body = {
        let (status, body) = json(server.port, "/api/v1/transactions?window=24h");
        assert_eq!(status, 200, "{body}");
        body
    };
    let checkout = body["data"].as_array().unwrap().iter().find(|t| t["name"] == "checkout").expect("the checkout transaction").clone();
    let count = entries.len() as u64;
    assert!(count > 50, "{count} checkouts");
    assert_eq!(checkout["count"].as_u64(), Some(count), "{checkout}");
    assert_eq!(checkout["errors"].as_u64(), Some(entries.iter().filter(|(_, s)| failed(s)).count() as u64));
    // Every checkout places an order and ships it; those paid by voucher reach no card provider.
    let charged: BTreeSet<usize> = charges.iter().map(|(t, _)| *t).collect();
    assert!(charged.len() < entries.len(), "some checkouts skip the card provider");
    assert_eq!(checkout["complete"].as_u64(), Some(charged.len() as u64), "complete = every step present");
    assert!((checkout["coverage"].as_f64().unwrap() - charged.len() as f64 / count as f64).abs() < 1e-12);
    let mean_ms = entries.iter().map(|(_, s)| duration_ms(s)).sum::<f64>() / count as f64;
    assert!((checkout["avg_ms"].as_f64().unwrap() - mean_ms).abs() < 1e-6, "{checkout}");
    let amount = &checkout["metrics"][0];
    assert_eq!((amount["name"].as_str(), amount["count"].as_u64()), (Some("order-amount"), Some(amounts.count)));
    assert!((amount["sum"].as_f64().unwrap() - amounts.sum).abs() < 1e-6 * amounts.sum, "{amount} vs {}", amounts.sum);
    let by_method: std::collections::BTreeMap<String, u64> =
        checkout["counts_by"][0]["values"].as_array().unwrap().iter().map(|v| (v["value"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap())).collect();
    assert_eq!(by_method, methods.values, "counts by payment.method");
    let by_type: std::collections::BTreeMap<String, u64> = checkout["splits"].as_array().unwrap().iter().map(|v| (v["value"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap())).collect();
    assert_eq!(by_type, types.values, "split by order.type");
    let steps = checkout["steps"].as_array().unwrap();
    for (step, spans) in [(&steps[1], &charges), (&steps[2], &shipped)] {
        assert_eq!(step["count"].as_u64(), Some(spans.len() as u64), "{step}");
        assert_eq!(step["errors"].as_u64(), Some(spans.iter().filter(|(_, s)| failed(s)).count() as u64), "{step}");
        let mean = spans.iter().map(|(_, s)| duration_ms(s)).sum::<f64>() / spans.len() as f64;
        assert!((step["avg_ms"].as_f64().unwrap() - mean).abs() < 1e-6, "{step}: mean {mean}");
    }

    // The funnel: every journey the generator began is stored (the clock moved on an hour), as
    // far as it went; the API counts those that began by the time every journey had settled.
    let journey = &generator.journeys[0];
    assert!(journey.reached[2] > 0 && journey.reached[1] < journey.reached[0], "{journey:?}");
    let stored = stored_journeys(&server.url);
    let reached_by = |journeys: &[tracepipe_schemas::analytics::FunnelJourney]| (0..3).map(|k| journeys.iter().filter(|j| j.reached.len() > k).count() as u64).collect::<Vec<_>>();
    assert_eq!(reached_by(&stored), journey.reached, "stored journeys reaching each step");
    let funnel = &body["funnels"][0];
    assert_eq!(funnel["name"], "purchase");
    let settled_ms = funnel["settled_before_unix_ms"].as_u64().unwrap();
    let settled: Vec<_> = stored.into_iter().filter(|j| j.started_unix_nanos / 1_000_000 <= settled_ms).collect();
    let expected = reached_by(&settled);
    assert!(expected[0] + 3 >= journey.reached[0], "all but the last journeys settled: {expected:?} of {journey:?}");
    assert_eq!(funnel["journeys"].as_u64(), Some(expected[0]), "{funnel}");
    for (k, reached) in expected.iter().enumerate() {
        let step = &funnel["steps"][k];
        assert_eq!(step["reached"].as_u64(), Some(*reached), "{step}");
        assert!((step["conversion"].as_f64().unwrap() - *reached as f64 / expected[0] as f64).abs() < 1e-12);
    }
    assert_eq!(funnel["complete"].as_u64(), Some(expected[2]));
    bad(server.port, "/api/v1/transactions?window=0s", 400, "window");

    // What a person sees.
    let url = format!("{base}/#/transactions");
    let dom = chromium_dom(&url, None);
    assert!(dom.contains(r#"data-ready="transactions""#), "#/transactions rendered: {dom}");
    chromium_dom(&url, Some(&artefacts.join("transactions.png")));
    let text = visible_text(&dom);
    for wrong in ["[object", "undefined", "NaN", "Could not load"] {
        assert!(!text.contains(wrong), "#/transactions shows `{wrong}`: {text}");
    }
    assert_eq!(dom.matches(r#"class="card transaction""#).count(), 2, "{text}");
    let coverage = format!("traced end to end {:.1}% {} of {} with every step", charged.len() as f64 * 100.0 / count as f64, charged.len(), count);
    assert!(text.contains(&coverage), "`{coverage}` in {text}");
    let sum = format!("order-amount order.amount {} {}", amounts.count, grouped(amounts.sum, 2));
    assert!(text.contains(&sum), "`{sum}` in {text}");
    for (method, n) in &methods.values {
        assert!(text.contains(&format!("{method} {n} ")), "payment method {method}: {text}");
    }
    let track = format!("3. track-order {} {:.1}%", expected[2], expected[2] as f64 * 100.0 / expected[0] as f64);
    assert!(text.contains(&track), "`{track}` in {text}");
    assert!(text.contains(&format!("{} journeys closed, {} through every step", expected[0], expected[2])), "{text}");
    eprintln!("screenshots: {}", artefacts.display());
}

#[test]
fn series_cohorts_and_comparisons_match_the_generated_traces_and_show_in_chromium() {
    use tracepipe_schemas::otlp_trace::span::SpanKind;
    let server = server(None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();
    let (traces, generator) = stored::generated(SMALL, TRACES, server.start);
    let products: Vec<&tracepipe_schemas::otlp_trace::Span> = traces
        .iter()
        .flat_map(|trace| trace.spans.iter())
        .filter(|(s, span)| generator.service_of(*s) == "frontend" && span.name == "GET /product" && span.kind == SpanKind::Server as i32)
        .map(|(_, span)| span)
        .collect();
    let failed = products.iter().filter(|s| s.status.as_ref().is_some_and(|s| s.code == 2)).count() as u64;
    let (start_us, end_us) = (server.start / 1000 - 120_000_000, now_ns() / 1000);
    let range = format!("start={start_us}&end={end_us}");

    // The series adds up to every request, at any resolution.
    for resolution in ["1m", "5m", "1h", "1d"] {
        let (status, body) = json(server.port, &format!("/api/v1/series?service=frontend&operation=GET%20/product&resolution={resolution}&{range}"));
        assert_eq!(status, 200, "{body}");
        let points = body["data"]["points"].as_array().unwrap();
        let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        let errors: u64 = points.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
        assert_eq!((total, errors), (products.len() as u64, failed), "{resolution}: {body}");
        assert!(points.iter().all(|p| p["p50_ms"].as_f64().unwrap() <= p["p99_ms"].as_f64().unwrap()));
    }
    // An SLO's events over time: its event count is the checkouts' (roots of GET /checkout).
    let checkouts = traces.iter().filter(|t| t.spans.iter().any(|(_, s)| s.parent_span_id.is_empty() && s.name == "GET /checkout")).count() as u64;
    let (status, body) = json(server.port, &format!("/api/v1/series?slo=checkout-availability&resolution=5m&{range}"));
    assert_eq!(status, 200, "{body}");
    let points = body["data"]["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>(), checkouts, "{body}");
    assert!(points.iter().all(|p| p["errors"].as_u64() <= p["count"].as_u64() && p["p99_ms"].is_null()), "{body}");
    bad(server.port, "/api/v1/series?service=frontend&operation=x&resolution=2m", 400, "resolution");
    bad(server.port, "/api/v1/series?service=frontend", 400, "operation");

    // Cohorts: the version every request ran and the flag variants, as generated.
    let (_, body) = json(server.port, &format!("/api/v1/cohorts?service=frontend&operation=GET%20/product&{range}"));
    let cohorts = body["data"].as_array().unwrap();
    let count_of = |attribute: &str, value: &str| cohorts.iter().find(|c| c["attribute"] == attribute && c["value"] == value).and_then(|c| c["count"].as_u64());
    assert_eq!(count_of("service.version", "1.0.0"), Some(products.len() as u64), "{body}");
    let variants = &generator.business[&("frontend".to_string(), "GET /product".to_string(), "feature_flag.recommendations".to_string())].values;
    for (variant, n) in variants {
        assert_eq!(count_of("feature_flag.recommendations", variant), Some(*n), "{variant}: {body}");
    }

    // The flag changes nothing, and neither does time: no significant difference.
    let (status, body) = json(server.port, &format!("/api/v1/compare?service=frontend&operation=GET%20/product&attribute=feature_flag.recommendations&baseline=on&candidate=off&{range}"));
    assert_eq!(status, 200, "{body}");
    let c = &body["data"];
    assert_eq!((c["baseline"]["count"].as_u64(), c["candidate"]["count"].as_u64()), (Some(variants["on"]), Some(variants["off"])), "{c}");
    assert_eq!(c["verdict"], "no_significant_difference", "{c}");
    assert!(c["latency"]["p_value"].as_f64().unwrap() > 0.005 && !c["distributions"]["baseline"].as_array().unwrap().is_empty());
    let middle = server.start / 1000 + 4_000_000;
    let (status, body) =
        json(server.port, &format!("/api/v1/compare?service=frontend&operation=GET%20/product&baseline_start={start_us}&baseline_end={middle}&candidate_start={middle}&candidate_end={end_us}"));
    assert_eq!(status, 200, "{body}");
    let c = &body["data"];
    assert_eq!(c["baseline"]["count"].as_u64().unwrap() + c["candidate"]["count"].as_u64().unwrap(), products.len() as u64, "{c}");
    bad(server.port, "/api/v1/compare?service=frontend&operation=GET%20/product", 400, "two cohorts");
    let (status, body) = json(server.port, &format!("/api/v1/changepoints?service=frontend&operation=GET%20/product&metric=p99&{range}"));
    assert_eq!((status, body["data"]["changepoints"].as_array().map(Vec::len)), (200, Some(0)), "eight seconds of steady traffic: {body}");
    bad(server.port, "/api/v1/changepoints?service=frontend&operation=x&metric=p42", 400, "metric");
    // The stored minute has not settled yet (a forecast uses whole buckets only).
    bad(server.port, &format!("/api/v1/forecast?service=frontend&operation=GET%20/product&{range}"), 404, "no stored requests");
    bad(server.port, "/api/v1/forecast?service=frontend&operation=GET%20/product&horizon=1000d", 400, "horizon");
    let (status, body) = json(server.port, "/api/v1/canaries");
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(0)), "one version everywhere: {body}");
    bad(server.port, &format!("/api/v1/compare?service=frontend&operation=x&baseline_start={start_us}"), 400, "baseline_end");
    bad(server.port, "/api/v1/compare?service=frontend&operation=x&attribute=a&baseline=1&candidate=2&alpha=2", 400, "alpha");

    // What a person sees: the charts and the comparison of the flag's variants.
    let url = format!("{base}/#/trends?service=frontend&operation=GET%20%2Fproduct&resolution=1m");
    let dom = chromium_dom(&url, None);
    assert!(dom.contains(r#"data-ready="trends""#), "#/trends rendered: {dom}");
    chromium_dom(&url, Some(&artefacts.join("trends.png")));
    let text = visible_text(&dom);
    for wrong in ["[object", "undefined", "NaN", "Could not load"] {
        assert!(!text.contains(wrong), "#/trends shows `{wrong}`: {text}");
    }
    for chart in ["Requests per second", "Error ratio", "Latency"] {
        assert!(dom.contains(&format!(r#"data-chart="{chart}""#)), "{chart} chart: {text}");
    }
    assert!(dom.matches(r#"class="series "#).count() >= 5, "rate, errors and three percentiles drawn");
    assert!(text.contains("Change points No change points in this range."), "{text}");
    assert!(text.contains("No p99 forecast: no stored requests in this range to forecast from"), "{text}");
    let verdict = "feature_flag.recommendations=off against feature_flag.recommendations=on: no significant difference";
    let (on, off) = (variants["on"], variants["off"]);
    let (baseline, candidate) = if on >= off { ("on", "off") } else { ("off", "on") };
    let verdict = if baseline == "on" { verdict.to_string() } else { verdict.replace("=off against", "=X against").replace("=on:", "=off:").replace("=X", "=on") };
    assert!(text.contains(&verdict), "`{verdict}` in {text}");
    assert!(text.contains(&format!("feature_flag.recommendations={candidate} {}", variants[candidate])), "{text}");
    assert!(dom.contains(r#"data-chart="distributions""#) && dom.contains(r#"class="area candidate""#));
    eprintln!("screenshots: {}", artefacts.display());
}

#[test]
fn two_traces_compare_by_ancestry_and_a_trace_with_its_typical_one_in_chromium() {
    let server = server_with_voucher_checkouts();
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();
    let (traces, generator) = stored::generated(SMALL, TRACES, server.start);
    let checkouts: Vec<_> = traces.iter().filter(|t| is_checkout(t)).collect();
    let a = checkouts.iter().find(|t| charged(t, &generator)).expect("a charged checkout");
    let b = checkouts.iter().find(|t| !charged(t, &generator)).expect("a voucher checkout");
    let (a_id, b_id) = (hex::encode(a.trace_id), hex::encode(b.trace_id));

    let (status, body) = json(server.port, &format!("/api/v1/compare/traces?a={a_id}&b={b_id}"));
    assert_eq!(status, 200, "{body}");
    let c = &body["data"];
    let nodes = c["nodes"].as_array().unwrap();
    let node = |service: &str, operation: &str| nodes.iter().find(|n| n["service"] == service && n["operation"] == operation).unwrap_or_else(|| panic!("{service} {operation}: {c}"));
    assert_eq!(node("checkout", "POST")["presence"], "only_a", "{c}");
    assert_eq!(node("frontend", "GET /checkout")["presence"], "both");
    assert_eq!(node("frontend", "GET /checkout")["depth"], 0);
    let root_a = a.spans.iter().find(|(_, s)| s.parent_span_id.is_empty()).unwrap().1.clone();
    let root_b = b.spans.iter().find(|(_, s)| s.parent_span_id.is_empty()).unwrap().1.clone();
    let micros = |s: &tracepipe_schemas::otlp_trace::Span| ((s.end_time_unix_nano - s.start_time_unix_nano) / 1000) as f64 / 1000.0;
    let delta = node("frontend", "GET /checkout")["delta_ms"].as_f64().unwrap();
    assert!((delta - (micros(&root_b) - micros(&root_a))).abs() < 1e-9, "{delta}");
    assert!(c["only_in_a"].as_u64().unwrap() >= 1);
    // With its typical trace: another checkout.
    let (status, body) = json(server.port, &format!("/api/v1/compare/traces?a={a_id}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["data"]["b_is_typical"].as_bool(), body["data"]["b"]["root_operation"].as_str()), (Some(true), Some("GET /checkout")), "{body}");
    assert_ne!(body["data"]["b"]["trace_id"], body["data"]["a"]["trace_id"]);
    bad(server.port, "/api/v1/compare/traces?b=1", 400, "'a'");

    let url = format!("{base}/#/compare?a={a_id}&b={b_id}");
    let dom = chromium_dom(&url, None);
    assert!(dom.contains(r#"data-ready="compare""#), "#/compare rendered: {dom}");
    chromium_dom(&url, Some(&artefacts.join("compare.png")));
    let text = visible_text(&dom);
    for wrong in ["[object", "undefined", "NaN", "Could not load"] {
        assert!(!text.contains(wrong), "#/compare shows `{wrong}`: {text}");
    }
    assert!(text.contains("checkout POST only in A"), "{text}");
    assert!(text.contains("operations only in A: 1 · only in B: 0"), "{text}");
    let trace_page = chromium_dom(&format!("{base}/#/trace/{a_id}"), None);
    assert!(visible_text(&trace_page).contains("Compare with the typical trace of this endpoint"), "{trace_page}");
}

#[test]
fn the_service_map_labels_edges_with_the_change_between_two_versions_in_chromium() {
    // Half of checkout's requests on 2.0.0 from the start, 30% slower.
    let rollout = SMALL.replace("after_s: 240, share: 0.1, complete_after_s: 600, latency_factor: 1.3", "after_s: 0, share: 0.5, latency_factor: 1.3");
    assert_ne!(rollout, SMALL);
    let server = server_of(&rollout, None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artefacts).unwrap();
    let (status, body) = json(server.port, "/api/v1/edges?attribute=service.version&baseline=1.0.0&candidate=2.0.0");
    assert_eq!(status, 200, "{body}");
    let edges = body["data"].as_array().unwrap();
    let into_checkout = edges.iter().find(|e| e["client"] == "frontend" && e["server"] == "checkout").expect("frontend → checkout");
    let c = &into_checkout["comparison"];
    assert!(c["baseline_requests"].as_u64().unwrap() > 20 && c["candidate_requests"].as_u64().unwrap() > 20, "{c}");
    assert!(c["p50_delta_ms"].as_f64().unwrap() > 0.0, "2.0.0 is slower: {c}");
    assert!(edges.iter().filter(|e| e["server"] != "checkout").all(|e| e["comparison"].is_null()), "only checkout ran two versions");
    bad(server.port, "/api/v1/edges?attribute=service.version", 400, "go together");

    let url = format!("{base}/#/map?attribute=service.version&baseline=1.0.0&candidate=2.0.0");
    let dom = chromium_dom(&url, None);
    assert!(dom.contains(r#"data-ready="map""#), "{dom}");
    chromium_dom(&url, Some(&artefacts.join("map-versions.png")));
    let text = visible_text(&dom);
    let label = format!("Δp50 +{}", {
        let d = c["p50_delta_ms"].as_f64().unwrap();
        if d < 10.0 { format!("{d:.2} ms") } else { format!("{d:.1} ms") }
    });
    assert!(text.contains(&label), "`{label}` in {text}");
    assert!(text.contains("running both service.version 1.0.0 and 2.0.0") || text.contains("ran both service.version 1.0.0 and 2.0.0"), "{text}");
}
