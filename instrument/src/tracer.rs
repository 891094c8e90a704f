//! The tracer the library's own spans (HTTP server and client, Kafka producer and consumer) are
//! started from: straight from the OpenTelemetry API, not through `tracing`. Through
//! `tracing-opentelemetry` each would cost about three times as much (a registry entry, a span
//! builder, every field formatted into an attribute, and the span's context started and
//! re-attached on every poll; `benches/spans.rs` measures both), and a request makes several of
//! them; the application's own `tracing` spans still become OpenTelemetry spans,
//! children of these, because the layer parents a span without a `tracing` parent on the current
//! OpenTelemetry context, which these spans set while their work runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, SpanRef, Status, TraceContextExt as _, Tracer, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The scope the library's spans are reported under.
pub(crate) const SCOPE: &str = "tracepipe-instrument";

/// Where the library's spans are started from.
enum LibraryTracer {
    /// The provider [`crate::init`] built, called directly: one boxing and one dynamic call less
    /// per span operation than through the global provider's boxed tracer.
    Sdk(SdkTracer),
    /// Whatever provider the service made global, for services that set up their own.
    Global(BoxedTracer),
}

static TRACER: OnceLock<LibraryTracer> = OnceLock::new();

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build()
}

/// Starts the library's spans from `provider`, the one [`crate::init`] made global, unless spans
/// were already started from the global provider.
pub(crate) fn use_provider(provider: &SdkTracerProvider) {
    let _ = TRACER.set(LibraryTracer::Sdk(provider.tracer_with_scope(scope())));
}

/// The library's tracer, taken at first use: [`crate::init`]'s provider, or else the global
/// provider's, so a service that installs its own provider gets that one.
fn tracer() -> &'static LibraryTracer {
    TRACER.get_or_init(|| LibraryTracer::Global(opentelemetry::global::tracer_with_scope(scope())))
}

/// Whether a span started under `parent` is known to record nothing: [`crate::init`]'s provider
/// samples by parent (every [`crate::Sampling`] is parent-based), so under a valid parent that
/// was not sampled it would make a span only to drop it. The library's spans then take
/// `parent`'s context as their own (only a parent that records nothing, so ending or annotating
/// it changes nothing), as the OpenTelemetry API does when no SDK is installed: an
/// unsampled request costs no span id, attributes or SDK span at each hop, and its context still
/// crosses every boundary (downstream sees the unsampled parent's span id). With a provider the
/// service installed itself, whose sampler may decide otherwise, the span is always started.
pub(crate) fn parent_unsampled(parent: &Context) -> bool {
    if !matches!(TRACER.get(), Some(LibraryTracer::Sdk(_))) {
        return false;
    }
    let span = parent.span();
    let context = span.span_context();
    // A parent that records is never handed out as a child's context: the child's code ends and
    // annotates the span it is given.
    context.is_valid() && !context.is_sampled() && !span.is_recording()
}

/// Starts a span of `kind` from the library's tracer as a child of `parent`, and returns `parent`
/// with it as the current span: the context its work runs in.
pub(crate) fn start_span(name: impl Into<Cow<'static, str>>, kind: SpanKind, attributes: Vec<KeyValue>, links: Vec<Link>, parent: Context) -> Context {
    fn start<T: Tracer>(tracer: &T, builder: SpanBuilder, parent: Context) -> Context
    where
        T::Span: Send + Sync + 'static,
    {
        let span = builder.start_with_context(tracer, &parent);
        parent.with_span(span)
    }
    let builder = SpanBuilder::from_name(name).with_kind(kind).with_attributes(attributes).with_links(links);
    match tracer() {
        LibraryTracer::Sdk(tracer) => start(tracer, builder, parent),
        LibraryTracer::Global(tracer) => start(tracer, builder, parent),
    }
}

/// Adds the request method's attributes, as the HTTP conventions have them, and returns what
/// span names start with: a method the conventions know by its name; any other as
/// `http.request.method = _OTHER` with the request's own in `http.request.method_original`, and
/// `HTTP` in the span name, so a client cannot mint span names (or interned strings) at will.
pub(crate) fn record_method(method: &http::Method, attributes: &mut Vec<KeyValue>) -> &'static str {
    let known = match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => {
            attributes.push(KeyValue::new("http.request.method", "_OTHER"));
            attributes.push(KeyValue::new("http.request.method_original", method.as_str().to_string()));
            return "HTTP";
        }
    };
    attributes.push(KeyValue::new("http.request.method", known));
    known
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

/// How many distinct names [`joined`] keeps, and how long each may be; past either, names are
/// built for each span.
const MAX_INTERNED: usize = 4096;
const MAX_INTERNED_LEN: usize = 256;

/// `parts` joined by spaces, as a `'static` string made once per distinct value: routes, topics
/// and the span names made of them are few per service and repeat on every request, so each
/// span borrows them instead of allocating its own copy. Looked up by a hash of the parts, with
/// no string built on a hit; the entry found is compared in full, so a collision only ever costs
/// a copy.
pub(crate) fn joined(parts: &[&str]) -> Cow<'static, str> {
    static INTERNED: OnceLock<RwLock<HashMap<u64, &'static str>>> = OnceLock::new();
    // Set once the table is full, so names it will never hold do not queue on its write lock.
    static FULL: AtomicBool = AtomicBool::new(false);
    let length = parts.iter().map(|part| part.len() + 1).sum::<usize>();
    if length > MAX_INTERNED_LEN {
        return Cow::Owned(parts.join(" "));
    }
    let interned = INTERNED.get_or_init(Default::default);
    // FNV-1a, with a separator between parts: the strings are short and a collision costs a copy.
    let hash = parts.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, part| {
        part.bytes().chain([b' ']).fold(hash, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
    });
    let is_joined = |candidate: &str| {
        let mut rest = candidate;
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                let Some(after) = rest.strip_prefix(' ') else { return false };
                rest = after;
            }
            let Some(after) = rest.strip_prefix(part) else { return false };
            rest = after;
        }
        rest.is_empty()
    };
    let found = interned.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&hash).copied();
    let name = match found {
        Some(name) => Some(name),
        None if FULL.load(Ordering::Relaxed) => None,
        None => {
            let mut interned = interned.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            if interned.len() >= MAX_INTERNED {
                FULL.store(true, Ordering::Relaxed);
                None
            } else {
                Some(*interned.entry(hash).or_insert_with(|| Box::leak(parts.join(" ").into_boxed_str())))
            }
        }
    };
    match name {
        Some(name) if is_joined(name) => Cow::Borrowed(name),
        _ => Cow::Owned(parts.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_names_are_made_once() {
        let first = joined(&["GET", "/items/{id}"]);
        assert_eq!(first, "GET /items/{id}");
        assert!(matches!(first, Cow::Borrowed(_)));
        let again = joined(&["GET", "/items/{id}"]);
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert_eq!(joined(&["GET /items/{id}"]), "GET /items/{id}");
        assert_eq!(joined(&["send", "orders"]), "send orders");
        assert_eq!(joined(&["orders"]), "orders");
        assert_eq!(joined(&[""]), "");
        let long = "x".repeat(MAX_INTERNED_LEN);
        assert!(matches!(joined(&["GET", &long]), Cow::Owned(_)), "long names are not kept");
    }

    #[test]
    fn unknown_methods_are_recorded_as_other() {
        let mut attributes = Vec::new();
        assert_eq!(record_method(&http::Method::PATCH, &mut attributes), "PATCH");
        assert_eq!(attributes, vec![KeyValue::new("http.request.method", "PATCH")]);
        let mut attributes = Vec::new();
        let method = http::Method::from_bytes(b"PURGE-EVERYTHING-1234").unwrap();
        assert_eq!(record_method(&method, &mut attributes), "HTTP");
        assert_eq!(attributes, vec![KeyValue::new("http.request.method", "_OTHER"), KeyValue::new("http.request.method_original", "PURGE-EVERYTHING-1234")]);
    }
}
