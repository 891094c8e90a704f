//! The query server: one port (16686, Jaeger's) for the Jaeger-compatible API, tracepipe's own
//! API and the web UI, over the store the sink writes.
//!
//! Bound to loopback unless configured otherwise. With a bearer token configured, every /api
//! request must carry `Authorization: Bearer TOKEN`; the UI's static files need none (they hold no
//! data) and the UI asks for the token when the API answers 401.

pub mod api;
pub mod config;
pub mod critical_path;
mod health;
pub mod params;
pub mod reader;
pub mod sampling;
mod trace_compare;
mod trends;
mod ui;

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracepipe_store::Store;

/// How the query server answers, beside its store.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// When set, every /api request must carry `Authorization: Bearer TOKEN`.
    pub bearer_token: Option<String>,
    pub adaptive_sampling: sampling::AdaptiveSampling,
    /// The SLOs of topology.yaml, whose status `/api/v1/slos` and `/api/v1/services` report.
    pub slos: Arc<[tracepipe_analytics::slo::SloSpec]>,
    /// The business transactions and funnels of topology.yaml, for `/api/v1/transactions`.
    pub transactions: Arc<[tracepipe_analytics::transactions::TransactionSpec]>,
    pub funnels: Arc<[tracepipe_analytics::transactions::FunnelSpec]>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig { bearer_token: None, adaptive_sampling: Default::default(), slos: Arc::from(Vec::new()), transactions: Arc::from(Vec::new()), funnels: Arc::from(Vec::new()) }
    }
}

/// The whole HTTP surface over `store`.
pub fn router(store: Store, config: QueryConfig) -> Router {
    let state = api::ApiState { store: Arc::new(Mutex::new(store)), sampling: Arc::new(config.adaptive_sampling), slos: config.slos, transactions: config.transactions, funnels: config.funnels };
    let bearer_token = config.bearer_token;
    let api = Router::new()
        .route("/api/services", get(api::services))
        .route("/api/services/{service}/operations", get(api::service_operations))
        .route("/api/operations", get(api::operations))
        .route("/api/traces", get(api::find_traces))
        .route("/api/traces/{id}", get(api::trace))
        .route("/api/dependencies", get(api::dependencies))
        .route("/api/sampling", get(api::sampling_strategy))
        .route("/api/v1/traces/{id}", get(api::trace_detail))
        .route("/api/v1/edges", get(api::edges))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/bottlenecks", get(api::bottlenecks))
        .route("/api/v1/errors", get(api::errors))
        .route("/api/v1/operations", get(api::operation_stats))
        .route("/api/v1/slos", get(health::slos))
        .route("/api/v1/slos/{name}", get(health::slo))
        .route("/api/v1/services", get(health::services))
        .route("/api/v1/transactions", get(health::transactions))
        .route("/api/v1/series", get(trends::series))
        .route("/api/v1/cohorts", get(trends::cohorts))
        .route("/api/v1/compare", get(trends::compare))
        .route("/api/v1/canaries", get(trends::canaries))
        .route("/api/v1/changepoints", get(trends::changepoints))
        .route("/api/v1/forecast", get(trends::forecast))
        .route("/api/v1/compare/traces", get(trace_compare::compare_traces))
        .route("/api/{*rest}", get(api::not_found))
        .with_state(state)
        .layer(middleware::from_fn_with_state(Arc::new(bearer_token), require_token));
    api.merge(ui::router())
}

async fn require_token(State(token): State<Arc<Option<String>>>, request: Request, next: Next) -> Response {
    if let Some(token) = token.as_deref() {
        let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token) {
            let mut response = api::ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer TOKEN)").into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Serves on `listener` until `shutdown` is cancelled.
pub fn serve_on(listener: tokio::net::TcpListener, store: Store, config: QueryConfig, shutdown: CancellationToken) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let app = router(store, config);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "query server and ui listening");
    }
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await })
}
