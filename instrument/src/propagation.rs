//! W3C trace context in HTTP and Kafka headers, through the global propagator [`crate::init`]
//! installs (TraceContext: `traceparent` and `tracestate`).

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use rdkafka::message::{Header, Headers, OwnedHeaders};

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes `context` into HTTP headers.
pub fn inject_http(context: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(context, &mut HeaderInjector(headers)));
}

/// The context HTTP headers carry (an empty context when they carry none).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Adds `context` to Kafka record headers.
pub fn inject_kafka(context: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    let mut fields = Fields(Vec::with_capacity(2));
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(context, &mut fields));
    fields.0.into_iter().fold(headers, |headers, (key, value)| headers.insert(Header { key: &key, value: Some(value.as_bytes()) }))
}

/// The context a Kafka record's headers carry.
pub fn extract_kafka<H: Headers>(headers: Option<&H>) -> Context {
    let fields: Vec<(&str, &str)> = headers
        .map(|headers| headers.iter().filter_map(|h| Some((h.key, std::str::from_utf8(h.value?).ok()?))).collect())
        .unwrap_or_default();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&KafkaFields(&fields)))
}

struct KafkaFields<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for KafkaFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct Fields(Vec<(String, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}
