//! The critical path and root-cause span of a stored trace, computed by the analyzer's own trace
//! tree so the UI shows exactly what the bottleneck rollups counted.

use std::collections::BTreeMap;

use tracepipe_analytics::tree::TraceTree;
use tracepipe_schemas::trace_view::{kind, SpanView, STATUS_ERROR};

use crate::reader::StoredTrace;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TraceAnalysis {
    /// Span id → its self time on the critical path of the trace's root, in µs.
    pub critical_path_us: BTreeMap<String, i64>,
    pub root_cause: Option<String>,
}

fn span_id(hex_id: &str) -> [u8; 8] {
    let mut id = [0u8; 8];
    let _ = hex::decode_to_slice(hex_id, &mut id);
    id
}

pub fn analyze(trace: &StoredTrace) -> TraceAnalysis {
    let spans: Vec<SpanView<'_>> = trace
        .spans
        .iter()
        .map(|s| {
            let start = (s.start_us.max(0) as u64) * 1_000;
            SpanView {
                resource: 0,
                span_id: span_id(&s.span_id),
                parent_span_id: (!s.parent_span_id.is_empty()).then(|| span_id(&s.parent_span_id)),
                name: &s.operation,
                kind: match s.span_kind.as_str() {
                    "internal" => kind::INTERNAL,
                    "server" => kind::SERVER,
                    "client" => kind::CLIENT,
                    "producer" => kind::PRODUCER,
                    "consumer" => kind::CONSUMER,
                    _ => kind::UNSPECIFIED,
                },
                start_unix_nano: start,
                end_unix_nano: start + (s.duration_us.max(0) as u64) * 1_000,
                status_code: if s.error { STATUS_ERROR } else { 0 },
                ..Default::default()
            }
        })
        .collect();
    let mut analysis = TraceAnalysis::default();
    if spans.is_empty() {
        return analysis;
    }
    let mut tree = TraceTree::default();
    tree.build(&spans);
    // The request's entry: the earliest root (a trace whose root is missing has none).
    let entry = (0..spans.len() as u32)
        .filter(|&i| spans[i as usize].is_root())
        .min_by_key(|&i| (spans[i as usize].start_unix_nano, i));
    if let Some(entry) = entry {
        // A span the walk passes through is on the path even with no self time of its own.
        let mut self_time: Vec<Option<u64>> = vec![None; spans.len()];
        tree.critical_path(&spans, entry, |span, nanos| {
            let sum = self_time[span as usize].get_or_insert(0);
            *sum = sum.saturating_add(nanos);
        });
        for (i, nanos) in self_time.into_iter().enumerate() {
            if let Some(nanos) = nanos {
                analysis.critical_path_us.insert(trace.spans[i].span_id.clone(), (nanos / 1_000) as i64);
            }
        }
    }
    analysis.root_cause = tree.root_cause(&spans).map(|i| trace.spans[i as usize].span_id.clone());
    analysis
}
