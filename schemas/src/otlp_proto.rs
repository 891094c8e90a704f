//! Splits an OTLP `ExportTraceServiceRequest` by trace id without decoding its spans.
//!
//! The walker reads the request's framing down to each span's fields: it checks wire types and
//! lengths, validates trace, span and parent ids and UTF-8 of the span name, and remembers where
//! each resource, scope and span lies. Each trace's payload is then written by copying those byte
//! ranges into a `tracepipe.v1.TraceSpans` message, so a span costs a few comparisons and one copy.
//! Attribute values are not validated here; the assembler decodes every span and dead-letters
//! what it cannot read.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use crate::split::{SplitBatch, TraceChunk};
use crate::wire::{self, Field, Reader, Value, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};
use crate::{DecodeError, SpanId, SpanRejection, TraceId};

#[derive(Default)]
pub struct OtlpProtoSplitter {
    traces: HashMap<TraceId, u32, BuildHasherDefault<IdHasher>>,
    trace_ids: Vec<TraceId>,
    resources: Vec<ResourceFields>,
    scopes: Vec<ScopeFields>,
    spans: Vec<SpanEntry>,
    lens: Vec<usize>,
}

#[derive(Default, Clone)]
struct ResourceFields {
    resource: Range<usize>,
    schema_url: Range<usize>,
}

#[derive(Default, Clone)]
struct ScopeFields {
    resource: u32,
    scope: Range<usize>,
    schema_url: Range<usize>,
}

#[derive(Clone, Copy)]
struct SpanEntry {
    trace: u32,
    scope: u32,
    start: usize,
    end: usize,
}

fn invalid(message: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Protobuf { message, reason: reason.into() }
}

fn expect_wire(field: &Field<'_>, wire_type: u8, message: &'static str) -> Result<(), DecodeError> {
    if field.value.wire_type() == wire_type {
        Ok(())
    } else {
        Err(invalid(message, format!("field {} has wire type {}, expected {}", field.number, field.value.wire_type(), wire_type)))
    }
}

impl OtlpProtoSplitter {
    /// Splits `msg` into one or more `TraceSpans` per trace, none larger than `max_chunk_bytes`
    /// (but for a single span that is).
    pub fn split(&mut self, msg: &[u8], max_chunk_bytes: usize, out: &mut SplitBatch) -> Result<(), DecodeError> {
        self.traces.clear();
        self.trace_ids.clear();
        self.resources.clear();
        self.scopes.clear();
        self.spans.clear();
        for field in Reader::new(msg, 0) {
            let field = field.map_err(|e| invalid("ExportTraceServiceRequest", e))?;
            if field.number == 1 {
                expect_wire(&field, WIRE_LEN, "ExportTraceServiceRequest")?;
                let Value::Len(body) = field.value else { unreachable!() };
                self.walk_resource_spans(body, field.body_start, out)?;
            }
        }
        self.write_chunks(msg, max_chunk_bytes, out);
        Ok(())
    }

    fn walk_resource_spans(&mut self, body: &[u8], base: usize, out: &mut SplitBatch) -> Result<(), DecodeError> {
        let index = self.resources.len() as u32;
        self.resources.push(ResourceFields::default());
        for field in Reader::new(body, base) {
            let field = field.map_err(|e| invalid("ResourceSpans", e))?;
            match field.number {
                1 | 3 => {
                    expect_wire(&field, WIRE_LEN, "ResourceSpans")?;
                    let resource = &mut self.resources[index as usize];
                    if field.number == 1 {
                        resource.resource = field.raw;
                    } else {
                        resource.schema_url = field.raw;
                    }
                }
                2 => {
                    expect_wire(&field, WIRE_LEN, "ResourceSpans")?;
                    let Value::Len(scope_body) = field.value else { unreachable!() };
                    self.walk_scope_spans(index, scope_body, field.body_start, out)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn walk_scope_spans(&mut self, resource: u32, body: &[u8], base: usize, out: &mut SplitBatch) -> Result<(), DecodeError> {
        let index = self.scopes.len() as u32;
        self.scopes.push(ScopeFields { resource, ..Default::default() });
        for field in Reader::new(body, base) {
            let field = field.map_err(|e| invalid("ScopeSpans", e))?;
            match field.number {
                1 => {
                    expect_wire(&field, WIRE_LEN, "ScopeSpans")?;
                    self.scopes[index as usize].scope = field.raw;
                }
                3 => {
                    expect_wire(&field, WIRE_LEN, "ScopeSpans")?;
                    self.scopes[index as usize].schema_url = field.raw;
                }
                2 => {
                    expect_wire(&field, WIRE_LEN, "ScopeSpans")?;
                    let Value::Len(span_body) = field.value else { unreachable!() };
                    match read_span_ids(span_body, field.body_start)? {
                        Ok(trace_id) => {
                            let next = self.trace_ids.len() as u32;
                            let trace = *self.traces.entry(trace_id).or_insert(next);
                            if trace == next {
                                self.trace_ids.push(trace_id);
                            }
                            self.spans.push(SpanEntry { trace, scope: index, start: field.raw.start, end: field.raw.end });
                        }
                        Err(rejection) => out.rejected.push(rejection),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes one `TraceSpans` per trace, keeping the input's resource and scope grouping; a
    /// trace whose spans would take more than `max_chunk_bytes` is written as several, each of
    /// them at most that size unless a single span is larger.
    fn write_chunks(&mut self, msg: &[u8], max_chunk_bytes: usize, out: &mut SplitBatch) {
        // Group spans by trace, keeping input order within a trace (the index breaks ties).
        self.spans.sort_unstable_by_key(|s| (s.trace, s.start));
        let mut rest = &self.spans[..];
        while let Some(first) = rest.first() {
            let count = rest.iter().take_while(|s| s.trace == first.trace).count();
            let (trace_spans, tail) = rest.split_at(count);
            rest = tail;
            let trace_id = self.trace_ids[first.trace as usize];
            let mut pending = trace_spans;
            while !pending.is_empty() {
                let take = spans_within(pending, max_chunk_bytes, &self.resources, &self.scopes);
                let (part, after) = pending.split_at(take);
                pending = after;
                let start = out.buf.len();
                encode_trace(msg, trace_id, part, &self.resources, &self.scopes, &mut self.lens, &mut out.buf);
                out.chunks.push(TraceChunk { trace_id, span_count: part.len() as u32, payload: start..out.buf.len() });
            }
        }
    }
}

/// How many of `spans` (at least one) fit in a `TraceSpans` of at most `limit` bytes: each span's
/// bytes, plus for each scope it opens that scope's and its resource's fields and framing
/// (counted generously: 2 × 10 bytes of tags and lengths).
fn spans_within(spans: &[SpanEntry], limit: usize, resources: &[ResourceFields], scopes: &[ScopeFields]) -> usize {
    const FRAMING: usize = 20;
    let mut size = 2 + 16;
    let mut scope = None;
    for (i, span) in spans.iter().enumerate() {
        let mut cost = span.end - span.start;
        if scope != Some(span.scope) {
            let s = &scopes[span.scope as usize];
            let r = &resources[s.resource as usize];
            cost += FRAMING + s.scope.len() + s.schema_url.len() + r.resource.len() + r.schema_url.len();
            scope = Some(span.scope);
        }
        if i > 0 && size + cost > limit {
            return i;
        }
        size += cost;
    }
    spans.len()
}

/// Validates one span's framing and ids; returns its trace id, or why the span is rejected.
fn read_span_ids(body: &[u8], base: usize) -> Result<Result<TraceId, SpanRejection>, DecodeError> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut parent_id: &[u8] = &[];
    for field in Reader::new(body, base) {
        let field = field.map_err(|e| invalid("Span", e))?;
        let expected = match field.number {
            1..=5 | 9 | 11 | 13 | 15 => WIRE_LEN,
            6 | 10 | 12 | 14 => WIRE_VARINT,
            7 | 8 => WIRE_I64,
            16 => WIRE_I32,
            _ => continue,
        };
        expect_wire(&field, expected, "Span")?;
        if let Value::Len(bytes) = field.value {
            match field.number {
                1 => trace_id = bytes,
                2 => span_id = bytes,
                4 => parent_id = bytes,
                3 | 5 => {
                    std::str::from_utf8(bytes).map_err(|_| invalid("Span", format!("field {} is not valid UTF-8", field.number)))?;
                }
                _ => {}
            }
        }
    }
    let trace_id = match TraceId::from_slice(trace_id) {
        Ok(id) => id,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if let Err(rejection) = SpanId::from_slice(span_id) {
        return Ok(Err(rejection));
    }
    if !parent_id.is_empty() && parent_id.len() != 8 {
        return Ok(Err(SpanRejection::ParentIdLength(parent_id.len())));
    }
    Ok(Ok(trace_id))
}

const TAG_TRACE_ID: u8 = 1 << 3 | 2;
const TAG_RESOURCE_SPANS: u8 = 2 << 3 | 2;
const TAG_SCOPE_SPANS: u8 = 2 << 3 | 2;

/// Encodes `TraceSpans { trace_id, resource_spans }` from byte ranges of `msg`. `spans` are one
/// trace's spans in input order, so spans of one scope, and scopes of one resource, are adjacent.
fn encode_trace(
    msg: &[u8],
    trace_id: TraceId,
    spans: &[SpanEntry],
    resources: &[ResourceFields],
    scopes: &[ScopeFields],
    lens: &mut Vec<usize>,
    out: &mut Vec<u8>,
) {
    // Pass 1: body length of every ScopeSpans and ResourceSpans, in writing order.
    lens.clear();
    let mut i = 0;
    while i < spans.len() {
        let resource = scopes[spans[i].scope as usize].resource;
        let resource_slot = lens.len();
        lens.push(0);
        let r = &resources[resource as usize];
        let mut resource_len = r.resource.len() + r.schema_url.len();
        while i < spans.len() && scopes[spans[i].scope as usize].resource == resource {
            let scope = spans[i].scope;
            let s = &scopes[scope as usize];
            let mut scope_len = s.scope.len() + s.schema_url.len();
            while i < spans.len() && spans[i].scope == scope {
                scope_len += spans[i].end - spans[i].start;
                i += 1;
            }
            lens.push(scope_len);
            resource_len += 1 + wire::varint_len(scope_len as u64) + scope_len;
        }
        lens[resource_slot] = resource_len;
    }

    // Pass 2: write.
    out.push(TAG_TRACE_ID);
    out.push(16);
    out.extend_from_slice(&trace_id.0);
    let mut i = 0;
    let mut next_len = lens.iter();
    while i < spans.len() {
        let resource = scopes[spans[i].scope as usize].resource;
        let r = &resources[resource as usize];
        out.push(TAG_RESOURCE_SPANS);
        wire::encode_varint(*next_len.next().expect("length per resource") as u64, out);
        out.extend_from_slice(&msg[r.resource.clone()]);
        while i < spans.len() && scopes[spans[i].scope as usize].resource == resource {
            let scope = spans[i].scope;
            let s = &scopes[scope as usize];
            out.push(TAG_SCOPE_SPANS);
            wire::encode_varint(*next_len.next().expect("length per scope") as u64, out);
            out.extend_from_slice(&msg[s.scope.clone()]);
            while i < spans.len() && spans[i].scope == scope {
                out.extend_from_slice(&msg[spans[i].start..spans[i].end]);
                i += 1;
            }
            out.extend_from_slice(&msg[s.schema_url.clone()]);
        }
        out.extend_from_slice(&msg[r.schema_url.clone()]);
    }
}

/// Trace ids are random, so their first 8 bytes are already a good hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}
