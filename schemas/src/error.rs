//! What can be wrong with an input message or with one span in it.

use thiserror::Error;

/// The whole message cannot be read; the runtime sends it to the dead-letter queue.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message of {size} bytes exceeds the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid protobuf in {message}: {reason}")]
    Protobuf { message: &'static str, reason: String },
    #[error("invalid json: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why one span was not routed; the rest of its message still is.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanRejection {
    #[error("missing trace id")]
    MissingTraceId,
    #[error("trace id of {0} bytes, expected 16")]
    TraceIdLength(usize),
    #[error("all-zero trace id")]
    ZeroTraceId,
    #[error("missing span id")]
    MissingSpanId,
    #[error("span id of {0} bytes, expected 8")]
    SpanIdLength(usize),
    #[error("all-zero span id")]
    ZeroSpanId,
    #[error("parent span id of {0} bytes, expected 8 or none")]
    ParentIdLength(usize),
    #[error("id is not hex")]
    NotHex,
}

impl SpanRejection {
    /// A short stable name, used as a metric label value.
    pub fn kind(&self) -> &'static str {
        match self {
            SpanRejection::MissingTraceId => "missing_trace_id",
            SpanRejection::TraceIdLength(_) => "trace_id_length",
            SpanRejection::ZeroTraceId => "zero_trace_id",
            SpanRejection::MissingSpanId => "missing_span_id",
            SpanRejection::SpanIdLength(_) => "span_id_length",
            SpanRejection::ZeroSpanId => "zero_span_id",
            SpanRejection::ParentIdLength(_) => "parent_id_length",
            SpanRejection::NotHex => "id_not_hex",
        }
    }
}
