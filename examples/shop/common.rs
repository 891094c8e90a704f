//! What the two example services share: settings from the environment and telemetry setup.

#![allow(dead_code)] // each service uses its own part of what the two share

/// How a service is traced, from `INSTRUMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrumentation {
    /// `off`: no tracing layers and no subscriber at all (the bench's baseline).
    Off,
    /// `on` (the default): `tracepipe-instrument`, spans exported to Kafka.
    Tracepipe,
    /// `otel`: the standard OpenTelemetry Rust stack a service would use instead: `tracing`
    /// spans through `tracing-opentelemetry`, the SDK's batch span processor and
    /// `opentelemetry-otlp`'s default exporter (OTLP/HTTP protobuf to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. tracepipe's gateway), W3C context over HTTP and Kafka
    /// through the global propagator; sampled by the SDK from `OTEL_TRACES_SAMPLER`.
    Standard,
}

/// What a request costs the service besides its telemetry, from `SHOP_PROFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `thin` (the default): the orders service publishes its event and answers the order id,
    /// tens of microseconds of CPU per request: the worst case for instrumentation's share.
    Thin,
    /// `reference`: the work a typical service does per request: queries over a catalog of a few
    /// thousand rows in SQLite, pricing logic, and JSON responses of a few kilobytes
    /// (examples/shop/work.rs).
    Reference,
}

/// Settings from the environment, so tests and the overhead benches run the same binaries.
pub struct Settings {
    pub port: u16,
    pub brokers: String,
    pub instrumentation: Instrumentation,
    pub profile: Profile,
}

impl Settings {
    pub fn from_env(default_port: u16) -> Settings {
        let instrumentation = match std::env::var("INSTRUMENT").as_deref() {
            Ok("off") => Instrumentation::Off,
            Ok("otel") => Instrumentation::Standard,
            Ok("on") | Err(_) => Instrumentation::Tracepipe,
            Ok(other) => panic!("INSTRUMENT={other}: on, off or otel"),
        };
        let profile = match std::env::var("SHOP_PROFILE").as_deref() {
            Ok("thin") | Err(_) => Profile::Thin,
            Ok("reference") => Profile::Reference,
            Ok(other) => panic!("SHOP_PROFILE={other}: thin or reference"),
        };
        Settings {
            port: std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(default_port),
            brokers: std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            instrumentation,
            profile,
        }
    }

    pub fn tracepipe(&self) -> bool {
        self.instrumentation == Instrumentation::Tracepipe
    }
}

/// `app` with a server span per request, as `instrumentation` makes them.
pub fn traced(app: axum::Router, instrumentation: Instrumentation) -> axum::Router {
    match instrumentation {
        Instrumentation::Tracepipe => app.layer(tracepipe_instrument::http::TraceLayer),
        Instrumentation::Standard => app.route_layer(axum::middleware::from_fn(standard::server)),
        Instrumentation::Off => app,
    }
}

/// Keeps a service's telemetry running; dropped as the service stops, it flushes.
pub enum Telemetry {
    Tracepipe(tracepipe_instrument::Telemetry),
    Standard(opentelemetry_sdk::trace::SdkTracerProvider),
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Telemetry::Standard(provider) = self {
            if let Err(error) = provider.shutdown() {
                eprintln!("telemetry shutdown: {error}");
            }
        }
    }
}

/// Telemetry for an instrumented service. `tracepipe-instrument`: spans to `otlp_spans` on the
/// same Kafka, a record per export batch unless `TRACEPIPE_SPANS_RECORDS=per-trace`, sampled by
/// `OTEL_TRACES_SAMPLER`/`_ARG` (default: every trace). The standard stack: see
/// [`Instrumentation::Standard`].
pub fn telemetry(service: &str, settings: &Settings) -> Option<Telemetry> {
    match settings.instrumentation {
        Instrumentation::Off => None,
        Instrumentation::Tracepipe => {
            let mut config = tracepipe_instrument::Config::from_env(service).filter("warn");
            if config.kafka.is_none() {
                config = config.kafka(settings.brokers.clone(), "otlp_spans");
                if let Ok(records) = std::env::var("TRACEPIPE_SPANS_RECORDS") {
                    config = config.span_records(records.parse().expect("TRACEPIPE_SPANS_RECORDS"));
                }
            }
            Some(Telemetry::Tracepipe(tracepipe_instrument::init(config).expect("telemetry")))
        }
        Instrumentation::Standard => Some(Telemetry::Standard(standard::init(service))),
    }
}

/// The standard stack, as its crates' documentation sets it up.
pub mod standard {
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use rdkafka::message::{Headers, OwnedHeaders};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    pub fn init(service: &str) -> SdkTracerProvider {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().expect("OTLP exporter");
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(Resource::builder().with_service_name(service.to_string()).build()).build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        let logs = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        use tracing_subscriber::Layer as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(logs))
            // The attributes tracepipe-instrument records, no more: the layer's source locations,
            // thread names and busy/idle times are off there too.
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(service.to_string()))
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .init();
        provider
    }

    /// A server span for each request, continuing the caller's context (what
    /// `tower-http`'s trace layer with an OpenTelemetry parent does).
    pub async fn server(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
        let method = request.method().clone();
        let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            url.path = request.uri().path(),
            url.scheme = tracing::field::Empty,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(scheme) = request.uri().scheme_str() {
            span.record("url.scheme", scheme);
        }
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers())));
        let _ = span.set_parent(parent);
        let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    }

    /// The headers that carry the current span's context to an HTTP server.
    pub fn inject_http(span: &tracing::Span, headers: &mut http::HeaderMap) {
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&span.context(), &mut opentelemetry_http::HeaderInjector(headers)));
    }

    struct KafkaInjector(Option<OwnedHeaders>);

    impl Injector for KafkaInjector {
        fn set(&mut self, key: &str, value: String) {
            let headers = self.0.take().unwrap_or_default();
            self.0 = Some(headers.insert(rdkafka::message::Header { key, value: Some(&value) }));
        }
    }

    pub fn inject_kafka(span: &tracing::Span, headers: OwnedHeaders) -> OwnedHeaders {
        let mut injector = KafkaInjector(Some(headers));
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&span.context(), &mut injector));
        injector.0.unwrap_or_default()
    }

    struct KafkaExtractor<'a>(&'a rdkafka::message::BorrowedHeaders);

    impl Extractor for KafkaExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|h| h.key).collect()
        }
    }

    /// The producer's context a record carries.
    pub fn extract_kafka(headers: Option<&rdkafka::message::BorrowedHeaders>) -> opentelemetry::Context {
        match headers {
            Some(headers) => opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&KafkaExtractor(headers))),
            None => opentelemetry::Context::new(),
        }
    }
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
