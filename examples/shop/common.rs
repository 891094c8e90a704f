//! What the two example services share: settings from the environment and telemetry setup.


/// Settings from the environment, so tests and the overhead bench run the same binaries.
pub struct Settings {
    pub port: u16,
    pub brokers: String,
    /// `INSTRUMENT=off` runs the service with no tracing layers at all (the bench's baseline).
    pub instrumented: bool,
}

impl Settings {
    pub fn from_env(default_port: u16) -> Settings {
        Settings {
            port: std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(default_port),
            brokers: std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            instrumented: std::env::var("INSTRUMENT").map(|v| v != "off").unwrap_or(true),
        }
    }
}

/// Telemetry for an instrumented service: spans to `otlp_spans` on the same Kafka, sampled by
/// `OTEL_TRACES_SAMPLER_ARG` (default: every trace).
pub fn telemetry(service: &str, settings: &Settings) -> Option<tracepipe_instrument::Telemetry> {
    if !settings.instrumented {
        return None;
    }
    let mut config = tracepipe_instrument::Config::from_env(service).filter("warn");
    if config.kafka.is_none() {
        config = config.kafka(settings.brokers.clone(), "otlp_spans");
        // What `Config::from_env` reads beside `TRACEPIPE_KAFKA_BROKERS`: `per-batch` for one
        // unkeyed record per export batch instead of one per trace.
        if let Ok(records) = std::env::var("TRACEPIPE_SPANS_RECORDS") {
            config = config.span_records(records.parse().expect("TRACEPIPE_SPANS_RECORDS"));
        }
    }
    Some(tracepipe_instrument::init(config).expect("telemetry"))
}

/// Resolves on SIGTERM or Ctrl-C, so the telemetry guard is dropped and flushes.
pub async fn terminated() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
}

pub const ORDERS_TOPIC: &str = "orders.placed";
