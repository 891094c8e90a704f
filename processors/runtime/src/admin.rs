//! The admin HTTP server every tracepipe process runs: `/metrics` (Prometheus text format),
//! `/healthz` (no component has failed for good) and `/ready` (every component is doing its
//! work), each listing its components' states.

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

/// What a component (a pipeline, a server) says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    Starting,
    Ready,
    /// Running, but not doing its work now (broker unreachable, paused by backpressure, input
    /// waiting and no progress), and why.
    NotReady(String),
    /// Stopped for good (its thread ended with an error or panicked): the process should be
    /// restarted.
    Failed(String),
}

/// The state of the process's components, by name: `/ready` is every component ready,
/// `/healthz` is none failed.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, ComponentState>>>,
}

impl Health {
    pub fn register(&self, component: &str) {
        self.set(component, ComponentState::Starting);
    }

    /// Runs one round of a periodic evaluator's blocking work (`round`, given what it owns, e.g.
    /// its store connection) on tokio's blocking threads, and hands back what it owns with the
    /// round's result; `None` if the round panicked, which is logged and reported as
    /// `component` failed (`what` names the work), so the evaluator stops and an orchestrator
    /// restarts it.
    pub async fn blocking_round<R, T>(&self, component: &str, what: &str, owned: R, round: impl FnOnce(&mut R) -> T + Send + 'static) -> Option<(R, T)>
    where
        R: Send + 'static,
        T: Send + 'static,
    {
        let mut owned = owned;
        match tokio::task::spawn_blocking(move || {
            let result = round(&mut owned);
            (owned, result)
        })
        .await
        {
            Ok(done) => Some(done),
            Err(error) => {
                tracing::error!(%error, "{what} panicked");
                self.set(component, ComponentState::Failed(format!("{what} panicked: {error}")));
                None
            }
        }
    }

    pub fn set(&self, component: &str, state: ComponentState) {
        let mut components = self.components.lock().unwrap();
        // A failed component stays failed: only a restart clears it.
        if !matches!(components.get(component), Some(ComponentState::Failed(_))) {
            components.insert(component.to_string(), state);
        }
    }

    pub fn set_ready(&self, component: &str, ready: bool) {
        self.set(component, if ready { ComponentState::Ready } else { ComponentState::Starting });
    }

    pub fn state(&self, component: &str) -> Option<ComponentState> {
        self.components.lock().unwrap().get(component).cloned()
    }

    pub fn is_ready(&self) -> bool {
        let components = self.components.lock().unwrap();
        !components.is_empty() && components.values().all(|state| *state == ComponentState::Ready)
    }

    pub fn is_alive(&self) -> bool {
        !self.components.lock().unwrap().values().any(|state| matches!(state, ComponentState::Failed(_)))
    }

    fn report(&self) -> String {
        let components = self.components.lock().unwrap();
        components
            .iter()
            .map(|(name, state)| match state {
                ComponentState::Starting => format!("{name}: starting\n"),
                ComponentState::Ready => format!("{name}: ready\n"),
                ComponentState::NotReady(why) => format!("{name}: not ready: {why}\n"),
                ComponentState::Failed(why) => format!("{name}: failed: {why}\n"),
            })
            .collect()
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
            .route("/healthz", get(healthz))
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

async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    let status = if health.is_alive() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, health.report())
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    let status = if health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, health.report())
}
