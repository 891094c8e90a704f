//! The tracer the library's own spans (HTTP server and client, Kafka producer and consumer) are
//! started from: straight from the OpenTelemetry API, not through `tracing`. Through
//! `tracing-opentelemetry` each would cost about three times as much (a registry entry, a span
//! builder, every field formatted into an attribute, and the span's context started and
//! re-attached on every poll; `benches/spans.rs` measures both), and a request makes several of
//! them; the application's own `tracing` spans still become OpenTelemetry spans,
//! children of these, because the layer parents a span without a `tracing` parent on the current
//! OpenTelemetry context, which these spans set while their work runs.

use std::borrow::Cow;
use std::sync::OnceLock;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanKind, SpanRef, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

/// The scope the library's spans are reported under.
pub(crate) const SCOPE: &str = "tracepipe-instrument";

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// The global provider's tracer, taken at first use: [`crate::init`] installs its provider before
/// then, and a service that installs its own provider gets that one.
fn tracer() -> &'static BoxedTracer {
    TRACER.get_or_init(|| {
        let scope = InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
        opentelemetry::global::tracer_with_scope(scope)
    })
}

/// Starts a span of `kind` from the library's tracer as a child of `parent`, and returns `parent`
/// with it as the current span: the context its work runs in.
pub(crate) fn start_span(name: impl Into<Cow<'static, str>>, kind: SpanKind, attributes: Vec<KeyValue>, links: Vec<Link>, parent: Context) -> Context {
    let tracer = tracer();
    let span = tracer.span_builder(name).with_kind(kind).with_attributes(attributes).with_links(links).start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// A standard HTTP method's name without allocating; others are copied.
pub(crate) fn method_name(method: &http::Method) -> Cow<'static, str> {
    let name: &'static str = match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_string()),
    };
    Cow::Borrowed(name)
}

/// Records an HTTP response's status on its span; `failed` (5xx for a server, 4xx or 5xx for a
/// client, as the conventions have it) also marks the span an error of that status.
pub(crate) fn record_response_status(span: &SpanRef<'_>, status: http::StatusCode, failed: bool) {
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    if failed {
        span.set_attribute(KeyValue::new("error.type", status.as_str().to_string()));
        span.set_status(Status::error(status.to_string()));
    }
}
