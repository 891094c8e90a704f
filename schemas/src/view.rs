//! Reading `TraceSpans` and `AssembledTrace` messages without decoding their spans: the trace id,
//! where each `resource_spans` field lies (to copy it verbatim), and a summary of each span.

use std::ops::Range;

use crate::wire::{Reader, Value};
use crate::{DecodeError, TraceId};

/// What assembly needs of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSummary<'a> {
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl SpanSummary<'_> {
    pub fn is_root(&self) -> bool {
        crate::ids::is_root_parent(self.parent_span_id)
    }
}

fn invalid(message: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Protobuf { message, reason: reason.into() }
}

/// Walks `message` (a `TraceSpans`): returns its trace id, appends the byte range of every
/// `resource_spans` field (tag included) to `resource_spans`, and calls `on_span` for every span.
pub fn visit_trace_spans<'a>(
    message: &'a [u8],
    resource_spans: &mut Vec<Range<usize>>,
    mut on_span: impl FnMut(SpanSummary<'a>),
) -> Result<TraceId, DecodeError> {
    let mut trace_id = None;
    for field in Reader::new(message, 0) {
        let field = field.map_err(|e| invalid("TraceSpans", e))?;
        match (field.number, field.value) {
            (1, Value::Len(bytes)) => {
                trace_id = Some(TraceId::from_slice(bytes).map_err(|e| DecodeError::Invalid(format!("trace id: {e}")))?);
            }
            (2, Value::Len(body)) => {
                resource_spans.push(field.raw.clone());
                for scope in Reader::new(body, field.body_start) {
                    let scope = scope.map_err(|e| invalid("ResourceSpans", e))?;
                    if let (2, Value::Len(scope_body)) = (scope.number, scope.value) {
                        for span in Reader::new(scope_body, scope.body_start) {
                            let span = span.map_err(|e| invalid("ScopeSpans", e))?;
                            if let (2, Value::Len(span_body)) = (span.number, span.value) {
                                on_span(summarize(span_body)?);
                            }
                        }
                    }
                }
            }
            (1 | 2, _) => return Err(invalid("TraceSpans", format!("field {} has the wrong wire type", field.number))),
            _ => {}
        }
    }
    trace_id.ok_or_else(|| DecodeError::Invalid("missing trace id".into()))
}

fn summarize(body: &[u8]) -> Result<SpanSummary<'_>, DecodeError> {
    let mut summary = SpanSummary { span_id: &[], parent_span_id: &[], start_unix_nano: 0, end_unix_nano: 0 };
    for field in Reader::new(body, 0) {
        let field = field.map_err(|e| invalid("Span", e))?;
        match (field.number, field.value) {
            (2, Value::Len(id)) => summary.span_id = id,
            (4, Value::Len(id)) => summary.parent_span_id = id,
            (7, Value::I64(t)) => summary.start_unix_nano = t,
            (8, Value::I64(t)) => summary.end_unix_nano = t,
            _ => {}
        }
    }
    if summary.span_id.len() != 8 {
        return Err(DecodeError::Invalid(format!("span id of {} bytes", summary.span_id.len())));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::otlp_trace::{ResourceSpans, ScopeSpans, Span};
    use crate::v1::TraceSpans;

    #[test]
    fn visits_every_span_and_locates_resource_spans() {
        let span = |id: u8, parent: Option<u8>| Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            start_time_unix_nano: 10,
            end_time_unix_nano: 20 + u64::from(id),
            ..Default::default()
        };
        let message = TraceSpans {
            trace_id: vec![7; 16],
            resource_spans: vec![
                ResourceSpans { scope_spans: vec![ScopeSpans { spans: vec![span(1, None), span(2, Some(1))], ..Default::default() }], ..Default::default() },
                ResourceSpans { scope_spans: vec![ScopeSpans { spans: vec![span(3, Some(2))], ..Default::default() }], ..Default::default() },
            ],
        }
        .encode_to_vec();
        let mut ranges = Vec::new();
        let mut seen = Vec::new();
        let trace_id = visit_trace_spans(&message, &mut ranges, |s| seen.push((s.span_id[0], s.is_root(), s.end_unix_nano))).unwrap();
        assert_eq!(trace_id.0, [7; 16]);
        assert_eq!(seen, vec![(1, true, 21), (2, false, 22), (3, false, 23)]);
        assert_eq!(ranges.len(), 2);
        let mut rebuilt = vec![0x0a, 16];
        rebuilt.extend_from_slice(&[7; 16]);
        for range in &ranges {
            rebuilt.extend_from_slice(&message[range.clone()]);
        }
        assert_eq!(rebuilt, message, "the ranges are the resource_spans fields verbatim");
        for len in 0..message.len() {
            let _ = visit_trace_spans(&message[..len], &mut ranges, |_| {});
        }
    }
}
