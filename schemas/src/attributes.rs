//! Building and reading OTLP attributes.

use crate::otlp_common::{any_value::Value, AnyValue, KeyValue};

pub const SERVICE_NAME: &str = "service.name";

pub fn kv(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

pub fn string(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn int(key: impl Into<String>, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

pub fn boolean(key: impl Into<String>, value: bool) -> KeyValue {
    kv(key, Value::BoolValue(value))
}

pub fn double(key: impl Into<String>, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

pub fn find_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A value rendered as text, the way Jaeger and Zipkin tags carry it.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => hex::encode(b),
        Value::StringValueStrindex(i) => i.to_string(),
        Value::ArrayValue(_) | Value::KvlistValue(_) => {
            serde_json::to_string(&AnyValue { value: Some(value.clone()) }).unwrap_or_default()
        }
    }
}

/// Puts `service.name` first among resource attributes, as tracepipe's span model promises.
pub fn service_name_first(attributes: &mut [KeyValue]) {
    if let Some(pos) = attributes.iter().position(|kv| kv.key == SERVICE_NAME) {
        attributes[..=pos].rotate_right(1);
    }
}
