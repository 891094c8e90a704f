//! W3C trace context carried on tracepipe's own records, so its work can be followed across
//! queue hops: what a processor produces continues the context of what it consumed.

pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header value as the W3C specification has it: lower-case hex, ids
    /// not all zero, version `ff` invalid, version 00 exactly 55 characters, and a later version
    /// read by the 00 layout, with anything after it only past a dash. Surrounding spaces and
    /// tabs are allowed, as in any header.
    pub fn parse(value: &[u8]) -> Option<Self> {
        const LEN: usize = 55;
        let value = value.trim_ascii();
        if value.len() < LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let lower_hex = |field: &[u8]| field.iter().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        let (version, trace, span, flags) = (&value[..2], &value[3..35], &value[36..52], &value[53..LEN]);
        if ![version, trace, span, flags].into_iter().all(lower_hex) {
            return None;
        }
        let exact = value.len() == LEN;
        if version == b"ff" || (version == b"00" && !exact) || (!exact && value[LEN] != b'-') {
            return None;
        }
        let mut context = TraceContext { trace_id: [0; 16], span_id: [0; 8], flags: 0 };
        hex::decode_to_slice(trace, &mut context.trace_id).ok()?;
        hex::decode_to_slice(span, &mut context.span_id).ok()?;
        let mut flag = [0u8; 1];
        hex::decode_to_slice(flags, &mut flag).ok()?;
        context.flags = flag[0];
        (context.trace_id != [0; 16] && context.span_id != [0; 8]).then_some(context)
    }

    /// The context of work done on behalf of `parent`: same trace, a new span id.
    pub fn child_of(parent: Option<&TraceContext>) -> Self {
        let mut span_id = [0u8; 8];
        fill_nonzero(&mut span_id);
        match parent {
            Some(parent) => TraceContext { trace_id: parent.trace_id, span_id, flags: parent.flags },
            None => {
                let mut trace_id = [0u8; 16];
                fill_nonzero(&mut trace_id);
                TraceContext { trace_id, span_id, flags: 0 }
            }
        }
    }

    /// The W3C `sampled` flag.
    pub fn is_sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    pub fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), self.flags)
    }
}

fn fill_nonzero(bytes: &mut [u8]) {
    loop {
        fastrand::fill(bytes);
        if bytes.iter().any(|&b| b != 0) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_parent_and_rejects_malformed_headers() {
        let parent = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let child = TraceContext::child_of(Some(&parent));
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.flags, 1);
        let header = child.to_header();
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(TraceContext::parse(header.as_bytes()), Some(child));
        for bad in [
            &b""[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            b"00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-xyz",
            b"\xff\xfe",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(TraceContext::parse(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t"), Some(parent));
        assert_eq!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"), Some(parent), "a later version's added fields");
        assert_eq!(TraceContext::child_of(None).flags, 0);
    }
}
