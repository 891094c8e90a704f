//! A `reqwest-middleware` middleware for HTTP clients: one client span per request, with the W3C
//! trace context injected into the request's headers so the server continues the trace.

use opentelemetry::trace::Status;
use reqwest_middleware::{Middleware, Next};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::inject_http;

/// Add with `reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(TracingMiddleware)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

#[async_trait::async_trait]
impl Middleware for TracingMiddleware {
    async fn handle(&self, mut request: reqwest::Request, extensions: &mut http::Extensions, next: Next<'_>) -> reqwest_middleware::Result<reqwest::Response> {
        let method = request.method().as_str().to_string();
        let url = request.url();
        let span = tracing::info_span!(
            "http.client",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().unwrap_or_default(),
            url.full = %url,
            http.response.status_code = Empty,
        );
        inject_http(&span.context(), request.headers_mut());
        let result = next.run(request, extensions).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
                if response.status().is_client_error() || response.status().is_server_error() {
                    span.set_status(Status::error(response.status().to_string()));
                }
            }
            Err(error) => span.set_status(Status::error(error.to_string())),
        }
        result
    }
}
