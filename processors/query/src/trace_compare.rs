//! `/api/v1/compare/traces?a=ID&b=ID`: two traces aligned by service, operation and ancestry, as
//! Jaeger's compare view aligns them, with each node's span count and time in both, the spans
//! only one has, and the latency deltas. Without `b`, `a` is compared with the typical trace of
//! its endpoint: of the stored traces with the same root operation in the last hour, the one whose
//! duration is nearest the median (without errors when there are such).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use serde_json::{json, Value};

use crate::api::{envelope, read, ApiError, ApiResult, ApiState};
use crate::params::{BadParameter, Params};
use crate::reader::{self, StoredSpan, StoredTrace, TraceQuery};

/// A node of the aligned tree: its parent node (`usize::MAX` for a root) and its (service,
/// operation). Two spans are the same node when their parents are and their names match.
type NodeKey = (usize, String, String);

#[derive(Debug, Default, Clone, Copy)]
struct Side {
    spans: u64,
    errors: u64,
    total_us: i64,
}

const NO_PARENT: usize = usize::MAX;

fn root(trace: &StoredTrace) -> Option<&StoredSpan> {
    let ids: std::collections::HashSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    // The earliest span whose parent is not in the trace.
    trace.spans.iter().filter(|s| s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str())).min_by_key(|s| s.start_us)
}

/// The aligned tree both traces share: node keys, interned, with each trace's figures per node.
#[derive(Default)]
struct Aligned {
    ids: BTreeMap<NodeKey, usize>,
    keys: Vec<NodeKey>,
    sides: Vec<[Option<Side>; 2]>,
}

impl Aligned {
    fn node(&mut self, key: NodeKey) -> usize {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        self.keys.push(key.clone());
        self.sides.push([None, None]);
        self.ids.insert(key, self.keys.len() - 1);
        self.keys.len() - 1
    }

    /// Adds `trace` as side `side`: each span's node, from its parent's, in one pass over the
    /// spans in ancestry order (a span whose ancestry loops is taken as a root).
    fn add(&mut self, trace: &StoredTrace, side: usize) {
        let index: BTreeMap<&str, usize> = trace.spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
        let mut node_of: Vec<Option<usize>> = vec![None; trace.spans.len()];
        let mut in_chain = vec![false; trace.spans.len()];
        let mut chain = Vec::new();
        for start in 0..trace.spans.len() {
            // Walk up to the first span whose node is known (or a root), then come back down.
            chain.clear();
            let mut at = start;
            while node_of[at].is_none() && !in_chain[at] {
                chain.push(at);
                in_chain[at] = true;
                match index.get(trace.spans[at].parent_span_id.as_str()) {
                    Some(&parent) => at = parent,
                    None => break,
                }
            }
            let mut parent = if in_chain[at] { NO_PARENT } else { node_of[at].unwrap_or(NO_PARENT) };
            for &span in &chain {
                in_chain[span] = false;
            }
            for &span in chain.iter().rev() {
                let s = &trace.spans[span];
                let node = self.node((parent, s.service.clone(), s.operation.clone()));
                node_of[span] = Some(node);
                parent = node;
                let figures = self.sides[node][side].get_or_insert_with(Side::default);
                figures.spans += 1;
                figures.errors += u64::from(s.error);
                figures.total_us = figures.total_us.saturating_add(s.duration_us.max(0));
            }
        }
    }
}

fn describe(trace: &StoredTrace) -> Value {
    let root = root(trace);
    json!({
        "trace_id": trace.trace_id,
        "root_service": root.map(|r| r.service.clone()),
        "root_operation": root.map(|r| r.operation.clone()),
        "duration_ms": root.map(|r| r.duration_us as f64 / 1000.0),
        "spans": trace.spans.len(),
    })
}

/// The aligned nodes of `a` and `b`, in tree order (children by service and operation).
pub fn align(a: &StoredTrace, b: &StoredTrace) -> Vec<Value> {
    let mut aligned = Aligned::default();
    aligned.add(a, 0);
    aligned.add(b, 1);
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (id, key) in aligned.keys.iter().enumerate() {
        children.entry(key.0).or_default().push(id);
    }
    for list in children.values_mut() {
        list.sort_by(|x, y| (&aligned.keys[*x].1, &aligned.keys[*x].2).cmp(&(&aligned.keys[*y].1, &aligned.keys[*y].2)));
    }
    let mut out = Vec::with_capacity(aligned.keys.len());
    let mut stack: Vec<(usize, usize)> = children.get(&NO_PARENT).map(|roots| roots.iter().rev().map(|&r| (r, 0)).collect()).unwrap_or_default();
    while let Some((id, depth)) = stack.pop() {
        let (_, service, operation) = &aligned.keys[id];
        let [sa, sb] = aligned.sides[id];
        let mean = |s: Option<Side>| s.filter(|s| s.spans > 0).map(|s| s.total_us as f64 / s.spans as f64 / 1000.0);
        let presence = match (sa.is_some(), sb.is_some()) {
            (true, true) => "both",
            (true, false) => "only_a",
            _ => "only_b",
        };
        out.push(json!({
            "depth": depth,
            "service": service,
            "operation": operation,
            "presence": presence,
            "spans_a": sa.map_or(0, |s| s.spans),
            "spans_b": sb.map_or(0, |s| s.spans),
            "errors_a": sa.map_or(0, |s| s.errors),
            "errors_b": sb.map_or(0, |s| s.errors),
            "mean_ms_a": mean(sa),
            "mean_ms_b": mean(sb),
            "total_ms_a": sa.map(|s| s.total_us as f64 / 1000.0),
            "total_ms_b": sb.map(|s| s.total_us as f64 / 1000.0),
            "delta_ms": match (sa, sb) { (Some(x), Some(y)) => Some((y.total_us - x.total_us) as f64 / 1000.0), _ => None },
        }));
        if let Some(kids) = children.get(&id) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    out
}

/// How many stored traces of the endpoint the typical one is chosen from.
const TYPICAL_CANDIDATES: usize = 200;
const HOUR_US: i64 = 3_600_000_000;

async fn typical(state: &ApiState, of: &StoredTrace) -> Result<StoredTrace, ApiError> {
    let endpoint = root(of).ok_or_else(|| BadParameter("trace 'a' has no spans".into()))?.clone();
    let end_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let query = TraceQuery { service: endpoint.service.clone(), operation: Some(endpoint.operation.clone()), start_us: end_us - HOUR_US, end_us, limit: TYPICAL_CANDIDATES, ..Default::default() };
    let exclude = of.trace_id.clone();
    let traces = read(state, move |store| {
        let ids: Vec<String> = reader::find_trace_ids(store, &query)?.into_iter().filter(|id| *id != exclude).collect();
        reader::traces(store, &ids)
    })
    .await?;
    let mut same_root: Vec<(StoredTrace, i64, bool)> = traces
        .into_iter()
        .filter_map(|t| {
            let r = root(&t)?;
            let matches = r.service == endpoint.service && r.operation == endpoint.operation;
            let (duration, failed) = (r.duration_us, t.spans.iter().any(|s| s.error));
            matches.then_some((t, duration, failed))
        })
        .collect();
    if same_root.iter().any(|(_, _, failed)| !failed) {
        same_root.retain(|(_, _, failed)| !failed);
    }
    let mut durations: Vec<i64> = same_root.iter().map(|(_, d, _)| *d).collect();
    durations.sort_unstable();
    let median = *durations.get(durations.len() / 2).ok_or_else(|| ApiError::new(axum::http::StatusCode::NOT_FOUND, format!("no other stored trace of {} {} in the last hour", endpoint.service, endpoint.operation)))?;
    let (trace, _, _) = same_root.into_iter().min_by_key(|(_, d, _)| (d - median).abs()).expect("one at least");
    Ok(trace)
}

pub async fn compare_traces(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let a = crate::api::one_trace(&state, params.required("a")?).await?;
    let (b, b_is_typical) = match params.text("b") {
        Some(id) => (crate::api::one_trace(&state, id).await?, false),
        None => (typical(&state, &a).await?, true),
    };
    // Large traces take a while to align: off the async workers.
    let (a, b, nodes) = tokio::task::spawn_blocking(move || {
        let nodes = align(&a, &b);
        (a, b, nodes)
    })
    .await
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("the comparison failed: {e}")))?;
    let count = |presence: &str| nodes.iter().filter(|n| n["presence"] == presence).count();
    let (only_a, only_b) = (count("only_a"), count("only_b"));
    Ok(envelope(json!({
        "a": describe(&a),
        "b": describe(&b),
        "b_is_typical": b_is_typical,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "nodes": nodes,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracepipe_store::jaeger::{Process, SpanBody};

    fn span(id: usize, parent: Option<usize>, operation: &str) -> StoredSpan {
        StoredSpan {
            trace_id: "t".into(),
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")).unwrap_or_default(),
            service: "svc".into(),
            operation: operation.into(),
            span_kind: "server".into(),
            start_us: id as i64,
            duration_us: 10,
            error: false,
            body: SpanBody { references: Vec::new(), tags: Vec::new(), logs: Vec::new(), process: Process { service_name: "svc".into(), tags: Vec::new() }, warnings: Vec::new() },
        }
    }

    fn trace(spans: Vec<StoredSpan>) -> StoredTrace {
        StoredTrace { trace_id: "t".into(), sampling_rule: String::new(), adjusted_count: 1.0, truncated: false, spans }
    }

    #[test]
    fn a_deep_chain_and_a_loop_align_in_one_pass() {
        // 10 000 spans each the child of the one before: as many nodes, depths 0 to 9 999.
        let deep = trace((0..10_000).map(|i| span(i + 1, (i > 0).then_some(i), "step")).collect());
        let nodes = align(&deep, &deep);
        assert_eq!(nodes.len(), 10_000);
        assert_eq!(nodes.last().unwrap()["depth"], 9_999);
        assert!(nodes.iter().all(|n| n["presence"] == "both" && n["delta_ms"] == 0.0));
        // Two spans that are each other's parent: one becomes a root (b, with a below it), and
        // nothing hangs; the other trace's lone root a is a node of its own.
        let looped = trace(vec![span(1, Some(2), "a"), span(2, Some(1), "b")]);
        let nodes = align(&looped, &trace(vec![span(1, None, "a")]));
        let shape: Vec<(u64, &str, &str)> = nodes.iter().map(|n| (n["depth"].as_u64().unwrap(), n["operation"].as_str().unwrap(), n["presence"].as_str().unwrap())).collect();
        assert_eq!(shape, vec![(0, "a", "only_b"), (0, "b", "only_a"), (1, "a", "only_a")]);
    }
}
