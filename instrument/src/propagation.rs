//! W3C trace context (`traceparent` and `tracestate`) in HTTP and Kafka headers: the only
//! context the library's HTTP and Kafka spans carry. A propagator the service makes global (B3,
//! baggage) is not consulted for them.
//!
//! The header is read and written here, on the stack, rather than through the global
//! `TextMapPropagator`: the SDK's `TraceContextPropagator` collects the header's parts into a
//! `Vec`, formats the ids through `fmt` into a new `String` and, behind the global propagator's
//! lock and a `dyn` call, costs about 4,000 instructions per extract or inject (measured with
//! callgrind on the example shop), where this costs a few hundred. What it accepts is what the
//! W3C Trace Context specification accepts (the SDK is more lenient: it takes short ids and
//! upper-case versions); what it writes is byte for byte what the SDK writes, except that an
//! empty `tracestate` is left out instead of sent as an empty header.

use std::borrow::Cow;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The header names as HTTP header names, validated once, at compile time.
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// `00-{trace id}-{span id}-{flags}`.
const TRACEPARENT_LEN: usize = 55;

/// The `traceparent` value for `context`'s span, when it has a valid one.
fn traceparent(context: &Context) -> Option<([u8; TRACEPARENT_LEN], Option<String>)> {
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let mut out = [0u8; TRACEPARENT_LEN];
    out[..3].copy_from_slice(b"00-");
    // The slices are exactly twice the bytes' length, which is all encode_to_slice checks.
    let _ = const_hex::encode_to_slice(span_context.trace_id().to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    let _ = const_hex::encode_to_slice(span_context.span_id().to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    let _ = const_hex::encode_to_slice([(span_context.trace_flags() & TraceFlags::SAMPLED).to_u8()], &mut out[53..55]);
    let trace_state = Some(span_context.trace_state().header()).filter(|header| !header.is_empty());
    Some((out, trace_state))
}

/// Lower-case hex only, as the specification requires (`const_hex` alone also takes upper case,
/// and a `0x` prefix). Both checks run over every byte without stopping at the first that fails,
/// which lets them run on whole vectors: a header's ids are decoded on every request.
fn read_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if !text.iter().fold(true, |lower_hex, c| lower_hex & matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    const_hex::decode_to_array(text).ok()
}

/// The remote span context a `traceparent` (and `tracestate`) header carries, per the W3C Trace
/// Context specification: version `ff` and all-zero ids are invalid; version `00` is exactly 55
/// characters; a later version may append fields after a `-`, which are ignored.
pub fn parse_traceparent(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<SpanContext> {
    let value = traceparent.trim_ascii();
    if value.len() < TRACEPARENT_LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let [version] = read_hex::<1>(&value[..2])?;
    let exact = value.len() == TRACEPARENT_LEN;
    if version == 0xff || (version == 0 && !exact) || (!exact && value[TRACEPARENT_LEN] != b'-') {
        return None;
    }
    let trace_id = TraceId::from_bytes(read_hex::<16>(&value[3..35])?);
    let span_id = SpanId::from_bytes(read_hex::<8>(&value[36..52])?);
    let [flags] = read_hex::<1>(&value[53..55])?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let trace_state = tracestate
        .and_then(|header| std::str::from_utf8(header).ok())
        .and_then(|header| header.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED, true, trace_state))
}

/// `context` continuing the remote span the headers carry, or `context` itself when they carry
/// none (or one that is not valid).
fn continued(context: Context, remote: Option<SpanContext>) -> Context {
    match remote {
        Some(remote) => context.with_remote_span_context(remote),
        None => context,
    }
}

/// Writes `context` into HTTP headers, replacing any trace context they held.
pub fn inject_http(context: &Context, headers: &mut http::HeaderMap) {
    if let Some((traceparent, tracestate)) = traceparent(context) {
        if let Ok(value) = http::HeaderValue::from_bytes(&traceparent) {
            headers.insert(TRACEPARENT_HEADER, value);
        }
        match tracestate.and_then(|state| http::HeaderValue::from_str(&state).ok()) {
            Some(value) => headers.insert(TRACESTATE_HEADER, value),
            // A forwarded request's old state does not belong to the new parent.
            None => headers.remove(TRACESTATE_HEADER),
        };
    }
}

/// The context HTTP headers carry, as a child of the current context (the current context when
/// they carry none). A `traceparent` sent twice is no context, as the specification's test suite
/// has it; several `tracestate` lines are one list.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    let mut traceparents = headers.get_all(TRACEPARENT_HEADER).iter();
    let remote = match (traceparents.next(), traceparents.next()) {
        (Some(traceparent), None) => {
            let mut states = headers.get_all(TRACESTATE_HEADER).iter();
            let state: Option<Cow<'_, [u8]>> = match (states.next(), states.next()) {
                (Some(first), Some(second)) => {
                    let lines: Vec<&[u8]> = [first, second].into_iter().chain(states).map(http::HeaderValue::as_bytes).collect();
                    Some(Cow::Owned(lines.join(&b","[..])))
                }
                (first, _) => first.map(|state| Cow::Borrowed(state.as_bytes())),
            };
            parse_traceparent(traceparent.as_bytes(), state.as_deref())
        }
        _ => None,
    };
    continued(Context::current(), remote)
}

/// Adds `context` to Kafka record headers.
pub fn inject_kafka(context: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    let Some((traceparent, tracestate)) = traceparent(context) else {
        return headers;
    };
    let headers = headers.insert(Header { key: TRACEPARENT, value: Some(&traceparent[..]) });
    match tracestate {
        Some(state) => headers.insert(Header { key: TRACESTATE, value: Some(state.as_bytes()) }),
        None => headers,
    }
}

/// The context a Kafka record's headers carry, as a child of the current context. Header keys
/// are matched regardless of case, as HTTP's are; of several, the last counts, since Kafka
/// headers are appended to (a forwarded record keeps its old ones ahead of the new).
pub fn extract_kafka<H: Headers>(headers: Option<&H>) -> Context {
    let remote = headers.and_then(|headers| {
        // One pass over the headers: each is read from librdkafka and its key checked as UTF-8.
        let (mut traceparent, mut tracestate) = (None, None);
        for header in headers.iter() {
            if header.key.eq_ignore_ascii_case(TRACEPARENT) {
                traceparent = header.value;
            } else if header.key.eq_ignore_ascii_case(TRACESTATE) {
                tracestate = header.value;
            }
        }
        parse_traceparent(traceparent?, tracestate)
    });
    continued(Context::current(), remote)
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const VALID: &[&str] = &[
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-08",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-XYZxsf09",
    ];

    const INVALID: &[&str] = &[
        "",
        "00",
        "0000-00000000000000000000000000000000-0000000000000000-01",
        "00-ab00000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-cd0000000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-0100",
        "00-ab000000000000000000000000000000-cd00000000000000-01-",
        "qw-00000000000000000000000000000000-0000000000000000-01",
        "00-qw000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-qw00000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-qw",
        "00-AB000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-CD00000000000000-01",
        "00-ab000000000000000000000000000000-cd00000000000000-0A",
        "0A-ab000000000000000000000000000000-cd00000000000000-01",
        "ff-ab000000000000000000000000000000-cd00000000000000-01",
        "00-00000000000000000000000000000000-cd00000000000000-01",
        "00-ab000000000000000000000000000000-0000000000000000-01",
        "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09XYZ",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b701-",
        "00-ab00000000000000000000000000000ä-cd00000000000000-01",
        // const-hex alone would strip a `0x` prefix.
        "00-0x000000000000000000000000000001-cd00000000000000-01",
        "00-ab000000000000000000000000000000-0x00000000000001-01",
        "0x-ab000000000000000000000000000000-cd00000000000000-01",
    ];

    fn sdk_extract(traceparent: &str, tracestate: Option<&str>) -> SpanContext {
        let mut carrier = std::collections::HashMap::new();
        carrier.insert(TRACEPARENT.to_string(), traceparent.to_string());
        if let Some(state) = tracestate {
            carrier.insert(TRACESTATE.to_string(), state.to_string());
        }
        TraceContextPropagator::new().extract(&carrier).span().span_context().clone()
    }

    /// What the specification accepts, the SDK's propagator accepts alike.
    #[test]
    fn valid_headers_read_as_the_sdk_reads_them() {
        for traceparent in VALID {
            for tracestate in [None, Some("vendor=a1,other=b2"), Some("not a state")] {
                let ours = parse_traceparent(traceparent.as_bytes(), tracestate.map(str::as_bytes)).unwrap_or_else(|| panic!("{traceparent:?} is valid"));
                assert_eq!(ours, sdk_extract(traceparent, tracestate), "{traceparent:?} {tracestate:?}");
                assert!(ours.is_remote());
            }
        }
    }

    #[test]
    fn invalid_headers_carry_no_context() {
        for traceparent in INVALID {
            assert_eq!(parse_traceparent(traceparent.as_bytes(), None), None, "{traceparent:?} is invalid");
        }
        assert_eq!(parse_traceparent(&[0xff; 60], None), None);
    }

    /// Injected headers are the SDK's, byte for byte (an empty `tracestate` aside).
    #[test]
    fn injected_headers_are_what_the_sdk_writes() {
        for (flags, state) in [(TraceFlags::SAMPLED, TraceState::NONE), (TraceFlags::default(), TraceState::from_key_value([("vendor", "a1"), ("k", "v")]).unwrap())] {
            let span = SpanContext::new(TraceId::from_bytes([0xab; 16]), SpanId::from_bytes([0x0c; 8]), flags, false, state.clone());
            let context = Context::new().with_remote_span_context(span.clone());
            let mut sdk = std::collections::HashMap::new();
            TraceContextPropagator::new().inject_context(&context, &mut sdk);

            let mut http_headers = http::HeaderMap::new();
            inject_http(&context, &mut http_headers);
            assert_eq!(http_headers.get(TRACEPARENT).unwrap().to_str().unwrap(), sdk[TRACEPARENT]);
            assert_eq!(http_headers.get(TRACESTATE).map(|v| v.to_str().unwrap().to_string()), Some(sdk[TRACESTATE].clone()).filter(|s| !s.is_empty()));

            let kafka = inject_kafka(&context, OwnedHeaders::new());
            let read = extract_kafka(Some(&kafka));
            assert_eq!(read.span().span_context().trace_id(), span.trace_id());
            assert_eq!(read.span().span_context().span_id(), span.span_id());
            assert_eq!(read.span().span_context().trace_flags(), flags);
            assert_eq!(read.span().span_context().trace_state(), &state);
            assert_eq!(extract_http(&http_headers).span().span_context(), read.span().span_context());
        }
        // A forwarded request's old context is replaced, state included.
        let mut forwarded = http::HeaderMap::new();
        forwarded.insert(TRACEPARENT, http::HeaderValue::from_static("00-11111111111111111111111111111111-2222222222222222-01"));
        forwarded.insert(TRACESTATE, http::HeaderValue::from_static("old=1"));
        let fresh = Context::new().with_remote_span_context(SpanContext::new(TraceId::from_bytes([3; 16]), SpanId::from_bytes([4; 8]), TraceFlags::SAMPLED, false, TraceState::NONE));
        inject_http(&fresh, &mut forwarded);
        assert_eq!(forwarded.get(TRACEPARENT).unwrap(), "00-03030303030303030303030303030303-0404040404040404-01");
        assert_eq!(forwarded.get(TRACESTATE), None);

        let mut untouched = http::HeaderMap::new();
        inject_http(&Context::new(), &mut untouched);
        assert!(untouched.is_empty());
        assert_eq!(inject_kafka(&Context::new(), OwnedHeaders::new()).count(), 0);
    }

    #[test]
    fn duplicated_traceparents_carry_no_context_and_tracestate_lines_are_one_list() {
        const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.append(TRACEPARENT, http::HeaderValue::from_static(PARENT));
        headers.append(TRACESTATE, http::HeaderValue::from_static("a=1"));
        headers.append(TRACESTATE, http::HeaderValue::from_static("b=2,c=3"));
        let context = extract_http(&headers);
        assert_eq!(context.span().span_context().trace_state().header(), "a=1,b=2,c=3");
        headers.append(TRACEPARENT, http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"));
        assert!(!extract_http(&headers).span().span_context().is_valid());

        // Kafka: the last header wins, whatever the case of its key.
        let kafka = OwnedHeaders::new()
            .insert(Header { key: "traceparent", value: Some("00-11111111111111111111111111111111-2222222222222222-01") })
            .insert(Header { key: "TraceParent", value: Some(PARENT) });
        assert_eq!(extract_kafka(Some(&kafka)).span().span_context().trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
    }
}
