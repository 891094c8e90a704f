//! Trace and span identifiers, validated the way the W3C trace-context and OTLP specs require.

use std::fmt;

use crate::error::SpanRejection;

/// A 16-byte trace id that is not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id that is not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SpanRejection> {
        let id: [u8; 16] = match bytes.len() {
            0 => return Err(SpanRejection::MissingTraceId),
            16 => bytes.try_into().expect("length checked"),
            len => return Err(SpanRejection::TraceIdLength(len)),
        };
        if id == [0; 16] {
            return Err(SpanRejection::ZeroTraceId);
        }
        Ok(TraceId(id))
    }

    /// Parses 32 hex digits, or 16 for a 64-bit id (Zipkin, old Jaeger), which is widened with
    /// zero high bytes as OpenTelemetry's Zipkin and Jaeger receivers do.
    pub fn from_hex(text: &str) -> Result<Self, SpanRejection> {
        let mut id = [0u8; 16];
        match text.len() {
            0 => return Err(SpanRejection::MissingTraceId),
            32 => hex::decode_to_slice(text, &mut id),
            16 => hex::decode_to_slice(text, &mut id[8..]),
            len => return Err(SpanRejection::TraceIdLength(len / 2)),
        }
        .map_err(|_| SpanRejection::NotHex)?;
        Self::from_slice(&id)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl SpanId {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SpanRejection> {
        let id: [u8; 8] = match bytes.len() {
            0 => return Err(SpanRejection::MissingSpanId),
            8 => bytes.try_into().expect("length checked"),
            len => return Err(SpanRejection::SpanIdLength(len)),
        };
        if id == [0; 8] {
            return Err(SpanRejection::ZeroSpanId);
        }
        Ok(SpanId(id))
    }

    pub fn from_hex(text: &str) -> Result<Self, SpanRejection> {
        let mut id = [0u8; 8];
        match text.len() {
            0 => return Err(SpanRejection::MissingSpanId),
            16 => hex::decode_to_slice(text, &mut id).map_err(|_| SpanRejection::NotHex)?,
            len => return Err(SpanRejection::SpanIdLength(len / 2)),
        }
        Self::from_slice(&id)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_and_wrong_length_ids() {
        assert_eq!(TraceId::from_slice(&[0; 16]), Err(SpanRejection::ZeroTraceId));
        assert_eq!(TraceId::from_slice(&[1; 8]), Err(SpanRejection::TraceIdLength(8)));
        assert_eq!(TraceId::from_slice(&[]), Err(SpanRejection::MissingTraceId));
        assert_eq!(SpanId::from_slice(&[0; 8]), Err(SpanRejection::ZeroSpanId));
        assert_eq!(SpanId::from_slice(&[1; 16]), Err(SpanRejection::SpanIdLength(16)));
        assert_eq!(TraceId::from_hex("zz00000000000000"), Err(SpanRejection::NotHex));
    }

    #[test]
    fn widens_64_bit_trace_ids() {
        assert_eq!(TraceId::from_hex("0000000000000000"), Err(SpanRejection::ZeroTraceId));
        let id = TraceId::from_hex("463ac35c9f6413ad").unwrap();
        assert_eq!(id.to_hex(), "0000000000000000463ac35c9f6413ad");
    }
}

/// Whether a span with this parent span id is a root: it has no parent, the id being empty or all
/// zeros (as OpenTelemetry writes an invalid span id). The one definition every processor uses.
pub fn is_root_parent(parent_span_id: &[u8]) -> bool {
    parent_span_id.iter().all(|&byte| byte == 0)
}
