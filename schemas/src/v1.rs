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

/// Why the assembler emitted a trace (proto enum `tracepipe.v1.Completion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Completion {
    Unspecified = 0,
    RootAndGrace = 1,
    IdleTimeout = 2,
    MaxDuration = 3,
    MaxSpans = 4,
    MemoryPressure = 5,
    MaxBytes = 6,
}

impl Completion {
    /// A short stable name, used as a metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Completion::Unspecified => "unspecified",
            Completion::RootAndGrace => "root_and_grace",
            Completion::IdleTimeout => "idle_timeout",
            Completion::MaxDuration => "max_duration",
            Completion::MaxSpans => "max_spans",
            Completion::MemoryPressure => "memory_pressure",
            Completion::MaxBytes => "max_bytes",
        }
    }
}

/// Value of a `tracepipe.traces` record and, with the sampling fields set, of `tracepipe.sampled`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AssembledTrace {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub resource_spans: Vec<ResourceSpans>,
    #[prost(enumeration = "Completion", tag = "3")]
    pub completion: i32,
    #[prost(bool, tag = "4")]
    pub truncated: bool,
    #[prost(uint32, tag = "5")]
    pub fragment: u32,
    #[prost(uint32, tag = "6")]
    pub span_count: u32,
    #[prost(uint32, tag = "7")]
    pub duplicate_spans: u32,
    #[prost(fixed64, tag = "8")]
    pub first_seen_unix_nano: u64,
    #[prost(fixed64, tag = "9")]
    pub emitted_unix_nano: u64,
    #[prost(string, tag = "20")]
    pub sampling_rule: String,
    #[prost(double, tag = "21")]
    pub adjusted_count: f64,
}

impl AssembledTrace {
    pub fn spans(&self) -> impl Iterator<Item = &crate::otlp_trace::Span> {
        self.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans)
    }
}
