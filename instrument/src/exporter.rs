//! An OpenTelemetry span exporter that publishes OTLP to Kafka: one
//! `ExportTraceServiceRequest` record per trace in each batch, keyed by the 16-byte trace id, on
//! the topic tracepipe's router reads (`otlp_spans`) — what the OpenTelemetry Collector's kafka
//! exporter writes with `partition_traces_by_id`, without a collector in between.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope as ProtoScope;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;

use crate::otlp::{self, delimited_len, write_delimited_header};
use crate::KafkaExport;

pub struct KafkaSpanExporter {
    producer: Arc<BaseProducer<BatchDeliveries>>,
    poller: Poller,
    topic: String,
    /// The process's resource as the `resource` and `schema_url` fields of a `ResourceSpans`,
    /// encoded once when the SDK sets it: every record repeats these bytes.
    resource_fields: Vec<u8>,
}

impl std::fmt::Debug for KafkaSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSpanExporter").field("topic", &self.topic).finish()
    }
}

/// What Kafka has answered for the records of one export: one shared count per batch instead
/// of a future per record, so a record costs Kafka's own work and an atomic decrement.
struct Batch {
    /// Records not yet answered, plus one held by [`KafkaSpanExporter::export`] until every
    /// record is handed to the producer, so the batch cannot complete while it is being sent.
    unanswered: AtomicUsize,
    /// The first error Kafka reported for a record of the batch.
    failure: Mutex<Option<String>>,
    done: Mutex<Option<futures_channel::oneshot::Sender<()>>>,
}

impl Batch {
    fn answered(&self, count: usize) {
        if self.unanswered.fetch_sub(count, Ordering::AcqRel) == count {
            if let Some(done) = self.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                let _ = done.send(());
            }
        }
    }

    fn failed(&self, error: String) {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert(error);
    }
}

/// The producer's context: each delivery report counts against its record's batch.
#[derive(Default)]
struct BatchDeliveries {
    /// Events served so far (delivery reports, logs, errors, statistics), so the poller knows
    /// whether a poll found one and the queue may hold more.
    events: AtomicU64,
}

/// Each event is counted, then handled as rdkafka's default context handles it.
impl ClientContext for BatchDeliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        DefaultClientContext.log(level, facility, message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.events.fetch_add(1, Ordering::Relaxed);
        DefaultClientContext.stats_raw(statistics);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        DefaultClientContext.error(error, reason);
    }
}

impl ProducerContext for BatchDeliveries {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Err((error, _)) = result {
            batch.failed(format!("kafka: {error}"));
        }
        batch.answered(1);
    }
}

/// How often the poller looks for delivery reports while an export waits for them (a record
/// waits `linger.ms`, 20, before it is even sent, so a few milliseconds more only delay the
/// export thread's next batch, not the service), and how often otherwise (for the producer's
/// error and log events).
const WAITING_POLL_INTERVAL: Duration = Duration::from_millis(5);
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The thread that serves the producer's events (delivery reports above all): a non-blocking
/// poll, repeated at once while it finds events, then a pause. Not rdkafka's
/// `ThreadedProducer`, whose `poll(100 ms)` waits in whole milliseconds and then spins, without
/// blocking, through the fraction of a millisecond left to its deadline: about 1% of a core for
/// an idle producer (CPU time of the example shop's idle orders service, with and without it).
struct Poller {
    state: Arc<PollerState>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct PollerState {
    stop: AtomicBool,
    /// Exports waiting for their delivery reports.
    exports_waiting: AtomicUsize,
}

impl Poller {
    fn start(producer: Arc<BaseProducer<BatchDeliveries>>) -> std::io::Result<Poller> {
        let state = Arc::new(PollerState::default());
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new().name("tracepipe-export".into()).spawn(move || {
            while !shared.stop.load(Ordering::Acquire) {
                let served = producer.context().events.load(Ordering::Relaxed);
                // A zero timeout is one non-blocking look at the queue.
                producer.poll(Duration::ZERO);
                if producer.context().events.load(Ordering::Relaxed) != served {
                    continue;
                }
                if shared.exports_waiting.load(Ordering::Acquire) > 0 {
                    std::thread::sleep(WAITING_POLL_INTERVAL);
                } else {
                    std::thread::park_timeout(IDLE_POLL_INTERVAL);
                }
            }
        })?;
        Ok(Poller { state, thread: Some(thread) })
    }

    /// Marks an export as waiting for reports until the guard is dropped, and wakes the poller.
    fn waiting(&self) -> WaitingExport<'_> {
        self.state.exports_waiting.fetch_add(1, Ordering::AcqRel);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
        WaitingExport(&self.state)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

struct WaitingExport<'a>(&'a PollerState);

impl Drop for WaitingExport<'_> {
    fn drop(&mut self) {
        self.0.exports_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long one export may wait for Kafka before the batch is reported failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// About what one of the library's HTTP or Kafka spans takes encoded.
const TYPICAL_SPAN_BYTES: usize = 384;

/// Field numbers of the OTLP messages the records are framed from.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;

/// A span of a batch: its trace id, its scope's index and where its body lies in the batch's
/// encoded bodies.
type EncodedSpan = ([u8; 16], usize, Range<usize>);

/// One instrumentation scope of a batch, with its `ScopeSpans.scope` and `.schema_url` fields
/// encoded once.
struct EncodedScope {
    scope: InstrumentationScope,
    fields: Vec<u8>,
}

impl EncodedScope {
    fn new(scope: &InstrumentationScope) -> EncodedScope {
        let mut fields = Vec::new();
        prost::encoding::message::encode(SCOPE_SPANS_SCOPE, &ProtoScope::from((scope, None)), &mut fields);
        if let Some(url) = scope.schema_url() {
            prost::encoding::string::encode(SCOPE_SPANS_SCHEMA_URL, &url.to_string(), &mut fields);
        }
        EncodedScope { scope: scope.clone(), fields }
    }
}

impl KafkaSpanExporter {
    pub fn new(kafka: &KafkaExport) -> Result<KafkaSpanExporter, rdkafka::error::KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("client.id", "tracepipe-instrument")
            .set("linger.ms", "20")
            // Uncompressed, as the OpenTelemetry SDKs' OTLP exporters and the Collector's kafka
            // exporter default to: LZ4 on these small per-trace records cost the service more CPU
            // than encoding the spans did (callgrind on the example shop). `producer` settings
            // can turn it on where bandwidth to the brokers matters more.
            .set("compression.type", "none")
            // The Java client's key hashing, as tracepipe's own producers use.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", EXPORT_TIMEOUT.as_millis().to_string());
        for (key, value) in &kafka.producer {
            config.set(key, value);
        }
        // An export completes when every record is answered: reports of success are needed too.
        config.set("delivery.report.only.error", "false");
        let producer: Arc<BaseProducer<BatchDeliveries>> = Arc::new(config.create_with_context(BatchDeliveries::default())?);
        let poller = Poller::start(Arc::clone(&producer)).map_err(|error| rdkafka::error::KafkaError::ClientCreation(format!("export poller thread: {error}")))?;
        let mut exporter = KafkaSpanExporter { producer, poller, topic: kafka.topic.clone(), resource_fields: Vec::new() };
        exporter.set_resource(&Resource::builder_empty().build());
        Ok(exporter)
    }

    /// The records a batch becomes: per trace, (trace id, an `ExportTraceServiceRequest` of its
    /// spans). Each span is written once as OTLP protobuf straight from the SDK's data (see
    /// [`crate::otlp`]); the resource and scopes are encoded once and their bytes repeated in
    /// every record, which is framed around the spans' bytes.
    pub fn records(&self, batch: Vec<SpanData>) -> Vec<([u8; 16], Vec<u8>)> {
        let mut scopes: Vec<EncodedScope> = Vec::new();
        // Room for a typical span's encoding each, so the buffer is not regrown as it fills.
        let mut bodies = Vec::with_capacity(batch.len() * TYPICAL_SPAN_BYTES);
        // (trace id, scope, where the span's body lies in `bodies`), then grouped by trace and
        // scope, in arrival order within each.
        let mut spans: Vec<EncodedSpan> = Vec::with_capacity(batch.len());
        for span in &batch {
            let scope = match scopes.iter().position(|s| s.scope == span.instrumentation_scope) {
                Some(index) => index,
                None => {
                    scopes.push(EncodedScope::new(&span.instrumentation_scope));
                    scopes.len() - 1
                }
            };
            let start = bodies.len();
            otlp::write_span(span, &mut bodies);
            spans.push((span.span_context.trace_id().to_bytes(), scope, start..bodies.len()));
        }
        // Each body starts past the one before, so ordering by it keeps arrival order.
        spans.sort_unstable_by_key(|(trace, scope, body)| (*trace, *scope, body.start));

        let mut records = Vec::new();
        for trace in spans.chunk_by(|a, b| a.0 == b.0) {
            let groups: Vec<&[EncodedSpan]> = trace.chunk_by(|a, b| a.1 == b.1).collect();
            let scope_body = |group: &[EncodedSpan]| scopes[group[0].1].fields.len() + group.iter().map(|s| delimited_len(SCOPE_SPANS_SPANS, s.2.len())).sum::<usize>();
            let resource_body = self.resource_fields.len() + groups.iter().map(|g| delimited_len(RESOURCE_SPANS_SCOPE_SPANS, scope_body(g))).sum::<usize>();
            let mut out = Vec::with_capacity(delimited_len(REQUEST_RESOURCE_SPANS, resource_body));
            write_delimited_header(REQUEST_RESOURCE_SPANS, resource_body, &mut out);
            // `resource` first and `schema_url` last would be the usual order; protobuf takes
            // fields in any order, and the two are kept together as one encoded run.
            out.extend_from_slice(&self.resource_fields);
            for group in &groups {
                write_delimited_header(RESOURCE_SPANS_SCOPE_SPANS, scope_body(group), &mut out);
                out.extend_from_slice(&scopes[group[0].1].fields);
                for (_, _, body) in *group {
                    write_delimited_header(SCOPE_SPANS_SPANS, body.len(), &mut out);
                    out.extend_from_slice(&bodies[body.clone()]);
                }
            }
            records.push((trace[0].0, out));
        }
        records
    }
}

impl SpanExporter for KafkaSpanExporter {
    /// Succeeds once Kafka has stored every record of the batch; fails with the first error it
    /// reported for any of them, after all have been answered (librdkafka answers each within
    /// `message.timeout.ms`).
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let records = self.records(batch);
        let _waiting = self.poller.waiting();
        let (done, answered) = futures_channel::oneshot::channel();
        let batch = Arc::new(Batch { unanswered: AtomicUsize::new(records.len() + 1), failure: Mutex::new(None), done: Mutex::new(Some(done)) });
        for (index, (trace_id, payload)) in records.iter().enumerate() {
            let record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(&batch)).key(&trace_id[..]).payload(payload);
            if let Err((error, _)) = self.producer.send(record) {
                // The records from here on will not be answered: the batch is failed as soon
                // as those already sent are.
                batch.failed(format!("kafka: {error}"));
                batch.answered(records.len() - index);
                break;
            }
        }
        batch.answered(1);
        answered.await.map_err(|_| OTelSdkError::InternalFailure("kafka producer dropped".into()))?;
        let failure = batch.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        failure.map_or(Ok(()), |error| Err(OTelSdkError::InternalFailure(error)))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.producer.flush(EXPORT_TIMEOUT).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.producer.flush(timeout).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        let resource = ResourceAttributesWithSchema::from(resource);
        self.resource_fields.clear();
        let proto = ProtoResource { attributes: resource.attributes.0, ..Default::default() };
        prost::encoding::message::encode(RESOURCE_SPANS_RESOURCE, &proto, &mut self.resource_fields);
        if let Some(url) = resource.schema_url {
            prost::encoding::string::encode(RESOURCE_SPANS_SCHEMA_URL, &url, &mut self.resource_fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, KeyValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    /// A span of `trace`; the ids pick among the shapes a span can have.
    fn span(trace: u8, id: u8, scope: &InstrumentationScope) -> SpanData {
        let trace_state = if id.is_multiple_of(2) { TraceState::from_key_value([("vendor", "a1")]).unwrap() } else { TraceState::default() };
        let context = SpanContext::new(TraceId::from_bytes([trace; 16]), SpanId::from_bytes([id; 8]), TraceFlags::SAMPLED, false, trace_state);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_000_000_000 + s);
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        if id.is_multiple_of(3) {
            events.events.push(Event::new("exception", at(500), vec![KeyValue::new("exception.type", "Timeout"), KeyValue::new("exception.escaped", false)], 1));
            events.dropped_count = 2;
            let linked = SpanContext::new(TraceId::from_bytes([9; 16]), SpanId::from_bytes([9; 8]), TraceFlags::SAMPLED, true, TraceState::from_key_value([("k", "v")]).unwrap());
            links.links.push(Link::new(linked, vec![KeyValue::new("messaging.operation.type", "process")], 3));
        }
        SpanData {
            span_context: context,
            parent_span_id: if id == 1 { SpanId::INVALID } else { SpanId::from_bytes([1; 8]) },
            parent_span_is_remote: id % 2 == 1,
            span_kind: [SpanKind::Client, SpanKind::Server, SpanKind::Producer, SpanKind::Consumer, SpanKind::Internal][usize::from(id % 5)].clone(),
            name: format!("op-{id}").into(),
            start_time: at(0),
            end_time: at(1_000_000 * u64::from(id)),
            attributes: vec![
                KeyValue::new("http.route", "/cart"),
                KeyValue::new("retries", i64::from(id) - 3),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("empty", ""),
                KeyValue::new("cached", id.is_multiple_of(2)),
                KeyValue::new("ratio", 0.25 * f64::from(id)),
                KeyValue::new("tags", Value::Array(Array::String(vec!["a".into(), "".into()]))),
                KeyValue::new("codes", Value::Array(Array::I64(vec![0, -1, 300]))),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("weights", Value::Array(Array::F64(vec![0.0, 1.5]))),
            ],
            dropped_attributes_count: u32::from(id % 2),
            events,
            links,
            status: match id % 3 {
                0 => Status::error("deadline exceeded"),
                1 => Status::Ok,
                _ => Status::Unset,
            },
            instrumentation_scope: scope.clone(),
        }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    /// An export succeeds once Kafka stored each trace's record, keyed by its trace id.
    #[test]
    fn export_answers_once_kafka_stored_every_record() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message as _;

        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("otlp_spans", 3, 1).unwrap();
        let kafka = KafkaExport { brokers: cluster.bootstrap_servers(), topic: "otlp_spans".into(), producer: Vec::new() };
        let exporter = KafkaSpanExporter::new(&kafka).unwrap();
        let scope = InstrumentationScope::builder("http").build();
        let batch: Vec<SpanData> = (1..=20).map(|trace| span(trace, 2, &scope)).collect();
        run(exporter.export(batch)).unwrap();
        run(exporter.export(Vec::new())).unwrap();

        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).set("group.id", "check").set("auto.offset.reset", "earliest").create().unwrap();
        consumer.subscribe(&["otlp_spans"]).unwrap();
        let mut keys = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while keys.len() < 20 && std::time::Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                keys.push(message.unwrap().key().unwrap()[0]);
            }
        }
        keys.sort_unstable();
        assert_eq!(keys, (1..=20).collect::<Vec<u8>>());
    }

    /// A batch Kafka does not store is reported failed, with Kafka's reason, once every record
    /// has timed out.
    #[test]
    fn export_fails_when_kafka_does_not_store_the_batch() {
        let kafka = KafkaExport { brokers: "127.0.0.1:1".into(), topic: "otlp_spans".into(), producer: vec![("message.timeout.ms".into(), "300".into())] };
        let exporter = KafkaSpanExporter::new(&kafka).unwrap();
        let scope = InstrumentationScope::builder("http").build();
        let error = run(exporter.export(vec![span(1, 2, &scope), span(2, 2, &scope)])).unwrap_err();
        assert!(error.to_string().contains("kafka: Message production error: MessageTimedOut"), "{error}");
    }

    /// Every record decodes to what opentelemetry-proto's own conversion makes of that trace's
    /// spans, resource and scopes included.
    #[test]
    fn each_trace_becomes_the_request_the_otlp_conversion_would_build() {
        let kafka = KafkaExport { brokers: "127.0.0.1:1".into(), topic: "otlp_spans".into(), producer: Vec::new() };
        let mut exporter = KafkaSpanExporter::new(&kafka).unwrap();
        let resource = Resource::builder_empty().with_attributes([KeyValue::new("service.name", "checkout")]).with_schema_url([], "https://opentelemetry.io/schemas/1.26.0").build();
        exporter.set_resource(&resource);
        let http = InstrumentationScope::builder("http").with_version("1.0").build();
        let kafka_scope = InstrumentationScope::builder("kafka").with_schema_url("https://opentelemetry.io/schemas/1.26.0").build();
        let batch = vec![span(1, 1, &http), span(2, 2, &kafka_scope), span(1, 3, &kafka_scope), span(1, 4, &http), span(2, 3, &http), span(2, 6, &http), span(1, 5, &kafka_scope)];
        let mut records = exporter.records(batch.clone());
        records.sort_by_key(|(trace_id, _)| *trace_id);
        assert_eq!(records.iter().map(|(id, _)| id[0]).collect::<Vec<_>>(), vec![1, 2]);
        for (trace_id, bytes) in records {
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let spans: Vec<SpanData> = batch.iter().filter(|s| s.span_context.trace_id().to_bytes() == trace_id).cloned().collect();
            let mut expected = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(spans, &(&resource).into()) };
            // Scopes in the order their first span came; the conversion's order is its own.
            expected.resource_spans[0].scope_spans.sort_by_key(|s| s.scope.as_ref().unwrap().name.clone());
            let mut decoded = decoded;
            decoded.resource_spans[0].scope_spans.sort_by_key(|s| s.scope.as_ref().unwrap().name.clone());
            assert_eq!(decoded, expected);
        }
    }
}
