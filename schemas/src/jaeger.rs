//! Jaeger `model.proto` spans (jaeger.api_v2), as Jaeger's Kafka span writer produces with
//! `encoding: protobuf`: one Span per record, its Process embedded. Converted to OTLP following the
//! OpenTelemetry Collector's Jaeger translator: `span.kind`, `otel.status_code`,
//! `otel.status_description`, `error`, `otel.scope.name` and `w3c.tracestate` tags become span fields,
//! the first same-trace CHILD_OF reference is the parent and other references become links, logs
//! become events.

use prost::Message;
use prost_types::{Duration, Timestamp};

use crate::attributes::{self, SERVICE_NAME};
use crate::otlp_common::{any_value, InstrumentationScope, KeyValue as OtlpKeyValue};
use crate::otlp_resource::Resource;
use crate::otlp_trace::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use crate::{DecodeError, ExportTraceServiceRequest, SpanRejection};

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    String = 0,
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    Binary = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    ChildOf = 0,
    FollowsFrom = 1,
}

#[derive(Clone, PartialEq, Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

/// Decodes one Jaeger span into an OTLP request holding it.
pub fn decode(payload: &[u8], rejected: &mut Vec<SpanRejection>) -> Result<ExportTraceServiceRequest, DecodeError> {
    let span = Span::decode(payload)
        .map_err(|e| DecodeError::Protobuf { message: "jaeger Span", reason: e.to_string() })?;
    let mut request = ExportTraceServiceRequest::default();
    match to_otlp(span) {
        Ok(resource_spans) => request.resource_spans.push(resource_spans),
        Err(rejection) => rejected.push(rejection),
    }
    Ok(request)
}

/// Jaeger writes 64-bit trace ids as 16 bytes with zero high half; accept 8 bytes too.
fn widen_trace_id(id: &[u8]) -> Vec<u8> {
    if id.len() == 8 {
        let mut wide = vec![0u8; 8];
        wide.extend_from_slice(id);
        wide
    } else {
        id.to_vec()
    }
}

fn to_nanos(ts: &Timestamp) -> u64 {
    (ts.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(ts.nanos.max(0) as u64)
}

fn duration_nanos(d: &Duration) -> u64 {
    (d.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(d.nanos.max(0) as u64)
}

fn value_of(tag: &KeyValue) -> any_value::Value {
    match ValueType::try_from(tag.v_type).unwrap_or(ValueType::String) {
        ValueType::String => any_value::Value::StringValue(tag.v_str.clone()),
        ValueType::Bool => any_value::Value::BoolValue(tag.v_bool),
        ValueType::Int64 => any_value::Value::IntValue(tag.v_int64),
        ValueType::Float64 => any_value::Value::DoubleValue(tag.v_float64),
        ValueType::Binary => any_value::Value::BytesValue(tag.v_binary.clone()),
    }
}

fn tag_text(tag: &KeyValue) -> String {
    attributes::to_text(&value_of(tag))
}

fn to_otlp(span: Span) -> Result<ResourceSpans, SpanRejection> {
    let trace_id = widen_trace_id(&span.trace_id);
    crate::TraceId::from_slice(&trace_id)?;
    crate::SpanId::from_slice(&span.span_id)?;

    let process = span.process.unwrap_or_default();
    let mut resource_attributes = vec![attributes::string(SERVICE_NAME, process.service_name)];
    resource_attributes.extend(process.tags.iter().map(|t| attributes::kv(&t.key, value_of(t))));

    let mut out = OtlpSpan {
        trace_id,
        span_id: span.span_id,
        name: span.operation_name,
        flags: span.flags & 0xff,
        ..Default::default()
    };
    let mut parent_found = false;
    for reference in span.references {
        let ref_trace = widen_trace_id(&reference.trace_id);
        if !parent_found && ref_trace == out.trace_id && reference.ref_type == SpanRefType::ChildOf as i32 {
            out.parent_span_id = reference.span_id;
            parent_found = true;
        } else {
            out.links.push(span::Link { trace_id: ref_trace, span_id: reference.span_id, ..Default::default() });
        }
    }
    if let Some(start) = &span.start_time {
        out.start_time_unix_nano = to_nanos(start);
        out.end_time_unix_nano = out.start_time_unix_nano + span.duration.as_ref().map(duration_nanos).unwrap_or(0);
    }

    let mut status = Status::default();
    let mut scope = InstrumentationScope::default();
    let mut error_tag = false;
    for tag in &span.tags {
        match tag.key.as_str() {
            "span.kind" => {
                out.kind = match tag.v_str.as_str() {
                    "client" => span::SpanKind::Client,
                    "server" => span::SpanKind::Server,
                    "producer" => span::SpanKind::Producer,
                    "consumer" => span::SpanKind::Consumer,
                    "internal" => span::SpanKind::Internal,
                    _ => span::SpanKind::Unspecified,
                } as i32
            }
            "otel.status_code" => {
                status.code = match tag.v_str.as_str() {
                    "OK" => 1,
                    "ERROR" => 2,
                    _ => status.code,
                }
            }
            "otel.status_description" => status.message = tag_text(tag),
            "error" => error_tag = tag.v_bool || tag.v_str == "true",
            "otel.scope.name" | "otel.library.name" => scope.name = tag_text(tag),
            "otel.scope.version" | "otel.library.version" => scope.version = tag_text(tag),
            "w3c.tracestate" => out.trace_state = tag_text(tag),
            _ => out.attributes.push(attributes::kv(&tag.key, value_of(tag))),
        }
    }
    if error_tag && status.code == 0 {
        status.code = 2;
    }
    if status != Status::default() {
        out.status = Some(status);
    }
    for log in span.logs {
        let mut event = span::Event {
            time_unix_nano: log.timestamp.as_ref().map(to_nanos).unwrap_or(0),
            ..Default::default()
        };
        for field in &log.fields {
            if field.key == "event" {
                event.name = tag_text(field);
            } else {
                event.attributes.push(attributes::kv(&field.key, value_of(field)));
            }
        }
        out.events.push(event);
    }

    Ok(ResourceSpans {
        resource: Some(Resource { attributes: resource_attributes, ..Default::default() }),
        scope_spans: vec![ScopeSpans { scope: Some(scope), spans: vec![out], ..Default::default() }],
        ..Default::default()
    })
}

fn jaeger_tag(attribute: &OtlpKeyValue) -> KeyValue {
    let mut tag = KeyValue { key: attribute.key.clone(), ..Default::default() };
    match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::BoolValue(b)) => {
            tag.v_type = ValueType::Bool as i32;
            tag.v_bool = *b;
        }
        Some(any_value::Value::IntValue(i)) => {
            tag.v_type = ValueType::Int64 as i32;
            tag.v_int64 = *i;
        }
        Some(any_value::Value::DoubleValue(d)) => {
            tag.v_type = ValueType::Float64 as i32;
            tag.v_float64 = *d;
        }
        Some(any_value::Value::BytesValue(b)) => {
            tag.v_type = ValueType::Binary as i32;
            tag.v_binary = b.clone();
        }
        Some(other) => tag.v_str = attributes::to_text(other),
        None => {}
    }
    tag
}

fn string_tag(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), v_str: value.into(), ..Default::default() }
}

fn timestamp(nanos: u64) -> Timestamp {
    Timestamp { seconds: (nanos / 1_000_000_000) as i64, nanos: (nanos % 1_000_000_000) as i32 }
}

/// Converts OTLP spans to Jaeger spans (the inverse of [`decode`]), for load generation and tests.
pub fn from_otlp(request: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let resource_attributes = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let process = Process {
            service_name: attributes::find_str(resource_attributes, SERVICE_NAME).unwrap_or("unknown_service").to_string(),
            tags: resource_attributes.iter().filter(|kv| kv.key != SERVICE_NAME).map(jaeger_tag).collect(),
        };
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let mut tags: Vec<KeyValue> = s.attributes.iter().map(jaeger_tag).collect();
                let kind = match span::SpanKind::try_from(s.kind).unwrap_or(span::SpanKind::Unspecified) {
                    span::SpanKind::Client => Some("client"),
                    span::SpanKind::Server => Some("server"),
                    span::SpanKind::Producer => Some("producer"),
                    span::SpanKind::Consumer => Some("consumer"),
                    span::SpanKind::Internal => Some("internal"),
                    span::SpanKind::Unspecified => None,
                };
                if let Some(kind) = kind {
                    tags.push(string_tag("span.kind", kind));
                }
                if let Some(status) = &s.status {
                    match status.code {
                        1 => tags.push(string_tag("otel.status_code", "OK")),
                        2 => {
                            tags.push(string_tag("otel.status_code", "ERROR"));
                            tags.push(KeyValue { key: "error".into(), v_type: ValueType::Bool as i32, v_bool: true, ..Default::default() });
                        }
                        _ => {}
                    }
                    if !status.message.is_empty() {
                        tags.push(string_tag("otel.status_description", &status.message));
                    }
                }
                if let Some(scope) = &ss.scope {
                    if !scope.name.is_empty() {
                        tags.push(string_tag("otel.scope.name", &scope.name));
                    }
                }
                let mut references = Vec::new();
                if !s.parent_span_id.is_empty() {
                    references.push(SpanRef { trace_id: s.trace_id.clone(), span_id: s.parent_span_id.clone(), ref_type: SpanRefType::ChildOf as i32 });
                }
                for link in &s.links {
                    references.push(SpanRef { trace_id: link.trace_id.clone(), span_id: link.span_id.clone(), ref_type: SpanRefType::FollowsFrom as i32 });
                }
                let logs = s
                    .events
                    .iter()
                    .map(|e| Log {
                        timestamp: Some(timestamp(e.time_unix_nano)),
                        fields: std::iter::once(string_tag("event", &e.name)).chain(e.attributes.iter().map(jaeger_tag)).collect(),
                    })
                    .collect();
                let duration = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                spans.push(Span {
                    trace_id: s.trace_id.clone(),
                    span_id: s.span_id.clone(),
                    operation_name: s.name.clone(),
                    references,
                    flags: s.flags & 0xff,
                    start_time: Some(timestamp(s.start_time_unix_nano)),
                    duration: Some(Duration { seconds: (duration / 1_000_000_000) as i64, nanos: (duration % 1_000_000_000) as i32 }),
                    tags,
                    logs,
                    process: Some(process.clone()),
                    ..Default::default()
                });
            }
        }
    }
    spans
}
