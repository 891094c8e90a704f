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
use opentelemetry::InstrumentationScope;

/// The scope the library's spans are reported under.
pub(crate) const SCOPE: &str = "tracepipe-instrument";

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// The global provider's tracer, taken at first use: [`crate::init`] installs its provider before
/// then, and a service that installs its own provider gets that one.
pub(crate) fn tracer() -> &'static BoxedTracer {
    TRACER.get_or_init(|| {
        let scope = InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
        opentelemetry::global::tracer_with_scope(scope)
    })
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
