//! OpenTelemetry tracing for Rust services whose spans tracepipe analyzes.
//!
//! One call, [`init`], sets up the OpenTelemetry SDK behind `tracing`: every `tracing` span
//! becomes an OpenTelemetry span (through `tracing-opentelemetry`), spans are exported as OTLP to
//! Kafka, one record per export batch ([`KafkaSpanExporter`], what tracepipe's router reads) and head
//! sampling is parent-based, by ratio or by the per-operation probabilities tracepipe serves
//! ([`sampling`]). W3C trace context crosses every boundary:
//!
//! - HTTP servers: [`http::TraceLayer`], a tower layer for axum and hyper;
//! - HTTP clients: [`client::TracingMiddleware`], a `reqwest-middleware` middleware;
//! - Kafka: [`kafka::send`] (or [`kafka::producer_span`] / [`kafka::inject`]) on the producing
//!   side and [`kafka::consumer_span`] on the consuming side, with the OpenTelemetry messaging
//!   conventions' span kinds and attributes; the consumer span continues the producer's trace
//!   and links to the producer span.
//!
//! The context these carry is W3C trace context (`traceparent`, `tracestate`), read and written
//! by [`propagation`] itself: a propagator the service makes global (B3, baggage) is not used
//! for them. [`init`] still installs the W3C propagator globally, for other libraries.
//!
//! These four kinds of span are made with the OpenTelemetry API directly, at about a third of
//! what a `tracing` span costs through `tracing-opentelemetry` (`benches/spans.rs`), and are the
//! current OpenTelemetry context while their work runs, so the service's own `tracing` spans nest
//! under them. Under [`init`]'s parent-based sampling, a hop whose parent was not sampled makes
//! none of them: the parent's context is passed on unchanged (still unsampled), as the
//! OpenTelemetry API does with no SDK installed, so an unsampled request costs propagation
//! alone.
//!
//! ```no_run
//! let _telemetry = tracepipe_instrument::init(tracepipe_instrument::Config::new("checkout")
//!     .kafka("127.0.0.1:9092", "otlp_spans")
//!     .ratio(0.25))
//!     .expect("telemetry");
//! ```

pub mod client;
pub mod exporter;
pub mod http;
pub mod kafka;
mod otlp;
pub mod propagation;
pub mod sampling;
mod tracer;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub use exporter::{KafkaBatchSpanProcessor, KafkaSpanExporter};
pub use sampling::{RemoteSampling, Sampling};

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Config {
    pub service_name: String,
    pub service_version: Option<String>,
    /// Extra resource attributes, e.g. `deployment.environment.name`.
    pub resource: Vec<(String, String)>,
    /// Where spans go; `None` records them (context still propagates) and exports nothing.
    pub kafka: Option<KafkaExport>,
    pub sampling: Sampling,
    /// `tracing` filter directives for what is logged (`RUST_LOG` wins when set); spans at INFO
    /// and above are traced whatever it says.
    pub filter: String,
    /// Spans buffered before export; past it spans are dropped and counted by the SDK.
    pub max_queue_size: usize,
    pub export_interval: Duration,
    /// Where each span was created (`code.filepath`, `code.namespace`, `code.lineno`) and on which
    /// thread (`thread.id`, `thread.name`): five more attributes on every span.
    pub source_attributes: bool,
    /// How long each span was busy and idle (`busy_ns`, `idle_ns`): two clock reads every time an
    /// async span is polled.
    pub busy_idle_times: bool,
}

/// The exporter's Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaExport {
    pub brokers: String,
    /// `otlp_spans` is what tracepipe's router reads as OTLP protobuf.
    pub topic: String,
    /// Any librdkafka producer property (SASL, TLS, …). `message.timeout.ms` (or its other name
    /// `delivery.timeout.ms`; 10 s unless set) is how long a record waits for Kafka before its
    /// export is reported failed; `0`, librdkafka's "no limit", holds the SDK's export thread,
    /// once [`exporter::MAX_UNANSWERED_EXPORTS`] exports wait, for as long as Kafka is
    /// unreachable, while new spans queue and then drop (the SDK logs that it drops, and how many
    /// at shutdown). `delivery.report.only.error` is always off: an export counts every answer.
    pub producer: Vec<(String, String)>,
    /// A record per export batch (the default) or per trace. Either way a record holds as many
    /// spans as fit in the producer's `message.max.bytes` (1 MB unless set), the rest going in
    /// further records; a single span larger than that is refused and reported as a failed
    /// export, and the other spans are still sent.
    pub records: SpanRecords,
}

impl KafkaExport {
    /// Spans to `topic` on `brokers`, a record per export batch, with the producer's defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaExport {
        KafkaExport { brokers: brokers.into(), topic: topic.into(), producer: Vec::new(), records: SpanRecords::PerBatch }
    }
}

/// How the exporter's spans become Kafka records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpanRecords {
    /// One record per trace in each export batch, keyed by the 16-byte trace id, so every span
    /// of a trace lands in one partition: the OpenTelemetry Collector's kafka exporter with
    /// `partition_traces_by_id`, for other consumers of the topic that want a trace's spans
    /// together. One or two records per trace cost the service's producer and the brokers far
    /// more than a few a second.
    PerTrace,
    /// The default: one unkeyed record per export batch (more where one would pass the producer's
    /// `message.max.bytes`), as the Collector's kafka exporter writes by default: a few records a
    /// second instead of one or two per trace, less work for the service's producer and far
    /// less for the brokers. tracepipe's router groups the spans by trace itself; other
    /// consumers of the topic no longer find a trace's spans in one partition.
    #[default]
    PerBatch,
}

impl std::str::FromStr for SpanRecords {
    type Err = String;

    fn from_str(value: &str) -> Result<SpanRecords, String> {
        match value.trim() {
            "per-trace" => Ok(SpanRecords::PerTrace),
            "per-batch" => Ok(SpanRecords::PerBatch),
            other => Err(format!("{other:?} is not a way to write span records (per-trace or per-batch)")),
        }
    }
}

impl Config {
    pub fn new(service_name: impl Into<String>) -> Config {
        Config {
            service_name: service_name.into(),
            service_version: None,
            resource: Vec::new(),
            kafka: None,
            sampling: Sampling::AlwaysOn,
            filter: "info".into(),
            max_queue_size: 65_536,
            export_interval: Duration::from_millis(500),
            source_attributes: false,
            busy_idle_times: false,
        }
    }

    pub fn kafka(mut self, brokers: impl Into<String>, topic: impl Into<String>) -> Config {
        self.kafka = Some(KafkaExport::new(brokers, topic));
        self
    }

    /// How the exporter writes spans to Kafka; call it after [`Config::kafka`], which starts
    /// from a record per export batch.
    pub fn span_records(mut self, records: SpanRecords) -> Config {
        if let Some(kafka) = &mut self.kafka {
            kafka.records = records;
        }
        self
    }

    /// Parent-based head sampling keeping `ratio` of new traces (by trace id, as every
    /// OpenTelemetry SDK's TraceIdRatioBased does).
    pub fn ratio(mut self, ratio: f64) -> Config {
        self.sampling = Sampling::Ratio(ratio);
        self
    }

    pub fn sampling(mut self, sampling: Sampling) -> Config {
        self.sampling = sampling;
        self
    }

    pub fn version(mut self, version: impl Into<String>) -> Config {
        self.service_version = Some(version.into());
        self
    }

    pub fn filter(mut self, directives: impl Into<String>) -> Config {
        self.filter = directives.into();
        self
    }

    /// The usual OpenTelemetry environment: `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and
    /// `OTEL_TRACES_SAMPLER_ARG` (see [`Sampling::from_otel_env`]; with the Jaeger remote sampler,
    /// `TRACEPIPE_SAMPLING_TOKEN` is the query server's bearer token if it wants one), and
    /// tracepipe's `TRACEPIPE_KAFKA_BROKERS` / `TRACEPIPE_SPANS_TOPIC` for the exporter, any
    /// librdkafka producer property as `TRACEPIPE_KAFKA_` and its name in capitals with `_` for
    /// `.` (`TRACEPIPE_KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `TRACEPIPE_KAFKA_SASL_PASSWORD`: see
    /// [`producer_properties_from_env`]), and
    /// `TRACEPIPE_SPANS_RECORDS` (`per-batch`, the default, or `per-trace`: [`SpanRecords`]; any
    /// other value is reported on stderr and a record per batch written).
    pub fn from_env(default_service: &str) -> Config {
        let mut config = Config::new(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| default_service.to_string()));
        if let Ok(brokers) = std::env::var("TRACEPIPE_KAFKA_BROKERS") {
            config = config.kafka(brokers, std::env::var("TRACEPIPE_SPANS_TOPIC").unwrap_or_else(|_| "otlp_spans".into()));
            if let Some(kafka) = &mut config.kafka {
                kafka.producer.extend(producer_properties_from_env(std::env::vars()));
            }
            if let Ok(records) = std::env::var("TRACEPIPE_SPANS_RECORDS") {
                match records.parse() {
                    Ok(records) => config = config.span_records(records),
                    Err(error) => eprintln!("TRACEPIPE_SPANS_RECORDS: {error}; writing a record per export batch"),
                }
            }
        }
        let argument = std::env::var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_default();
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
        let mut sampling = Sampling::from_otel_env(sampler.as_deref(), &argument).unwrap_or_else(|unknown| {
            eprintln!("OTEL_TRACES_SAMPLER={unknown} is not a sampler this SDK knows; sampling every trace (parentbased_always_on)");
            Sampling::AlwaysOn
        });
        if let Sampling::Remote(remote) = &mut sampling {
            remote.bearer_token = std::env::var("TRACEPIPE_SAMPLING_TOKEN").ok().filter(|t| !t.is_empty());
        }
        config = config.sampling(sampling);
        config
    }
}

/// librdkafka producer properties from `TRACEPIPE_KAFKA_*` environment variables:
/// `TRACEPIPE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512` is `sasl.mechanism`. librdkafka's property
/// names are lowercase words joined by dots, so the mapping is one to one;
/// `TRACEPIPE_KAFKA_BROKERS` is the broker list itself, not a property.
pub fn producer_properties_from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let property = name.strip_prefix("TRACEPIPE_KAFKA_")?;
            (property != "BROKERS" && !property.is_empty()).then(|| (property.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect();
    properties.sort();
    properties
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("Kafka exporter: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("a global tracing subscriber is already set: {0}")]
    Subscriber(String),
    #[error("sampling: {0}")]
    Sampling(String),
}

/// Keeps the SDK running; dropping it exports what is buffered and waits for Kafka's answers,
/// for as long as Kafka may take to answer a record (`message.timeout.ms` and 2 s).
pub struct Telemetry {
    provider: SdkTracerProvider,
    shutdown_timeout: Duration,
}

impl Telemetry {
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// Spans per export: the OpenTelemetry specification's default. Exports run on the SDK's own
/// thread; smaller batches spread their work instead of taking a core for one long burst, which
/// shows in the service's tail latency when it shares that core.
const EXPORT_BATCH_SPANS: usize = 512;

/// Builds the tracer provider alone, for a service that installs its own subscriber. Make it the
/// global provider too (`opentelemetry::global::set_tracer_provider`), before the first request:
/// the HTTP and Kafka spans of [`http`], [`client`] and [`kafka`] are started from the global
/// provider's tracer. Shut it down with `shutdown_with_timeout` given `message.timeout.ms` and
/// 2 s (12 s by default) for every span to get Kafka's answer; the SDK's `shutdown` gives it 5 s.
pub fn tracer_provider(config: &Config) -> Result<SdkTracerProvider, InitError> {
    built_provider(config).map(|(provider, _)| provider)
}

/// The SDK's own shutdown timeout, where there is no exporter to wait for.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// [`tracer_provider`], with how long its shutdown may take.
fn built_provider(config: &Config) -> Result<(SdkTracerProvider, Duration), InitError> {
    let mut attributes = vec![KeyValue::new("service.name", config.service_name.clone()), KeyValue::new("telemetry.sdk.name", "tracepipe-instrument")];
    if let Some(version) = &config.service_version {
        attributes.push(KeyValue::new("service.version", version.clone()));
    }
    attributes.extend(config.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    let resource = Resource::builder_empty().with_attributes(attributes).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource).with_sampler(config.sampling.sampler(&config.service_name).map_err(InitError::Sampling)?);
    let mut shutdown_timeout = SHUTDOWN_TIMEOUT;
    if let Some(kafka) = &config.kafka {
        let exporter = KafkaSpanExporter::new(kafka)?;
        let batch = BatchConfigBuilder::default().with_max_queue_size(config.max_queue_size).with_scheduled_delay(config.export_interval).with_max_export_batch_size(EXPORT_BATCH_SPANS).build();
        let processor = KafkaBatchSpanProcessor::new(exporter, batch);
        shutdown_timeout = shutdown_timeout.max(processor.flush_timeout());
        builder = builder.with_span_processor(processor);
    }
    Ok((builder.build(), shutdown_timeout))
}

/// Sets up tracing for the process: the SDK, W3C propagation, and a global `tracing` subscriber
/// that logs to stderr and turns spans into OpenTelemetry spans.
pub fn init(config: Config) -> Result<Telemetry, InitError> {
    let (provider, shutdown_timeout) = built_provider(&config)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("tracepipe-instrument");
    // Logs and traces are filtered apart: `RUST_LOG` (or `filter`) picks what is logged, and the
    // log layer never sees, nor formats the fields of, spans it would not print; every span at
    // INFO or above becomes an OpenTelemetry span whatever is logged.
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(logs))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(config.source_attributes)
                .with_threads(config.source_attributes)
                .with_tracked_inactivity(config.busy_idle_times)
                // The OpenTelemetry crates' own log events (`opentelemetry_sdk`: dropped spans,
                // failed exports) go to the log, not onto whichever span is current then.
                .with_filter(Targets::new().with_default(LevelFilter::INFO).with_target("opentelemetry", LevelFilter::OFF)),
        )
        .try_init()
        .map_err(|e| InitError::Subscriber(e.to_string()))?;
    tracer::use_provider(&provider);
    Ok(Telemetry { provider, shutdown_timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_records_are_named_per_trace_or_per_batch() {
        assert_eq!("per-trace".parse(), Ok(SpanRecords::PerTrace));
        assert_eq!(" per-batch ".parse(), Ok(SpanRecords::PerBatch));
        assert_eq!("batch".parse::<SpanRecords>().unwrap_err(), "\"batch\" is not a way to write span records (per-trace or per-batch)");
        let config = Config::new("checkout").span_records(SpanRecords::PerTrace);
        assert!(config.kafka.is_none(), "no exporter, nothing to set");
        let config = Config::new("checkout").kafka("kafka:9092", "otlp_spans");
        assert_eq!(config.kafka.as_ref().unwrap().records, SpanRecords::PerBatch, "a record per export batch unless asked");
        assert_eq!(config.span_records(SpanRecords::PerTrace).kafka.unwrap().records, SpanRecords::PerTrace);
    }

    #[test]
    fn producer_properties_come_from_tracepipe_kafka_variables() {
        let vars = [("TRACEPIPE_KAFKA_BROKERS", "kafka:9093"), ("TRACEPIPE_KAFKA_SASL_PASSWORD", "s3cret"), ("TRACEPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"), ("TRACEPIPE_SPANS_TOPIC", "spans"), ("HOME", "/root")];
        let properties = producer_properties_from_env(vars.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(properties, vec![("sasl.password".to_string(), "s3cret".to_string()), ("security.protocol".to_string(), "SASL_SSL".to_string())]);
    }
}
