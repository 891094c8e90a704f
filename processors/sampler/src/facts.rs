//! What rules look at, computed once per trace.

use tracepipe_schemas::attributes::{self, SERVICE_NAME};
use tracepipe_schemas::otlp_common::KeyValue;
use tracepipe_schemas::otlp_trace::Span;
use tracepipe_schemas::v1::AssembledTrace;

pub struct SpanRef<'a> {
    pub service: &'a str,
    pub resource: &'a [KeyValue],
    pub span: &'a Span,
}

pub struct TraceFacts<'a> {
    pub trace_id: [u8; 16],
    pub spans: Vec<SpanRef<'a>>,
    /// Index into `spans` of the root (the earliest span without a parent), if present.
    pub root: Option<usize>,
    pub has_error: bool,
}

impl<'a> TraceFacts<'a> {
    pub fn new(trace: &'a AssembledTrace) -> Self {
        // Sized from the spans actually present: `span_count` is the producer's word, not a bound.
        let present = trace.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        let mut spans = Vec::with_capacity(present);
        for rs in &trace.resource_spans {
            let resource = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let service = attributes::find_str(resource, SERVICE_NAME).unwrap_or("unknown_service");
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                spans.push(SpanRef { service, resource, span });
            }
        }
        let root = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.span.parent_span_id.is_empty())
            .min_by_key(|(_, s)| s.span.start_time_unix_nano)
            .map(|(i, _)| i);
        let has_error = spans.iter().any(|s| {
            s.span.status.as_ref().is_some_and(|st| st.code == 2) || s.span.events.iter().any(|e| e.name == "exception")
        });
        let mut trace_id = [0u8; 16];
        if trace.trace_id.len() == 16 {
            trace_id.copy_from_slice(&trace.trace_id);
        }
        TraceFacts { trace_id, spans, root, has_error }
    }

    pub fn root(&self) -> Option<&SpanRef<'a>> {
        self.root.map(|i| &self.spans[i])
    }

    /// Duration of the root span, or of the whole trace when the root is missing.
    pub fn duration_nanos(&self) -> u64 {
        match self.root() {
            Some(root) => root.span.end_time_unix_nano.saturating_sub(root.span.start_time_unix_nano),
            None => {
                let start = self.spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
                let end = self.spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0);
                end.saturating_sub(start)
            }
        }
    }

    /// (service, operation) of the root, the key of per-endpoint rules.
    pub fn root_key(&self) -> (String, String) {
        match self.root() {
            Some(root) => (root.service.to_string(), root.span.name.clone()),
            None => ("unknown_service".into(), "(no root)".into()),
        }
    }

    /// The trace id's lower 64 bits as a uniform number in [0, 1): the same on every instance,
    /// as OpenTelemetry's TraceIdRatioBased sampler does.
    pub fn trace_id_ratio(&self) -> f64 {
        let low = u64::from_be_bytes(self.trace_id[8..16].try_into().expect("8 bytes"));
        (low >> 11) as f64 / (1u64 << 53) as f64
    }
}
