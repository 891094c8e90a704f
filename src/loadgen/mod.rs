//! `tracepipe loadgen`: synthetic traffic from a scenario file, published to Kafka in any supported
//! encoding, with a ground-truth file (every trace with its span count, the true service edges,
//! the faults and their onsets) so tests can measure accuracy and completeness.

pub mod generator;
pub mod scenario;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracepipe_runtime::KafkaSettings;
use tracepipe_schemas::otlp_common::InstrumentationScope;
use tracepipe_schemas::otlp_resource::Resource;
use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use tracepipe_schemas::v1::AssembledTrace;
use tracepipe_schemas::{attributes, jaeger, otlp_json, zipkin, Encoding, ExportTraceServiceRequest};

pub use generator::{BusinessTruth, Edge, GeneratedTrace, JourneyTruth, TraceGenerator};
pub use scenario::Scenario;

/// What the run really generated, written as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroundTruth {
    pub scenario: String,
    pub encoding: String,
    pub topic: String,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    pub trace_count: u64,
    pub span_count: u64,
    pub message_count: u64,
    /// Trace id (hex) → number of spans.
    pub traces: BTreeMap<String, u32>,
    /// Trace id (hex) of each failed trace → the span id (hex) where the failure originated.
    pub error_traces: BTreeMap<String, String>,
    pub edges: Vec<Edge>,
    pub faults: Vec<FaultTruth>,
    /// Spans and error spans (status error) per (service, span name).
    #[serde(default)]
    pub operations: Vec<OperationTruth>,
    /// Entries per (service, span name): roots and messaging consumers, where a request or its
    /// asynchronous continuation begins (the analyzer's bottleneck endpoints).
    #[serde(default)]
    pub entries: Vec<OperationTruth>,
    /// Calls made over each edge.
    #[serde(default)]
    pub edge_calls: Vec<EdgeCalls>,
    /// Business attributes generated, per (service, operation, key).
    #[serde(default)]
    pub business: Vec<BusinessTruth>,
    /// How far each journey across traces went.
    #[serde(default)]
    pub journeys: Vec<JourneyTruth>,
    /// Requests (server and consumer spans) each version of each service served, and how many failed.
    #[serde(default)]
    pub versions: Vec<VersionTruth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionTruth {
    pub service: String,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationTruth {
    pub service: String,
    pub operation: String,
    pub spans: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCalls {
    pub client: String,
    pub server: String,
    /// As [`Edge::kind`].
    pub kind: String,
    pub calls: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultTruth {
    pub service: String,
    pub operation: String,
    pub onset_unix_ms: u64,
    pub latency_ms: f64,
    pub error_rate: f64,
}

/// When to stop; the first limit reached ends the run (none: until cancelled).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub traces: Option<u64>,
    pub spans: Option<u64>,
    pub duration: Option<Duration>,
}

pub struct LoadgenOptions {
    pub kafka: KafkaSettings,
    pub topic: Option<String>,
    pub encoding: Option<Encoding>,
    /// Spans per second, overriding the scenario's.
    pub rate: Option<f64>,
    pub limits: Limits,
    pub truth: Option<PathBuf>,
}

#[derive(Default)]
struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounts {}

impl ProducerContext for DeliveryCounts {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                tracing::warn!(%error, "loadgen delivery failed");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Encodes generated spans into Kafka messages (key, value) of the scenario's encoding.
pub struct MessageEncoder {
    encoding: Encoding,
    resources: Vec<Resource>,
}

impl MessageEncoder {
    pub fn new(encoding: Encoding, scenario: &Scenario, services: &[String]) -> Self {
        // One resource per service, then one per rollout: the instances of its new version.
        let instances = services
            .iter()
            .map(|name| (name.clone(), scenario.services[name].version.clone().unwrap_or_else(|| "1.0.0".into())))
            .chain(scenario.rollouts.iter().map(|r| (r.service.clone(), r.version.clone())));
        let resources = instances
            .map(|(name, version)| {
                Resource {
                    attributes: vec![
                        attributes::string(attributes::SERVICE_NAME, name.clone()),
                        attributes::string("service.version", version),
                        attributes::string("deployment.environment.name", "loadgen"),
                        attributes::string("telemetry.sdk.name", "tracepipe-loadgen"),
                    ],
                    ..Default::default()
                }
            })
            .collect();
        MessageEncoder { encoding, resources }
    }

    fn request(&self, spans: Vec<(usize, Span)>) -> ExportTraceServiceRequest {
        let mut by_service: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
        for (service, span) in spans {
            by_service.entry(service).or_default().push(span);
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(self.resources[service].clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope { name: "tracepipe-loadgen".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// One generated trace as the assembler would emit it (`tracepipe.traces`), for driving the
    /// processors after assembly without Kafka.
    pub fn assembled(&self, trace: &GeneratedTrace) -> Vec<u8> {
        let request = self.request(trace.spans.clone());
        AssembledTrace { trace_id: trace.trace_id.to_vec(), resource_spans: request.resource_spans, ..Default::default() }.encode_to_vec()
    }

    pub fn encode(&self, spans: Vec<(usize, Span)>) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let request = self.request(spans);
        match self.encoding {
            Encoding::OtlpProto => vec![(None, request.encode_to_vec())],
            Encoding::OtlpJson => vec![(None, otlp_json::encode(&request))],
            // Jaeger's Kafka span writer: one span per record, keyed by the hex trace id.
            Encoding::JaegerProto => jaeger::from_otlp(&request)
                .into_iter()
                .map(|span| (Some(hex::encode(&span.trace_id).into_bytes()), span.encode_to_vec()))
                .collect(),
            Encoding::ZipkinJson => vec![(None, serde_json::to_vec(&zipkin::from_otlp(&request)).expect("zipkin spans serialize"))],
        }
    }
}

/// Runs the scenario until a limit is reached or `shutdown` is cancelled; waits until the broker
/// has acknowledged every message, then writes the ground truth.
pub fn run(scenario: Scenario, options: LoadgenOptions, shutdown: &CancellationToken) -> anyhow::Result<GroundTruth> {
    let encoding = match options.encoding {
        Some(e) => e,
        None => scenario.encoding()?,
    };
    let topic = options
        .topic
        .clone()
        .or_else(|| scenario.topic.clone())
        .unwrap_or_else(|| Scenario::default_topic(encoding).to_string());
    let rate = options.rate.unwrap_or(scenario.rate);
    let batch_spans = scenario.batch_spans;
    let config = options.kafka.producer_config("tracepipe-loadgen");
    let producer: ThreadedProducer<DeliveryCounts> = config.create_with_context(DeliveryCounts::default()).context("create loadgen producer")?;

    let mut generator = TraceGenerator::new(scenario.clone());
    let encoder = MessageEncoder::new(encoding, &scenario, generator.services());
    let started = Instant::now();
    let started_unix_ms = unix_nanos() / 1_000_000;
    let mut truth = GroundTruth {
        scenario: scenario.name.clone(),
        encoding: encoding.to_string(),
        topic: topic.clone(),
        started_unix_ms,
        faults: scenario
            .faults
            .iter()
            .map(|f| FaultTruth {
                service: f.service.clone(),
                operation: f.operation.clone(),
                onset_unix_ms: started_unix_ms + (f.after_s * 1000.0) as u64,
                latency_ms: f.latency_ms,
                error_rate: f.error_rate,
            })
            .collect(),
        ..Default::default()
    };
    let mut pending: Vec<(usize, Span)> = Vec::with_capacity(batch_spans * 2);
    let mut operations: BTreeMap<(usize, String), (u64, u64)> = BTreeMap::new();
    let mut entries: BTreeMap<(usize, String), u64> = BTreeMap::new();
    let limits = &options.limits;
    loop {
        let done = shutdown.is_cancelled()
            || limits.traces.is_some_and(|n| truth.trace_count >= n)
            || limits.spans.is_some_and(|n| truth.span_count >= n)
            || limits.duration.is_some_and(|d| started.elapsed() >= d);
        if done || pending.len() >= batch_spans {
            if !pending.is_empty() {
                for (key, value) in encoder.encode(std::mem::take(&mut pending)) {
                    send(&producer, &topic, key.as_deref(), &value)?;
                    truth.message_count += 1;
                }
            }
            if done {
                break;
            }
            if rate > 0.0 {
                let due = Duration::from_secs_f64(truth.span_count as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(200)));
                }
            }
        }
        let trace = generator.generate(unix_nanos(), started.elapsed().as_secs_f64());
        let id = hex::encode(trace.trace_id);
        truth.trace_count += 1;
        truth.span_count += trace.spans.len() as u64;
        truth.traces.insert(id.clone(), trace.spans.len() as u32);
        if let Some(cause) = trace.root_cause {
            truth.error_traces.insert(id, hex::encode(cause));
        }
        for (service, span) in &trace.spans {
            let counts = operations.entry((*service, span.name.clone())).or_default();
            counts.0 += 1;
            counts.1 += u64::from(span.status.as_ref().is_some_and(|s| s.code == 2));
            if span.parent_span_id.is_empty() || span.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Consumer as i32 {
                *entries.entry((*service, span.name.clone())).or_default() += 1;
            }
        }
        pending.extend(trace.spans);
    }
    // Every queued record is either acknowledged or failed within the producer's own
    // `message.timeout.ms`, so waiting for the queue to drain ends; a fixed deadline here only
    // turned a slow broker into a spurious error.
    while producer.in_flight_count() > 0 {
        if let Err(error) = producer.flush(Duration::from_secs(10)) {
            if !matches!(error, KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) {
                return Err(error).context("flush loadgen producer");
            }
            tracing::debug!(in_flight = producer.in_flight_count(), "loadgen still waiting for acknowledgements");
        }
    }
    let failed = producer.context().failed.load(Ordering::Relaxed);
    truth.finished_unix_ms = unix_nanos() / 1_000_000;
    truth.edges = generator.edges.iter().cloned().collect();
    let services = generator.services();
    truth.operations = operations
        .into_iter()
        .map(|((service, operation), (spans, errors))| OperationTruth { service: services[service].clone(), operation, spans, errors })
        .collect();
    truth.entries = entries.into_iter().map(|((service, operation), spans)| OperationTruth { service: services[service].clone(), operation, spans, errors: 0 }).collect();
    truth.business = generator.business.values().cloned().collect();
    truth.journeys = generator.journeys.clone();
    truth.versions = generator.versions.iter().map(|((service, version), &(requests, errors))| VersionTruth { service: service.clone(), version: version.clone(), requests, errors }).collect();
    truth.edge_calls = generator.edge_calls.iter().map(|(e, calls)| EdgeCalls { client: e.client.clone(), server: e.server.clone(), kind: e.kind.clone(), calls: *calls }).collect();
    if let Some(path) = &options.truth {
        std::fs::write(path, serde_json::to_vec_pretty(&truth)?).with_context(|| format!("write {}", path.display()))?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} messages were not acknowledged by the broker", truth.message_count);
    }
    Ok(truth)
}

fn send(producer: &ThreadedProducer<DeliveryCounts>, topic: &str, key: Option<&[u8]>, value: &[u8]) -> anyhow::Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error).with_context(|| format!("send to {topic}")),
        }
    }
}
