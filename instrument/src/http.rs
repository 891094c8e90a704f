//! A tower layer for HTTP servers (axum, hyper, tonic): one server span per request, continuing
//! the caller's W3C trace context, named and attributed per the OpenTelemetry HTTP conventions.
//!
//! The span is current (`opentelemetry::Context::current()`) while the request's future runs, so
//! the handler's own `tracing` spans are its children, and the handler can add to it with
//! `opentelemetry::trace::get_active_span(|span| span.set_attribute(...))`.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::MatchedPath;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::KeyValue;

use crate::propagation::extract_http;
use crate::tracer::{joined, parent_unsampled, record_method, record_response_status, start_span};

/// Wraps a service so each request runs inside a server span.
///
/// With axum, add it with `Router::layer` so the matched route (`/items/{id}`) names the span;
/// elsewhere the span is named by the method alone, as the conventions ask when no route is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower_layer::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for TraceService<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let context = server_span(&request);
        let inner = {
            let _attached = context.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture { inner, context }
    }
}

pin_project_lite::pin_project! {
    /// A request's response, polled with its server span as the current context; the span ends
    /// with the response's status when it is ready. A type of its own rather than a boxed
    /// `async` block: no allocation per request, and the context is not cloned for the end.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        context: opentelemetry::Context,
    }
}

impl<F, ResponseBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this.context.clone().attach();
            ready!(this.inner.poll(cx))
        };
        let span = this.context.span();
        match &result {
            // Server spans are errors for 5xx only; a 4xx is the client's mistake.
            Ok(response) => {
                let status = response.status();
                record_response_status(&span, status, status.is_server_error());
            }
            Err(_) => span.set_status(Status::error("the service failed")),
        }
        span.end();
        Poll::Ready(result)
    }
}

/// A started server span for `request`, as the current span of a context continuing the
/// caller's.
fn server_span<B>(request: &http::Request<B>) -> opentelemetry::Context {
    let parent = extract_http(request.headers());
    if parent_unsampled(&parent) {
        return parent;
    }
    let mut attributes = Vec::with_capacity(5);
    let method = record_method(request.method(), &mut attributes);
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let name = match route {
        Some(route) => joined(&[method, route]),
        None => Cow::Borrowed(method),
    };
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", joined(&[route])));
    }
    attributes.push(KeyValue::new("url.path", request.uri().path().to_string()));
    if let Some(scheme) = request.uri().scheme_str() {
        attributes.push(KeyValue::new("url.scheme", scheme.to_string()));
    }
    start_span(name, SpanKind::Server, attributes, Vec::new(), parent)
}
