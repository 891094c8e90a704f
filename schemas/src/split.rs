//! Splitting an input message into per-trace `tracepipe.v1.TraceSpans` payloads.

use std::ops::Range;

use prost::Message;

use crate::otlp_proto::OtlpProtoSplitter;
use crate::{jaeger, otlp_json, zipkin, DecodeError, Encoding, SpanRejection, TraceId};

/// The spans of one trace found in one input message, encoded as `tracepipe.v1.TraceSpans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceChunk {
    pub trace_id: TraceId,
    pub span_count: u32,
    /// Where the encoded `TraceSpans` lies in [`SplitBatch::buf`].
    pub payload: Range<usize>,
}

/// What one input message split into. Reused from message to message so the hot path does not
/// allocate once its buffers have grown.
#[derive(Debug, Default)]
pub struct SplitBatch {
    pub buf: Vec<u8>,
    pub chunks: Vec<TraceChunk>,
    /// Spans that were not routed, with why.
    pub rejected: Vec<SpanRejection>,
}

impl SplitBatch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.chunks.clear();
        self.rejected.clear();
    }

    pub fn payload(&self, chunk: &TraceChunk) -> &[u8] {
        &self.buf[chunk.payload.clone()]
    }

    pub fn span_count(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.span_count)).sum()
    }

    /// A one-line summary of the rejected spans, e.g. `2 spans rejected: all-zero trace id (2)`.
    pub fn rejection_summary(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let mut counts: Vec<(SpanRejection, usize)> = Vec::new();
        for reason in &self.rejected {
            match counts.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1,
                None => counts.push((*reason, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{r} ({n})")).collect();
        Some(format!("{} spans rejected: {}", self.rejected.len(), parts.join(", ")))
    }
}

/// The largest `TraceSpans` payload a split writes (unless one span is larger): the spans of a
/// trace that would make more go out as several payloads of that trace, which the assembler joins.
/// Well below librdkafka's `message.max.bytes` (1,000,000) and Kafka's default topic limit
/// (1 MiB), so a large trace is never refused by the producer as one oversized record.
pub const MAX_CHUNK_BYTES: usize = 512 << 10;

/// Splits messages of any supported encoding. OTLP protobuf is split in place; the other
/// encodings are decoded into OTLP once, encoded, and split the same way.
pub struct SpanSplitter {
    otlp: OtlpProtoSplitter,
    scratch: Vec<u8>,
    /// Messages larger than this are rejected whole; 0 means no limit.
    pub max_message_bytes: usize,
    /// See [`MAX_CHUNK_BYTES`].
    pub max_chunk_bytes: usize,
}

impl Default for SpanSplitter {
    fn default() -> Self {
        SpanSplitter::new(0)
    }
}

impl SpanSplitter {
    pub fn new(max_message_bytes: usize) -> Self {
        SpanSplitter { otlp: OtlpProtoSplitter::default(), scratch: Vec::new(), max_message_bytes, max_chunk_bytes: MAX_CHUNK_BYTES }
    }

    pub fn split(&mut self, encoding: Encoding, payload: &[u8], out: &mut SplitBatch) -> Result<(), DecodeError> {
        out.clear();
        if payload.is_empty() {
            return Err(DecodeError::Empty);
        }
        if self.max_message_bytes > 0 && payload.len() > self.max_message_bytes {
            return Err(DecodeError::TooLarge { size: payload.len(), limit: self.max_message_bytes });
        }
        let request = match encoding {
            // The Collector's kafka exporter writes otlp_proto and otlp_json to the same default
            // topic. `{` cannot start an OTLP protobuf message (it would be a group, field 15),
            // so such a record is read as OTLP JSON.
            Encoding::OtlpProto if payload[0] == b'{' => otlp_json::decode(payload)?,
            Encoding::OtlpProto => return self.otlp.split(payload, self.max_chunk_bytes, out),
            Encoding::OtlpJson => otlp_json::decode(payload)?,
            Encoding::JaegerProto => jaeger::decode(payload, &mut out.rejected)?,
            Encoding::ZipkinJson => zipkin::decode(payload, &mut out.rejected)?,
        };
        self.scratch.clear();
        request.encode(&mut self.scratch).expect("vec grows");
        let rejected_while_decoding = std::mem::take(&mut out.rejected);
        let result = self.otlp.split(&self.scratch, self.max_chunk_bytes, out);
        out.rejected.extend(rejected_while_decoding);
        result
    }
}
