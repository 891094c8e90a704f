//! A `reqwest-middleware` middleware for HTTP clients: one client span per request, a child of
//! the current OpenTelemetry context (the server span, or the `tracing` span the call is made
//! in), with the W3C trace context injected into the request's headers so the server continues
//! the trace.

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::KeyValue;
use reqwest_middleware::{Middleware, Next};

use crate::propagation::inject_http;
use crate::tracer::{parent_unsampled, record_method, record_response_status, start_span};

/// Add with `reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(TracingMiddleware)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

#[async_trait::async_trait]
impl Middleware for TracingMiddleware {
    async fn handle(&self, mut request: reqwest::Request, extensions: &mut http::Extensions, next: Next<'_>) -> reqwest_middleware::Result<reqwest::Response> {
        let parent = opentelemetry::Context::current();
        let context = if parent_unsampled(&parent) { parent } else { client_span(&request, parent) };
        inject_http(&context, request.headers_mut());
        let result = next.run(request, extensions).await;
        let span = context.span();
        match &result {
            Ok(response) => {
                let status = response.status();
                record_response_status(&span, status, status.is_client_error() || status.is_server_error());
            }
            Err(error) => {
                span.set_attribute(KeyValue::new("error.type", if error.is_middleware() { "middleware" } else { "request" }));
                span.set_status(Status::error(error.to_string()));
            }
        }
        span.end();
        result
    }
}

/// A started client span for `request`, a child of `parent`.
fn client_span(request: &reqwest::Request, parent: opentelemetry::Context) -> opentelemetry::Context {
    let url = request.url();
    let mut attributes = Vec::with_capacity(5);
    let method = record_method(request.method(), &mut attributes);
    if let Some(host) = url.host_str() {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(port) = url.port_or_known_default() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    attributes.push(KeyValue::new("url.full", url.to_string()));
    start_span(method, SpanKind::Client, attributes, Vec::new(), parent)
}
