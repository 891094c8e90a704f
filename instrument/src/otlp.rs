//! OTLP protobuf (`opentelemetry.proto.trace.v1.Span`) written straight from the SDK's
//! [`SpanData`], with the same content `opentelemetry-proto`'s conversion gives, but without
//! building its message structs first: that conversion copies every attribute key and value into
//! a new `String` (about eighty allocations per request in the example shop), only for the
//! copies to be encoded and dropped.
//!
//! Nested messages (attributes, events, links, status) are measured before they are written, so
//! every length is exact and the output is canonical protobuf.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{encoded_len_varint, key_len, WireType};

/// `SpanFlags`: the low byte is the W3C trace flags; these say whether the parent was remote.
const FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;

fn flags(context: &SpanContext, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | FLAGS_CONTEXT_HAS_IS_REMOTE;
    if parent_is_remote {
        flags |= FLAGS_CONTEXT_IS_REMOTE;
    }
    flags
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

// ---- sizes ---------------------------------------------------------------------------------

/// A length-delimited field of `body` bytes, with its key and length.
pub(crate) fn delimited_len(field: u32, body: usize) -> usize {
    key_len(field) + encoded_len_varint(body as u64) + body
}

fn text_len(field: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        delimited_len(field, text.len())
    }
}

fn varint_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + encoded_len_varint(value)
    }
}

fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + 8
    }
}

/// The body of an `AnyValue` holding `value`. The oneof field is written even when it holds a
/// default (false, 0, ""), as protobuf requires for a set oneof.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(s) => delimited_len(1, s.as_str().len()),
        Value::Array(array) => delimited_len(5, array_len(array)),
        other => delimited_len(1, other.as_str().len()),
    }
}

/// The body of an `ArrayValue`: one `AnyValue` per element.
fn array_len(array: &Array) -> usize {
    match array {
        Array::Bool(values) => values.iter().map(|b| element_len(&Value::Bool(*b))).sum(),
        Array::I64(values) => values.iter().map(|i| element_len(&Value::I64(*i))).sum(),
        Array::F64(values) => values.iter().map(|f| element_len(&Value::F64(*f))).sum(),
        Array::String(values) => values.iter().map(|s| delimited_len(1, delimited_len(1, s.as_str().len()))).sum(),
        other => delimited_len(1, delimited_len(1, other.to_string().len())),
    }
}

/// One `AnyValue` element (field 1) of an `ArrayValue` holding a scalar `value`.
fn element_len(value: &Value) -> usize {
    delimited_len(1, any_value_len(value))
}

fn key_value_len(kv: &KeyValue) -> usize {
    text_len(1, kv.key.as_str()) + delimited_len(2, any_value_len(&kv.value))
}

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| delimited_len(field, key_value_len(kv))).sum()
}

fn event_len(event: &Event) -> usize {
    fixed64_len(1, nanos(event.timestamp)) + text_len(2, &event.name) + attributes_len(3, &event.attributes) + varint_len(4, u64::from(event.dropped_attributes_count))
}

fn link_len(link: &Link, trace_state: &str) -> usize {
    delimited_len(1, 16)
        + delimited_len(2, 8)
        + text_len(3, trace_state)
        + attributes_len(4, &link.attributes)
        + varint_len(5, u64::from(link.dropped_attributes_count))
        + key_len(6)
        + 4
}

fn status_len(status: &Status) -> usize {
    match status {
        Status::Unset => 0,
        Status::Ok => varint_len(3, 1),
        Status::Error { description } => text_len(2, description) + varint_len(3, 2),
    }
}

// ---- writing -------------------------------------------------------------------------------

/// A varint, pushed byte by byte onto the `Vec`: prost's `encode_varint` goes through `BufMut`,
/// a bounds-checked slice copy per byte and a call that is not inlined, and the keys and lengths
/// it would write are most of a span's bytes.
#[inline]
fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A field's key: one byte for every field OTLP's messages have below 16.
#[inline]
fn encode_key(field: u32, wire_type: WireType, out: &mut Vec<u8>) {
    encode_varint(u64::from(field << 3 | wire_type as u32), out);
}

/// The key and length of a length-delimited field whose `body` bytes follow.
pub(crate) fn write_delimited_header(field: u32, body: usize, out: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(body as u64, out);
}

fn write_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        write_delimited_header(field, bytes.len(), out);
        out.extend_from_slice(bytes);
    }
}

fn write_varint(field: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(field, WireType::Varint, out);
        encode_varint(value, out);
    }
}

fn write_fixed64(field: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(field, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn write_fixed32(field: u32, value: u32, out: &mut Vec<u8>) {
    encode_key(field, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&value.to_le_bytes());
}

fn write_any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            out.push(u8::from(*b));
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            write_delimited_header(1, s.as_str().len(), out);
            out.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(array) => {
            write_delimited_header(5, array_len(array), out);
            write_array(array, out);
        }
        other => {
            let text = other.as_str();
            write_delimited_header(1, text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// One `AnyValue` element of an `ArrayValue` (field 1) holding a scalar `value`.
fn write_element(value: &Value, out: &mut Vec<u8>) {
    write_delimited_header(1, any_value_len(value), out);
    write_any_value(value, out);
}

/// One `AnyValue` element of an `ArrayValue` (field 1) holding `text`.
fn write_text_element(text: &str, out: &mut Vec<u8>) {
    write_delimited_header(1, delimited_len(1, text.len()), out);
    write_delimited_header(1, text.len(), out);
    out.extend_from_slice(text.as_bytes());
}

fn write_array(array: &Array, out: &mut Vec<u8>) {
    match array {
        Array::Bool(values) => values.iter().for_each(|b| write_element(&Value::Bool(*b), out)),
        Array::I64(values) => values.iter().for_each(|i| write_element(&Value::I64(*i), out)),
        Array::F64(values) => values.iter().for_each(|f| write_element(&Value::F64(*f), out)),
        Array::String(values) => values.iter().for_each(|s| write_text_element(s.as_str(), out)),
        other => write_text_element(&other.to_string(), out),
    }
}

fn write_attributes(field: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for kv in attributes {
        let key = kv.key.as_str();
        let value_len = any_value_len(&kv.value);
        write_delimited_header(field, text_len(1, key) + delimited_len(2, value_len), out);
        write_bytes(1, key.as_bytes(), out);
        write_delimited_header(2, value_len, out);
        write_any_value(&kv.value, out);
    }
}

fn trace_state_header(context: &SpanContext) -> String {
    if context.trace_state() == &Default::default() {
        String::new()
    } else {
        context.trace_state().header()
    }
}

/// Appends the body of an OTLP `Span` message for `span` (no tag or length of its own).
pub fn write_span(span: &SpanData, out: &mut Vec<u8>) {
    let context = &span.span_context;
    write_bytes(1, &context.trace_id().to_bytes(), out);
    write_bytes(2, &context.span_id().to_bytes(), out);
    write_bytes(3, trace_state_header(context).as_bytes(), out);
    if span.parent_span_id != SpanId::INVALID {
        write_bytes(4, &span.parent_span_id.to_bytes(), out);
    }
    write_bytes(5, span.name.as_bytes(), out);
    write_varint(6, kind(&span.span_kind), out);
    write_fixed64(7, nanos(span.start_time), out);
    write_fixed64(8, nanos(span.end_time), out);
    write_attributes(9, &span.attributes, out);
    write_varint(10, u64::from(span.dropped_attributes_count), out);
    for event in span.events.iter() {
        write_delimited_header(11, event_len(event), out);
        write_fixed64(1, nanos(event.timestamp), out);
        write_bytes(2, event.name.as_bytes(), out);
        write_attributes(3, &event.attributes, out);
        write_varint(4, u64::from(event.dropped_attributes_count), out);
    }
    write_varint(12, u64::from(span.events.dropped_count), out);
    for link in span.links.iter() {
        let trace_state = trace_state_header(&link.span_context);
        write_delimited_header(13, link_len(link, &trace_state), out);
        write_bytes(1, &link.span_context.trace_id().to_bytes(), out);
        write_bytes(2, &link.span_context.span_id().to_bytes(), out);
        write_bytes(3, trace_state.as_bytes(), out);
        write_attributes(4, &link.attributes, out);
        write_varint(5, u64::from(link.dropped_attributes_count), out);
        write_fixed32(6, flags(&link.span_context, link.span_context.is_remote()), out);
    }
    write_varint(14, u64::from(span.links.dropped_count), out);
    // Always present, as the OTLP conversion writes it: an empty message when unset.
    write_delimited_header(15, status_len(&span.status), out);
    if let Status::Error { description } = &span.status {
        write_bytes(2, description.as_bytes(), out);
    }
    write_varint(3, match span.status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { .. } => 2,
    }, out);
    write_fixed32(16, flags(context, span.parent_span_is_remote), out);
}
