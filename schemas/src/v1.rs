//! tracepipe.v1 messages (proto/tracepipe/v1/spans.proto), as prost types.

use crate::otlp_trace::ResourceSpans;

/// Value of a `tracepipe.spans` record: spans of one trace, keyed by its 16-byte trace id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceSpans {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub resource_spans: Vec<ResourceSpans>,
}

impl TraceSpans {
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}
