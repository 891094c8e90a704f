//! Spans as Jaeger's HTTP API shows them, converted from OTLP the way Jaeger's own OTLP
//! translator does: attributes become typed tags, the span kind `span.kind`, an error status
//! `error=true` with `otel.status_code`/`otel.status_description`, events become logs with an
//! `event` field, the parent a CHILD_OF reference and links FOLLOWS_FROM references. The sink
//! stores each span in this form, so a trace is converted once, when written, not per read.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as OtlpKeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(rename = "type")]
    pub value_type: String,
    pub value: Value,
}

impl KeyValue {
    pub fn string(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.to_string(), value_type: "string".into(), value: Value::String(value.to_string()) }
    }

    /// The value as a search matches it: `key=value` with the value as text.
    pub fn value_text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub timestamp: u64,
    pub fields: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: String,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    pub tags: Vec<KeyValue>,
}

/// What the store keeps of a span beside its search columns (ids, names and times are columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanBody {
    pub references: Vec<Reference>,
    pub tags: Vec<KeyValue>,
    pub logs: Vec<Log>,
    pub process: Process,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn key_values(attributes: &[OtlpKeyValue]) -> Vec<KeyValue> {
    attributes.iter().filter_map(|kv| Some(KeyValue { key: kv.key.clone(), ..typed(kv.value.as_ref()?)? })).collect()
}

fn typed(value: &AnyValue) -> Option<KeyValue> {
    let (value_type, value) = match value.value.as_ref()? {
        any_value::Value::StringValue(s) => ("string", Value::String(s.clone())),
        any_value::Value::BoolValue(b) => ("bool", Value::Bool(*b)),
        any_value::Value::IntValue(i) => ("int64", Value::from(*i)),
        any_value::Value::DoubleValue(d) => ("float64", serde_json::Number::from_f64(*d).map_or(Value::String(d.to_string()), Value::Number)),
        any_value::Value::BytesValue(b) => {
            use base64::Engine;
            ("binary", Value::String(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        // Arrays and maps are flattened to JSON text, as Jaeger's translator does.
        other @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => ("string", Value::String(json_text(other))),
        // An index into a profile's string table: meaningless without the table, which spans lack.
        any_value::Value::StringValueStrindex(index) => ("int64", Value::from(*index)),
    };
    Some(KeyValue { key: String::new(), value_type: value_type.into(), value })
}

fn json_text(value: &any_value::Value) -> String {
    fn plain(value: &AnyValue) -> Value {
        match value.value.as_ref() {
            None => Value::Null,
            Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(plain).collect()),
            Some(any_value::Value::KvlistValue(m)) => Value::Object(m.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, plain))).collect()),
            Some(_) => typed(value).map_or(Value::Null, |kv| kv.value),
        }
    }
    plain(&AnyValue { value: Some(value.clone()) }).to_string()
}

pub fn span_kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

pub fn is_error(span: &Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32) || span.events.iter().any(|e| e.name == "exception")
}

/// The body of `span`, whose resource is described by `process`.
pub fn span_body(span: &Span, trace_id_hex: &str, process: &Process) -> SpanBody {
    let mut tags = key_values(&span.attributes);
    let kind = span_kind_name(span.kind);
    if !kind.is_empty() {
        tags.push(KeyValue::string("span.kind", kind));
    }
    if let Some(status) = &span.status {
        if status.code == StatusCode::Error as i32 {
            tags.push(KeyValue { key: "error".into(), value_type: "bool".into(), value: Value::Bool(true) });
            tags.push(KeyValue::string("otel.status_code", "ERROR"));
            if !status.message.is_empty() {
                tags.push(KeyValue::string("otel.status_description", &status.message));
            }
        } else if status.code == StatusCode::Ok as i32 {
            tags.push(KeyValue::string("otel.status_code", "OK"));
        }
    }
    let logs = span
        .events
        .iter()
        .map(|event| {
            let mut fields = vec![KeyValue::string("event", &event.name)];
            fields.extend(key_values(&event.attributes));
            Log { timestamp: event.time_unix_nano / 1_000, fields }
        })
        .collect();
    let mut references = Vec::new();
    if is_valid_span_id(&span.parent_span_id) {
        references.push(Reference { ref_type: "CHILD_OF".into(), trace_id: trace_id_hex.to_string(), span_id: hex::encode(&span.parent_span_id) });
    }
    for link in &span.links {
        if link.trace_id.len() == 16 && is_valid_span_id(&link.span_id) {
            references.push(Reference { ref_type: "FOLLOWS_FROM".into(), trace_id: hex::encode(&link.trace_id), span_id: hex::encode(&link.span_id) });
        }
    }
    let mut warnings = Vec::new();
    if span.end_time_unix_nano < span.start_time_unix_nano {
        warnings.push("span ends before it starts; its duration is shown as 0".to_string());
    }
    SpanBody { references, tags, logs, process: process.clone(), warnings }
}

pub fn is_valid_span_id(id: &[u8]) -> bool {
    id.len() == 8 && id.iter().any(|&b| b != 0)
}

/// The process of a resource: its `service.name` and its other attributes as tags.
pub fn process(attributes: &[OtlpKeyValue]) -> Process {
    let service_name = attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| tracepipe_schemas::trace_view::UNKNOWN_SERVICE.to_string());
    let tags = key_values(&attributes.iter().filter(|kv| kv.key != "service.name").cloned().collect::<Vec<_>>());
    Process { service_name, tags }
}

/// The search column: every tag and process tag as `key=value` on its own line, with a newline
/// before the first and after the last, so `LIKE '%\nkey=value\n%'` matches one tag exactly.
pub fn search_text(body: &SpanBody) -> String {
    let mut text = String::from("\n");
    for tag in body.tags.iter().chain(&body.process.tags) {
        text.push_str(&tag.key.replace(['\n', '='], " "));
        text.push('=');
        text.push_str(&tag.value_text().replace('\n', " "));
        text.push('\n');
    }
    text
}

/// A `LIKE` pattern matching `key=value` in [`search_text`], with `\` as the escape character.
pub fn search_pattern(key: &str, value: &str) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_").replace('\n', " ");
    format!("%\n{}={}\n%", escape(&key.replace('=', " ")), escape(value))
}
