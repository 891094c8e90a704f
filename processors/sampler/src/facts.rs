//! What rules look at, read once per trace from its bytes without copying (see
//! [`tracepipe_schemas::trace_view`]).

use tracepipe_schemas::trace_view::{AttributeValue, SpanView, TraceView};

pub struct TraceFacts<'a> {
    pub trace: TraceView<'a>,
    /// Index into `trace.spans` of the root ([`TraceView::root`]), if present.
    pub root: Option<usize>,
    pub has_error: bool,
}

impl<'a> TraceFacts<'a> {
    pub fn new(trace: TraceView<'a>) -> Self {
        let root = trace.root();
        let has_error = trace.spans.iter().any(SpanView::is_error);
        TraceFacts { trace, root, has_error }
    }

    pub fn spans(&self) -> &[SpanView<'a>] {
        &self.trace.spans
    }

    pub fn root(&self) -> Option<&SpanView<'a>> {
        self.root.map(|i| &self.trace.spans[i])
    }

    pub fn service(&self, span: &SpanView<'_>) -> &'a str {
        self.trace.service(span)
    }

    /// The values of the attribute `key` on `span` and on its resource (either may match a rule).
    pub fn attributes(&self, span: &SpanView<'a>, key: &str) -> impl Iterator<Item = AttributeValue<'a>> {
        span.attribute(key).into_iter().chain(self.trace.resource_attribute(span, key))
    }

    /// Duration of the root span, or of the whole trace when the root is missing.
    pub fn duration_nanos(&self) -> u64 {
        match self.root() {
            Some(root) => root.duration_nanos(),
            None => {
                let start = self.spans().iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
                let end = self.spans().iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
                end.saturating_sub(start)
            }
        }
    }

    /// (service, operation) of the root, the key of per-endpoint rules.
    pub fn root_key(&self) -> (String, String) {
        match self.root() {
            Some(root) => (self.service(root).to_string(), root.name.to_string()),
            None => ("unknown_service".into(), "(no root)".into()),
        }
    }

    /// The trace id's lower 64 bits as a uniform number in [0, 1): the same on every instance,
    /// as OpenTelemetry's TraceIdRatioBased sampler does.
    pub fn trace_id_ratio(&self) -> f64 {
        let low = u64::from_be_bytes(self.trace.trace_id.0[8..16].try_into().expect("8 bytes"));
        (low >> 11) as f64 / (1u64 << 53) as f64
    }
}
