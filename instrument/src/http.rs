//! A tower layer for HTTP servers (axum, hyper, tonic): one server span per request, continuing
//! the caller's W3C trace context, named and attributed per the OpenTelemetry HTTP conventions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use opentelemetry::trace::Status;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::extract_http;

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
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let span = server_span(&request);
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = response.await;
                let span = tracing::Span::current();
                match &result {
                    Ok(response) => {
                        let status = response.status();
                        span.record("http.response.status_code", status.as_u16());
                        // Server spans are errors for 5xx only; a 4xx is the client's mistake.
                        if status.is_server_error() {
                            span.set_status(Status::error(status.to_string()));
                        }
                    }
                    Err(_) => span.set_status(Status::error("the service failed")),
                }
                result
            }
            .instrument(span),
        )
    }
}

fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.unwrap_or_default(),
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
    );
    let parent = extract_http(request.headers());
    let _ = span.set_parent(parent);
    span
}
