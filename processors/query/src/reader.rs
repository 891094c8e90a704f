//! What the query server reads from the store, as plain data; each function is one or two SQL
//! statements that both stores accept.

use std::collections::BTreeMap;

use tracepipe_store::jaeger::SpanBody;
use tracepipe_store::{Param, Store, StoreError};

/// A span as stored.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service: String,
    pub operation: String,
    pub span_kind: String,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
    pub body: SpanBody,
}

#[derive(Debug, Clone)]
pub struct StoredTrace {
    pub trace_id: String,
    pub sampling_rule: String,
    pub adjusted_count: f64,
    pub truncated: bool,
    pub spans: Vec<StoredSpan>,
}

/// A trace search, Jaeger's parameters after validation.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub service: String,
    pub operation: Option<String>,
    pub tags: Vec<(String, String)>,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    pub start_us: i64,
    pub end_us: i64,
    pub limit: usize,
}

pub fn services(store: &mut Store) -> Result<Vec<String>, StoreError> {
    Ok(store.query("SELECT DISTINCT service FROM operations ORDER BY service", &[])?.into_iter().map(|mut r| r.swap_remove(0).into_text()).collect())
}

/// (operation, span kind) of `service`, optionally of one kind.
pub fn operations(store: &mut Store, service: &str, span_kind: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
    let rows = match span_kind {
        Some(kind) => store.query(
            "SELECT operation, span_kind FROM operations WHERE service = $1 AND span_kind = $2 ORDER BY operation, span_kind",
            &[Param::Text(service), Param::Text(kind)],
        )?,
        None => store.query("SELECT operation, span_kind FROM operations WHERE service = $1 ORDER BY operation, span_kind", &[Param::Text(service)])?,
    };
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let kind = r.pop().map(|c| c.into_text()).unwrap_or_default();
            (r.pop().map(|c| c.into_text()).unwrap_or_default(), kind)
        })
        .collect())
}

/// The ids of the traces with a span matching every condition, latest first.
pub fn find_trace_ids(store: &mut Store, query: &TraceQuery) -> Result<Vec<String>, StoreError> {
    let patterns: Vec<String> = query.tags.iter().map(|(k, v)| tracepipe_store::jaeger::search_pattern(k, v)).collect();
    let mut sql = String::from("SELECT trace_id, MAX(start_us) AS latest FROM spans WHERE service = $1 AND start_us >= $2 AND start_us <= $3");
    let mut params = vec![Param::Text(&query.service), Param::Int(query.start_us), Param::Int(query.end_us)];
    if let Some(operation) = &query.operation {
        params.push(Param::Text(operation));
        sql.push_str(&format!(" AND operation = ${}", params.len()));
    }
    if let Some(min) = query.min_duration_us {
        params.push(Param::Int(min));
        sql.push_str(&format!(" AND duration_us >= ${}", params.len()));
    }
    if let Some(max) = query.max_duration_us {
        params.push(Param::Int(max));
        sql.push_str(&format!(" AND duration_us <= ${}", params.len()));
    }
    for pattern in &patterns {
        params.push(Param::Text(pattern));
        sql.push_str(&format!(" AND tags LIKE ${} ESCAPE '\\'", params.len()));
    }
    params.push(Param::Int(query.limit as i64));
    sql.push_str(&format!(" GROUP BY trace_id ORDER BY latest DESC LIMIT ${}", params.len()));
    Ok(store.query(&sql, &params)?.into_iter().map(|mut r| r.swap_remove(0).into_text()).collect())
}

/// The traces with these ids that are stored, in the order asked.
pub fn traces(store: &mut Store, ids: &[String]) -> Result<Vec<StoredTrace>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let params: Vec<Param> = ids.iter().map(|id| Param::Text(id)).collect();
    let mut by_id: BTreeMap<String, StoredTrace> = BTreeMap::new();
    for row in store.query(&format!("SELECT trace_id, sampling_rule, adjusted_count, truncated FROM traces WHERE trace_id IN ({list})"), &params)? {
        let trace_id = row[0].text().to_string();
        by_id.insert(
            trace_id.clone(),
            StoredTrace { trace_id, sampling_rule: row[1].text().to_string(), adjusted_count: row[2].real(), truncated: row[3].int() != 0, spans: Vec::new() },
        );
    }
    let rows = store.query(
        &format!(
            "SELECT trace_id, span_id, parent_span_id, service, operation, span_kind, start_us, duration_us, error, body FROM spans WHERE trace_id IN ({list}) ORDER BY start_us, span_id"
        ),
        &params,
    )?;
    for row in rows {
        let trace_id = row[0].text().to_string();
        let Ok(body) = serde_json::from_str::<SpanBody>(row[9].text()) else {
            tracing::warn!(trace_id, span_id = row[1].text(), "stored span body unreadable, span skipped");
            continue;
        };
        let trace = by_id.entry(trace_id.clone()).or_insert_with(|| StoredTrace {
            trace_id: trace_id.clone(),
            sampling_rule: String::new(),
            adjusted_count: 1.0,
            truncated: false,
            spans: Vec::new(),
        });
        trace.spans.push(StoredSpan {
            trace_id,
            span_id: row[1].text().to_string(),
            parent_span_id: row[2].text().to_string(),
            service: row[3].text().to_string(),
            operation: row[4].text().to_string(),
            span_kind: row[5].text().to_string(),
            start_us: row[6].int(),
            duration_us: row[7].int(),
            error: row[8].int() != 0,
            body,
        });
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).filter(|t| !t.spans.is_empty()).collect())
}

/// JSON bodies of the edge windows starting in [start_ms, end_ms].
pub fn edge_windows(store: &mut Store, start_ms: i64, end_ms: i64) -> Result<Vec<String>, StoreError> {
    Ok(store
        .query("SELECT body FROM edges WHERE window_start_ms >= $1 AND window_start_ms <= $2", &[Param::Int(start_ms), Param::Int(end_ms)])?
        .into_iter()
        .map(|mut r| r.swap_remove(0).into_text())
        .collect())
}

pub use tracepipe_store::reads::rollups;

/// Alert events in [start_ms, end_ms], latest first: (id, state, body).
pub fn alert_events(store: &mut Store, start_ms: i64, end_ms: i64) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(store
        .query("SELECT id, state, body FROM alerts WHERE event_ms >= $1 AND event_ms <= $2 ORDER BY event_ms DESC, state", &[Param::Int(start_ms), Param::Int(end_ms)])?
        .into_iter()
        .map(|mut r| {
            let body = r.pop().map(|c| c.into_text()).unwrap_or_default();
            let state = r.pop().map(|c| c.into_text()).unwrap_or_default();
            (r.pop().map(|c| c.into_text()).unwrap_or_default(), state, body)
        })
        .collect())
}
