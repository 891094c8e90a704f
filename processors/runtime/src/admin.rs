//! The admin HTTP server every tracepipe process runs: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive) and `/ready` (every component has started).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Readiness of the process's components (pipelines, servers), by name.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Health {
    pub fn register(&self, component: &str) {
        self.components.lock().unwrap().insert(component.to_string(), false);
    }

    pub fn set_ready(&self, component: &str, ready: bool) {
        self.components.lock().unwrap().insert(component.to_string(), ready);
    }

    pub fn is_ready(&self) -> bool {
        let components = self.components.lock().unwrap();
        !components.is_empty() && components.values().all(|&ready| ready)
    }

    fn report(&self) -> String {
        let components = self.components.lock().unwrap();
        components.iter().map(|(name, ready)| format!("{name}: {}\n", if *ready { "ready" } else { "starting" })).collect()
    }
}

pub struct AdminServer {
    pub local_addr: SocketAddr,
}

impl AdminServer {
    /// Binds `addr` and serves until `shutdown` is cancelled.
    pub async fn start(addr: SocketAddr, health: Health, shutdown: CancellationToken) -> std::io::Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .with_state(health);
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(%error, "admin server stopped");
            }
        });
        Ok(AdminServer { local_addr })
    }
}

async fn metrics() -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, encoder.format_type().to_string())], body),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain".into())], error.to_string().into_bytes()),
    }
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    let status = if health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, health.report())
}
