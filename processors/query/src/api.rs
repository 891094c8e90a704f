//! The HTTP API: the subset of Jaeger's query API that Grafana's Jaeger data source and Jaeger's
//! UI call, in Jaeger's response shapes, and tracepipe's own under /api/v1.
//!
//! Every answer is `{"data": …, "total": n, "limit": 0, "offset": 0, "errors": null}`; a failure
//! is the same envelope with `"data": null` and `"errors": [{"code": status, "msg": why}]`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_schemas::analytics::{Alert, AlertState, BottleneckRollup, EdgeWindow, ErrorGroupRollup, Rollup};
use tracepipe_store::{Store, StoreError};

use crate::critical_path;
use crate::params::{self, BadParameter, Params};
use crate::reader::{self, StoredTrace, TraceQuery};
use crate::sampling::AdaptiveSampling;

const HOUR_US: i64 = 3_600_000_000;
const DEFAULT_TRACE_LIMIT: usize = 100;
const MAX_TRACE_LIMIT: usize = 1_500;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Mutex<Store>>,
    pub sampling: Arc<AdaptiveSampling>,
    pub slos: Arc<[tracepipe_analytics::slo::SloSpec]>,
    pub transactions: Arc<[tracepipe_analytics::transactions::TransactionSpec]>,
    pub funnels: Arc<[tracepipe_analytics::transactions::FunnelSpec]>,
}

pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

impl From<BadParameter> for ApiError {
    fn from(bad: BadParameter) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, bad.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        tracing::warn!(%error, "store query failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": self.status.as_u16(), "msg": self.message}]});
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult = Result<Json<Value>, ApiError>;

pub(crate) fn envelope(data: Value) -> Json<Value> {
    let total = data.as_array().map_or(0, Vec::len);
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

/// Runs `read` on the store off the reactor (the store's clients block).
pub(crate) async fn read<T: Send + 'static>(state: &ApiState, read: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&mut store)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
    .map_err(ApiError::from)
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as i64
}

// ---- Jaeger ----------------------------------------------------------------------------------

pub async fn services(State(state): State<ApiState>) -> ApiResult {
    let services = read(&state, reader::services).await?;
    Ok(envelope(json!(services)))
}

pub async fn service_operations(State(state): State<ApiState>, Path(service): Path<String>) -> ApiResult {
    let operations = read(&state, move |s| reader::operations(s, &service, None)).await?;
    let mut names: Vec<String> = operations.into_iter().map(|(name, _)| name).collect();
    names.dedup();
    Ok(envelope(json!(names)))
}

pub async fn operations(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let service = params.required("service")?.to_string();
    let span_kind = params.text("spanKind").map(str::to_string);
    if let Some(kind) = &span_kind {
        if !["server", "client", "producer", "consumer", "internal", ""].contains(&kind.as_str()) {
            return Err(BadParameter(format!("parameter 'spanKind' must be one of server, client, producer, consumer, internal; got `{kind}`")).into());
        }
    }
    let operations = read(&state, move |s| reader::operations(s, &service, span_kind.as_deref())).await?;
    Ok(envelope(Value::Array(operations.into_iter().map(|(name, kind)| json!({"name": name, "spanKind": kind})).collect())))
}

pub async fn find_traces(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let ids: Vec<String> = params.all("traceID").map(normalize_trace_id).collect::<Result<_, _>>()?;
    let limit = params.limit("limit", DEFAULT_TRACE_LIMIT, MAX_TRACE_LIMIT)?;
    if !ids.is_empty() {
        let traces = read(&state, move |s| reader::traces(s, &ids)).await?;
        return Ok(envelope(Value::Array(traces.iter().map(jaeger_trace).collect())));
    }
    let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
    let query = TraceQuery {
        service: params.required("service")?.to_string(),
        operation: params.text("operation").filter(|o| *o != "all").map(str::to_string),
        tags: params::tags(&params)?,
        min_duration_us: params.duration_us("minDuration")?,
        max_duration_us: params.duration_us("maxDuration")?,
        start_us,
        end_us,
        limit,
    };
    if let (Some(min), Some(max)) = (query.min_duration_us, query.max_duration_us) {
        if min > max {
            return Err(BadParameter(format!("'minDuration' ({min}µs) is greater than 'maxDuration' ({max}µs)")).into());
        }
    }
    let traces = read(&state, move |s| {
        let ids = reader::find_trace_ids(s, &query)?;
        reader::traces(s, &ids)
    })
    .await?;
    Ok(envelope(Value::Array(traces.iter().map(jaeger_trace).collect())))
}

pub async fn trace(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let trace = one_trace(&state, &id).await?;
    Ok(envelope(json!([jaeger_trace(&trace)])))
}

pub(crate) async fn one_trace(state: &ApiState, id: &str) -> Result<StoredTrace, ApiError> {
    let id = normalize_trace_id(id)?;
    let wanted = id.clone();
    read(state, move |s| reader::traces(s, &[wanted]))
        .await?
        .pop()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("trace not found: {id}")))
}

/// A trace id as stored: 32 lowercase hex digits (Jaeger clients may drop leading zeros).
fn normalize_trace_id(id: &str) -> Result<String, BadParameter> {
    let id = id.trim();
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(BadParameter(format!("`{id}` is not a trace id (1 to 32 hex digits)")));
    }
    Ok(format!("{:0>32}", id.to_ascii_lowercase()))
}

pub async fn dependencies(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let end_ms = params.integer("endTs")?.unwrap_or(now_us() / 1_000);
    let lookback_ms = params.integer("lookback")?.unwrap_or(HOUR_US / 1_000);
    if lookback_ms < 0 {
        return Err(BadParameter(format!("parameter 'lookback' must not be negative, got {lookback_ms}")).into());
    }
    let edges = edge_totals(&state, end_ms - lookback_ms, end_ms).await?;
    let mut links: BTreeMap<(String, String), u64> = BTreeMap::new();
    for edge in edges.values() {
        *links.entry((edge.client.clone(), edge.server.clone())).or_default() += edge.calls;
    }
    Ok(envelope(Value::Array(links.into_iter().map(|((parent, child), calls)| json!({"parent": parent, "child": child, "callCount": calls})).collect())))
}

/// Per-operation head-sampling probabilities for `service`, in Jaeger's remote-sampling format
/// (not wrapped in the API's envelope: Jaeger's clients and tracepipe's read it as it is).
pub async fn sampling_strategy(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> Result<Json<Value>, ApiError> {
    let params = Params::new(pairs);
    let service = params.required("service")?.to_string();
    let sampling = state.sampling.clone();
    // The analyzer emits a window after it closed and its lateness passed: look that much further back.
    let end_ms = now_us() / 1_000;
    let start_ms = end_ms - (sampling.lookback.as_millis() as i64) - 15 * 60_000;
    let rollups: Vec<BottleneckRollup> = rollups_between(&state, "bottlenecks", start_ms, end_ms, Some(service))
        .await?
        .into_iter()
        .filter_map(|rollup| match rollup {
            Rollup::Bottlenecks(rollup) => Some(rollup),
            _ => None,
        })
        .collect();
    Ok(Json(sampling.strategy(&sampling.probabilities(&rollups))))
}

/// One trace in Jaeger's shape: spans with `processID`s into a `processes` map.
pub fn jaeger_trace(trace: &StoredTrace) -> Value {
    let mut processes: Vec<Value> = Vec::new();
    let mut process_ids: BTreeMap<String, String> = BTreeMap::new();
    let spans: Vec<Value> = trace
        .spans
        .iter()
        .map(|span| {
            let process = serde_json::to_value(&span.body.process).unwrap_or(Value::Null);
            let key = process.to_string();
            let next = process_ids.len() + 1;
            let process_id = process_ids
                .entry(key)
                .or_insert_with(|| {
                    processes.push(process);
                    format!("p{next}")
                })
                .clone();
            json!({
                "traceID": span.trace_id,
                "spanID": span.span_id,
                "flags": 1,
                "operationName": span.operation,
                "references": span.body.references,
                "startTime": span.start_us,
                "duration": span.duration_us,
                "tags": span.body.tags,
                "logs": span.body.logs,
                "processID": process_id,
                "warnings": if span.body.warnings.is_empty() { Value::Null } else { json!(span.body.warnings) },
            })
        })
        .collect();
    let processes: serde_json::Map<String, Value> = processes.into_iter().enumerate().map(|(i, p)| (format!("p{}", i + 1), p)).collect();
    json!({"traceID": trace.trace_id, "spans": spans, "processes": processes, "warnings": null})
}

// ---- tracepipe's own -------------------------------------------------------------------------

/// A trace in Jaeger's shape plus what tracepipe knows of it: its critical path (span id → self
/// time on the path, µs), the root-cause span of a failure, and why it was kept.
pub async fn trace_detail(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let trace = one_trace(&state, &id).await?;
    let analysis = critical_path::analyze(&trace);
    let mut value = jaeger_trace(&trace);
    value["criticalPath"] = json!(analysis.critical_path_us);
    value["rootCause"] = json!(analysis.root_cause);
    value["sampling"] = json!({"rule": trace.sampling_rule, "adjustedCount": trace.adjusted_count, "truncated": trace.truncated});
    Ok(envelope(json!([value])))
}

#[derive(Debug, Clone, Default)]
struct EdgeTotal {
    client: String,
    server: String,
    connection_type: String,
    calls: u64,
    errors: u64,
    client_histogram: MergedHistogram,
    server_histogram: MergedHistogram,
}

async fn edge_totals(state: &ApiState, start_ms: i64, end_ms: i64) -> Result<BTreeMap<(String, String, String), EdgeTotal>, ApiError> {
    let bodies = read(state, move |s| reader::edge_windows(s, start_ms, end_ms)).await?;
    let mut totals: BTreeMap<(String, String, String), EdgeTotal> = BTreeMap::new();
    for body in bodies {
        let Ok(edge) = serde_json::from_str::<EdgeWindow>(&body) else { continue };
        let total = totals.entry((edge.client.clone(), edge.server.clone(), edge.connection_type.clone())).or_insert_with(|| EdgeTotal {
            client: edge.client.clone(),
            server: edge.server.clone(),
            connection_type: edge.connection_type.clone(),
            ..Default::default()
        });
        total.calls += edge.calls;
        total.errors += edge.errors;
        total.client_histogram.add(&edge.client_histogram_us);
        total.server_histogram.add(&edge.server_histogram_us);
    }
    Ok(totals)
}

fn range_ms(params: &Params) -> Result<(i64, i64), BadParameter> {
    let (start, end) = params.time_range_us(now_us(), HOUR_US)?;
    Ok((start / 1_000, end / 1_000))
}

/// The rollups of `kind` in the request's time range, of its `service` if one is named.
async fn requested_rollups(state: &ApiState, params: &Params, kind: &'static str) -> Result<Vec<Rollup>, ApiError> {
    let (start_ms, end_ms) = range_ms(params)?;
    rollups_between(state, kind, start_ms, end_ms, params.text("service").map(str::to_string)).await
}

/// The rollups of `kind` whose window starts in [start_ms, end_ms], of `service` if given.
pub(crate) async fn rollups_between(state: &ApiState, kind: &'static str, start_ms: i64, end_ms: i64, service: Option<String>) -> Result<Vec<Rollup>, ApiError> {
    let bodies = read(state, move |s| reader::rollups(s, kind, start_ms, end_ms, service.as_deref())).await?;
    Ok(bodies.iter().filter_map(|body| serde_json::from_str(body).ok()).collect())
}

/// The edges with calls, errors and percentiles; with `attribute`, `baseline` and `candidate`
/// (two values of a cohort attribute, e.g. two `service.version`s) each edge whose server served
/// requests of both also has `comparison`: the server's requests of the two, over all its
/// operations, compared as `/api/v1/compare` compares them.
pub async fn edges(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let (start_ms, end_ms) = range_ms(&params)?;
    let totals = edge_totals(&state, start_ms, end_ms).await?;
    let versions = match (params.text("attribute"), params.text("baseline"), params.text("candidate")) {
        (Some(a), Some(b), Some(c)) => Some((a.to_string(), b.to_string(), c.to_string())),
        (None, None, None) => None,
        _ => return Err(BadParameter("parameters 'attribute', 'baseline' and 'candidate' go together".into()).into()),
    };
    let comparisons = match &versions {
        Some((attribute, baseline, candidate)) => {
            let (attribute, baseline, candidate) = (attribute.clone(), baseline.clone(), candidate.clone());
            let cohorts = read(&state, move |store| tracepipe_health::series::cohorts(store, None, None, start_ms, end_ms)).await?;
            // Per server: its requests of each value, over all its operations.
            let mut sides: BTreeMap<String, [(MergedHistogram, u64); 2]> = BTreeMap::new();
            for c in cohorts.iter().filter(|c| c.attribute == attribute) {
                let side = if c.value == baseline { 0 } else if c.value == candidate { 1 } else { continue };
                let entry = sides.entry(c.service.clone()).or_default();
                entry[side].0.merge(&c.merged.latency_us);
                entry[side].1 += c.merged.errors;
            }
            sides
                .into_iter()
                .filter(|(_, [a, b])| a.0.count() > 0 && b.0.count() > 0)
                .map(|(service, [a, b])| {
                    let settings = tracepipe_analytics::compare::CompareSettings::default();
                    let c = tracepipe_analytics::compare::compare(
                        tracepipe_analytics::compare::Sample { latency_us: &a.0, errors: a.1 },
                        tracepipe_analytics::compare::Sample { latency_us: &b.0, errors: b.1 },
                        &settings,
                    );
                    let delta = |x: &Option<tracepipe_analytics::compare::Interval>, y: &Option<tracepipe_analytics::compare::Interval>| x.as_ref().zip(y.as_ref()).map(|(x, y)| y.estimate - x.estimate);
                    let value = json!({
                        "verdict": c.verdict, "verdict_label": c.verdict.label(),
                        "baseline_requests": c.baseline.count, "candidate_requests": c.candidate.count,
                        "p50_delta_ms": delta(&c.baseline.p50_ms, &c.candidate.p50_ms), "p99_delta_ms": delta(&c.baseline.p99_ms, &c.candidate.p99_ms),
                        "error_ratio_delta": c.candidate.error_ratio - c.baseline.error_ratio, "evidence": c.evidence,
                    });
                    (service, value)
                })
                .collect()
        }
        None => BTreeMap::new(),
    };
    let data: Vec<Value> = totals
        .into_values()
        .map(|e| {
            let comparison = comparisons.get(&e.server).cloned();
            json!({
                "comparison": comparison,
                "client": e.client,
                "server": e.server,
                "connection_type": e.connection_type,
                "calls": e.calls,
                "errors": e.errors,
                "error_rate": if e.calls == 0 { 0.0 } else { e.errors as f64 / e.calls as f64 },
                "client_p50_ms": e.client_histogram.quantile_ms(0.5),
                "client_p99_ms": e.client_histogram.quantile_ms(0.99),
                "server_p50_ms": e.server_histogram.quantile_ms(0.5),
                "server_p99_ms": e.server_histogram.quantile_ms(0.99),
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

pub async fn alerts(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let wanted = params.text("state").unwrap_or("all").to_string();
    if !["all", "open", "firing", "resolved"].contains(&wanted.as_str()) {
        return Err(BadParameter(format!("parameter 'state' must be one of all, open, firing, resolved; got `{wanted}`")).into());
    }
    let kind = params.text("kind").map(str::to_string);
    let limit = params.limit("limit", 100, 10_000)?;
    // An open alert may have fired long before the range: its events are read from the start.
    let (start_ms, end_ms) = if wanted == "open" { (0, i64::MAX) } else { range_ms(&params)? };
    let events = read(&state, move |s| reader::alert_events(s, start_ms, end_ms)).await?;
    // The latest event of each alert, latest first.
    let mut seen = std::collections::BTreeSet::new();
    let mut data = Vec::new();
    for (id, _, body) in events {
        if !seen.insert(id) {
            continue;
        }
        let Ok(alert) = serde_json::from_str::<Alert>(&body) else { continue };
        let keep = match wanted.as_str() {
            "open" | "firing" => alert.state == AlertState::Firing,
            "resolved" => alert.state == AlertState::Resolved,
            _ => true,
        } && kind.as_deref().is_none_or(|k| k == alert.kind.as_str());
        if keep {
            data.push(serde_json::to_value(&alert).unwrap_or(Value::Null));
            if data.len() == limit {
                break;
            }
        }
    }
    Ok(envelope(Value::Array(data)))
}

pub async fn bottlenecks(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let operation = params.text("operation").map(str::to_string);
    let limit = params.limit("limit", 50, 10_000)?;
    let rollups = requested_rollups(&state, &params, "bottlenecks").await?;
    struct Endpoint {
        traces: u64,
        total_ms: f64,
        contributors: BTreeMap<(String, String), f64>,
    }
    let mut endpoints: BTreeMap<(String, String), Endpoint> = BTreeMap::new();
    for rollup in rollups {
        let Rollup::Bottlenecks(rollup) = rollup else { continue };
        if operation.as_deref().is_some_and(|o| o != rollup.operation) {
            continue;
        }
        let endpoint = endpoints.entry((rollup.service, rollup.operation)).or_insert(Endpoint { traces: 0, total_ms: 0.0, contributors: BTreeMap::new() });
        endpoint.traces += rollup.traces;
        endpoint.total_ms += rollup.total_ms;
        for c in rollup.contributors {
            *endpoint.contributors.entry((c.service, c.operation)).or_default() += c.critical_path_ms;
        }
    }
    let mut ranked: Vec<((String, String), Endpoint)> = endpoints.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_ms.total_cmp(&a.1.total_ms));
    let data: Vec<Value> = ranked
        .into_iter()
        .take(limit)
        .map(|((service, operation), e)| {
            let mut contributors: Vec<((String, String), f64)> = e.contributors.into_iter().collect();
            contributors.sort_by(|a, b| b.1.total_cmp(&a.1));
            json!({
                "service": service,
                "operation": operation,
                "traces": e.traces,
                "mean_ms": if e.traces == 0 { 0.0 } else { e.total_ms / e.traces as f64 },
                "contributors": contributors.into_iter().map(|((service, operation), ms)| json!({
                    "service": service,
                    "operation": operation,
                    "critical_path_ms": ms,
                    "mean_ms": if e.traces == 0 { 0.0 } else { ms / e.traces as f64 },
                    "share": if e.total_ms > 0.0 { ms / e.total_ms } else { 0.0 },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

pub async fn errors(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let limit = params.limit("limit", 50, 10_000)?;
    let rollups = requested_rollups(&state, &params, "error_group").await?;
    let mut groups: BTreeMap<String, (ErrorGroupRollup, u64)> = BTreeMap::new();
    for rollup in rollups {
        let Rollup::ErrorGroup(rollup) = rollup else { continue };
        match groups.get_mut(&rollup.group) {
            Some((first, count)) => {
                *count += rollup.count;
                for id in rollup.exemplar_trace_ids {
                    if first.exemplar_trace_ids.len() < 10 && !first.exemplar_trace_ids.contains(&id) {
                        first.exemplar_trace_ids.push(id);
                    }
                }
            }
            None => {
                let count = rollup.count;
                groups.insert(rollup.group.clone(), (rollup, count));
            }
        }
    }
    let mut ranked: Vec<(ErrorGroupRollup, u64)> = groups.into_values().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1));
    let data: Vec<Value> = ranked
        .into_iter()
        .take(limit)
        .map(|(g, count)| {
            json!({
                "group": g.group,
                "service": g.service,
                "operation": g.operation,
                "exception_type": g.exception_type,
                "message": g.message,
                "count": count,
                "exemplar_trace_ids": g.exemplar_trace_ids,
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

/// Per-operation latency and errors over the range, from the operation rollups.
pub async fn operation_stats(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let rollups = requested_rollups(&state, &params, "operation").await?;
    let mut totals: BTreeMap<(String, String, String), (u64, u64, MergedHistogram)> = BTreeMap::new();
    for rollup in rollups {
        let Rollup::Operation(rollup) = rollup else { continue };
        let total = totals.entry((rollup.service, rollup.operation, rollup.span_kind)).or_default();
        total.0 += rollup.count;
        total.1 += rollup.errors;
        total.2.add(&rollup.histogram_us);
    }
    let data: Vec<Value> = totals
        .into_iter()
        .map(|((service, operation, span_kind), (count, errors, histogram))| {
            json!({
                "service": service, "operation": operation, "span_kind": span_kind, "count": count, "errors": errors,
                "p50_ms": histogram.quantile_ms(0.5), "p90_ms": histogram.quantile_ms(0.9), "p99_ms": histogram.quantile_ms(0.99),
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}
