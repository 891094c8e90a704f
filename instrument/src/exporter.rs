//! An OpenTelemetry span exporter that publishes OTLP to Kafka, on the topic tracepipe's router
//! reads (`otlp_spans`), without a collector in between: by default one unkeyed
//! `ExportTraceServiceRequest` record per batch, as the OpenTelemetry Collector's kafka exporter
//! writes by default, or, with [`SpanRecords::PerTrace`], one record per trace in each batch,
//! keyed by the 16-byte trace id, as it writes with `partition_traces_by_id`.
//!
//! Exports are pipelined, as a Kafka producer is meant to be used: an export returns once its
//! records are queued in the producer, while up to [`MAX_UNANSWERED_EXPORTS`] earlier ones wait
//! for Kafka's answers. Were each export to wait for its own answers, the SDK's one export thread
//! would send a batch per `linger.ms` plus a broker round trip, about 20 000 spans/s here; a
//! busier service would fill the span queue and lose spans. [`KafkaBatchSpanProcessor`] is the
//! SDK's batch processor whose `force_flush` also waits for every answer.

use std::ops::Range;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope as ProtoScope;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchConfig, BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;

use crate::otlp::{self, delimited_len, write_delimited_header};
use crate::{KafkaExport, SpanRecords};

pub struct KafkaSpanExporter {
    producer: Arc<BaseProducer<BatchDeliveries>>,
    poller: Poller,
    unanswered: Arc<UnansweredExports>,
    flush_timeout: Duration,
    /// When the SDK's call to [`SpanExporter::shutdown`] must return, set by
    /// [`KafkaBatchSpanProcessor`]'s shutdown: the SDK's processor calls it with no deadline.
    shutdown_deadline: Arc<Mutex<Option<Instant>>>,
    topic: String,
    records: SpanRecords,
    /// The most a record of several traces may take encoded: the producer's `message.max.bytes`
    /// less room for the record's framing.
    max_record_bytes: usize,
    /// The process's resource as the `resource` and `schema_url` fields of a `ResourceSpans`,
    /// encoded once when the SDK sets it: every record repeats these bytes.
    resource_fields: Vec<u8>,
}

impl std::fmt::Debug for KafkaSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSpanExporter").field("topic", &self.topic).finish()
    }
}

/// How many exports may wait for Kafka's answers at once before the next export waits for the
/// oldest: at one 512-span batch each, 8 keep about 4 000 spans (2 MB) in the producer and send
/// up to 8 batches per broker round trip.
pub const MAX_UNANSWERED_EXPORTS: usize = 8;

/// What Kafka has answered for the records of one export: one shared count per batch instead
/// of a future per record, so a record costs Kafka's own work and an atomic decrement.
struct Batch {
    /// The export's place in the order exports started, which flushes wait up to.
    sequence: u64,
    /// Records not yet answered, plus one held by [`KafkaSpanExporter::export`] until every
    /// record is handed to the producer, so the batch cannot complete while it is being sent.
    unanswered: AtomicUsize,
    /// The first error Kafka reported for a record of the batch.
    failure: Mutex<Option<String>>,
    exports: Arc<UnansweredExports>,
}

impl Batch {
    fn answered(&self, count: usize) {
        if self.unanswered.fetch_sub(count, Ordering::AcqRel) == count {
            let failure = lock(&self.failure).take();
            self.exports.answered(self.sequence, failure);
        }
    }

    fn failed(&self, error: String) {
        lock(&self.failure).get_or_insert(error);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many failed exports are kept for the flushes that will report them; past it the one
/// with the lowest sequence number is forgotten and only counted, and the next flush reports
/// the count whatever its point.
const MAX_KEPT_FAILURES: usize = 256;

/// The exports whose records Kafka has not all answered, shared by the exporter, its batches, its
/// poller and [`KafkaBatchSpanProcessor`].
#[derive(Default)]
struct UnansweredExports {
    state: Mutex<UnansweredState>,
    answered: Condvar,
}

impl std::fmt::Debug for UnansweredExports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnansweredExports").field("exports", &lock(&self.state).unanswered.len()).finish()
    }
}

#[derive(Default)]
struct UnansweredState {
    /// The sequence number the next export gets.
    next: u64,
    /// The exports not yet answered in full, by sequence number.
    unanswered: BTreeSet<u64>,
    /// The first error Kafka reported since an export last returned one, for the SDK to log,
    /// with its export's sequence number (a flush that reports that export clears it).
    unlogged: Option<(u64, String)>,
    /// The first error of each failed export no flush has reported yet, by sequence number.
    unflushed: BTreeMap<u64, String>,
    /// Failed exports forgotten past [`MAX_KEPT_FAILURES`].
    forgotten: usize,
    /// Exports waiting for fewer unanswered exports (the SDK's processors export one at a time).
    waiting: Vec<Waker>,
}

impl UnansweredExports {
    /// Counts a new export as unanswered; returns its sequence number.
    fn started(&self) -> u64 {
        let mut state = lock(&self.state);
        let sequence = state.next;
        state.next += 1;
        state.unanswered.insert(sequence);
        sequence
    }

    fn answered(&self, sequence: u64, failure: Option<String>) {
        let waiting = {
            let mut state = lock(&self.state);
            state.unanswered.remove(&sequence);
            if let Some(error) = failure {
                if state.unflushed.len() >= MAX_KEPT_FAILURES {
                    state.unflushed.pop_first();
                    state.forgotten += 1;
                }
                state.unlogged.get_or_insert_with(|| (sequence, error.clone()));
                state.unflushed.insert(sequence, error);
            }
            std::mem::take(&mut state.waiting)
        };
        self.answered.notify_all();
        waiting.into_iter().for_each(Waker::wake);
    }

    fn any(&self) -> bool {
        !lock(&self.state).unanswered.is_empty()
    }

    /// The sequence number of the next export: a flush started now covers every export before it.
    fn next(&self) -> u64 {
        lock(&self.state).next
    }

    /// Resolves once at most `limit` exports are unanswered, with the error Kafka reported since
    /// an export last returned one, if any.
    async fn at_most(&self, limit: usize) -> Result<(), String> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.unanswered.len() <= limit {
                return Poll::Ready(state.unlogged.take().map_or(Ok(()), |(_, error)| Err(error)));
            }
            state.waiting.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Blocks until every export before `before` is answered, or `timeout` has passed. Exports
    /// that start meanwhile are not waited for, so a busy exporter does not hold a flush to its
    /// timeout.
    fn wait(&self, before: u64, timeout: Duration) -> Result<MutexGuard<'_, UnansweredState>, OTelSdkError> {
        let state = lock(&self.state);
        let pending = |state: &mut UnansweredState| state.unanswered.first().is_some_and(|&oldest| oldest < before);
        let (mut state, waited) = self.answered.wait_timeout_while(state, timeout, pending).unwrap_or_else(|poisoned| poisoned.into_inner());
        if waited.timed_out() && pending(&mut state) {
            return Err(OTelSdkError::Timeout(timeout));
        }
        Ok(state)
    }

    /// [`Self::wait`], then fails with the errors of the exports before `before` that failed and
    /// that no flush has reported yet.
    fn wait_for(&self, before: u64, timeout: Duration) -> OTelSdkResult {
        let mut state = self.wait(before, timeout)?;
        let later = state.unflushed.split_off(&before);
        let covered = std::mem::replace(&mut state.unflushed, later);
        // The failure kept for the SDK's log is reported here if this flush covers its export;
        // the next one to log is then the first this flush leaves (perhaps logged already: a
        // failure is better logged twice than not at all).
        if state.unlogged.as_ref().is_some_and(|(sequence, _)| *sequence < before) {
            state.unlogged = state.unflushed.first_key_value().map(|(sequence, error)| (*sequence, error.clone()));
        }
        let forgotten = std::mem::take(&mut state.forgotten);
        match covered.into_values().next() {
            None if forgotten == 0 => Ok(()),
            None => Err(OTelSdkError::InternalFailure(format!("{forgotten} exports Kafka did not store"))),
            Some(error) => Err(OTelSdkError::InternalFailure(if forgotten == 0 { error } else { format!("{error} (and {forgotten} earlier exports Kafka did not store)") })),
        }
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

/// How often the poller looks for delivery reports while exports wait for them (a record waits
/// `linger.ms`, 20, before it is even sent, and exports do not wait for their own answers, so a
/// few milliseconds more only delay when a batch counts as answered), and how often otherwise
/// (for the producer's error and log events).
const WAITING_POLL_INTERVAL: Duration = Duration::from_millis(5);
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The thread that serves the producer's events (delivery reports above all): a non-blocking
/// poll, repeated at once while it finds events, then a pause. Not rdkafka's
/// `ThreadedProducer`, whose `poll(100 ms)` waits in whole milliseconds and then spins, without
/// blocking, through the fraction of a millisecond left to its deadline: about 1% of a core for
/// an idle producer (CPU time of the example shop's idle orders service, with and without it).
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    fn start(producer: Arc<BaseProducer<BatchDeliveries>>, unanswered: Arc<UnansweredExports>) -> std::io::Result<Poller> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("tracepipe-export".into()).spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                let served = producer.context().events.load(Ordering::Relaxed);
                // A zero timeout is one non-blocking look at the queue.
                producer.poll(Duration::ZERO);
                if producer.context().events.load(Ordering::Relaxed) != served {
                    continue;
                }
                if unanswered.any() {
                    std::thread::sleep(WAITING_POLL_INTERVAL);
                } else {
                    std::thread::park_timeout(IDLE_POLL_INTERVAL);
                }
            }
        })?;
        Ok(Poller { stop, thread: Some(thread) })
    }

    /// Has the poller look for reports now, and every few milliseconds while exports wait.
    fn wake(&self) {
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// How long a record may wait for Kafka before its export is reported failed, unless the
/// producer settings give `message.timeout.ms`.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a flush waits for Kafka's answers: until the last record exported before it has
/// been answered or timed out (librdkafka looks for timed-out records once a second), and a
/// second more; with `message.timeout.ms` 0 (no limit), as long as the default would.
fn flush_timeout(message_timeout_ms: Option<&str>) -> Duration {
    let message_timeout = match message_timeout_ms.and_then(|ms| ms.trim().parse::<u64>().ok()) {
        Some(0) | None => MESSAGE_TIMEOUT,
        Some(ms) => Duration::from_millis(ms),
    };
    message_timeout + Duration::from_secs(2)
}

/// How much of a shutdown's time, at most, is kept for dropping the producer once the exporter
/// has stopped waiting (a quarter of it when that is less).
const PRODUCER_DROP_MARGIN: Duration = Duration::from_millis(500);

/// librdkafka's default `message.max.bytes`, the most a record may take.
const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// What librdkafka counts toward `message.max.bytes` beside a record's value, at most: its
/// framing in a batch, and the trace id or its absence as the key.
const RECORD_FRAMING_BYTES: usize = 128;

/// librdkafka's other name for `message.timeout.ms`.
const MESSAGE_TIMEOUT_ALIAS: &str = "delivery.timeout.ms";

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
        let given = |name: &str| kafka.producer.iter().any(|(key, _)| key == name);
        // Each default under librdkafka's two names for it (the second, if any), set only when
        // the producer settings give neither: librdkafka applies the two names in the order it is
        // handed them, which for a `ClientConfig` is a hash map's.
        let defaults = [
            ("bootstrap.servers", Some("metadata.broker.list"), kafka.brokers.clone()),
            ("client.id", None, "tracepipe-instrument".to_string()),
            ("linger.ms", Some("queue.buffering.max.ms"), "20".to_string()),
            // Uncompressed, as the OpenTelemetry SDKs' OTLP exporters and the Collector's kafka
            // exporter default to: LZ4 on the small records of a record per trace cost the service
            // more CPU than encoding the spans did (callgrind on the example shop). `producer` settings
            // can turn it on where bandwidth to the brokers matters more.
            ("compression.type", Some("compression.codec"), "none".to_string()),
            // The Java client's key hashing, as tracepipe's own producers use.
            ("partitioner", None, "murmur2_random".to_string()),
            ("message.timeout.ms", Some(MESSAGE_TIMEOUT_ALIAS), MESSAGE_TIMEOUT.as_millis().to_string()),
        ];
        let mut config = ClientConfig::new();
        for (name, other_name, value) in defaults {
            match other_name {
                Some(other) if given(name) && given(other) => return Err(rdkafka::error::KafkaError::ClientCreation(format!("the exporter's producer settings give both {name} and {other}, which librdkafka takes for the same setting; give one"))),
                _ if given(name) || other_name.is_some_and(given) => {}
                _ => {
                    config.set(name, value);
                }
            }
        }
        for (key, value) in &kafka.producer {
            config.set(key, value);
        }
        // An export completes when every record is answered: reports of success are needed too.
        config.set("delivery.report.only.error", "false");
        let producer: Arc<BaseProducer<BatchDeliveries>> = Arc::new(config.create_with_context(BatchDeliveries::default())?);
        let unanswered = Arc::new(UnansweredExports::default());
        let poller = Poller::start(Arc::clone(&producer), Arc::clone(&unanswered)).map_err(|error| rdkafka::error::KafkaError::ClientCreation(format!("export poller thread: {error}")))?;
        // The settings as librdkafka reads them (either name, its defaults, `0x` and octal
        // numbers), rather than parsed again here.
        let effective = config.create_native_config()?;
        let flush_timeout = flush_timeout(effective.get("message.timeout.ms").ok().as_deref());
        let max_message_bytes = effective.get("message.max.bytes").ok().and_then(|bytes| bytes.parse::<usize>().ok()).unwrap_or(MAX_MESSAGE_BYTES);
        let max_record_bytes = max_message_bytes.saturating_sub(RECORD_FRAMING_BYTES).max(1);
        let mut exporter = KafkaSpanExporter {
            producer,
            poller,
            unanswered,
            flush_timeout,
            shutdown_deadline: Arc::default(),
            topic: kafka.topic.clone(),
            records: kafka.records,
            max_record_bytes,
            resource_fields: Vec::new(),
        };
        exporter.set_resource(&Resource::builder_empty().build());
        Ok(exporter)
    }

    /// The records a batch becomes: (key, an `ExportTraceServiceRequest`), per trace keyed by
    /// its trace id or, with [`SpanRecords::PerBatch`], unkeyed for as many of the batch's spans
    /// as fit in `message.max.bytes`. Each span is written once as OTLP protobuf straight from
    /// the SDK's data (see [`crate::otlp`]); the resource and scopes are encoded once and their
    /// bytes repeated in every record, which is framed around the spans' bytes.
    pub fn records(&self, batch: Vec<SpanData>) -> Vec<(Option<[u8; 16]>, Vec<u8>)> {
        let mut scopes: Vec<EncodedScope> = Vec::new();
        // Room for a typical span's encoding each, so the buffer is not regrown as it fills.
        let mut bodies = Vec::with_capacity(batch.len() * TYPICAL_SPAN_BYTES);
        // (trace id, scope, where the span's body lies in `bodies`), then grouped by record and
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
        // Records of as many spans as fit in `message.max.bytes`: a trace or batch past it is
        // sent as several, and a span past it alone, which the producer refuses (and the export
        // reports) without holding back the rest.
        let mut records = Vec::new();
        let mut split = |key: Option<[u8; 16]>, mut rest: &[EncodedSpan]| {
            while !rest.is_empty() {
                let fit = spans_that_fit(self.resource_fields.len(), &scopes, rest, self.max_record_bytes);
                let (record, later) = rest.split_at(fit);
                records.push((key, frame_record(&self.resource_fields, &scopes, &bodies, record)));
                rest = later;
            }
        };
        // Each body starts past the one before, so ordering by it keeps arrival order.
        match self.records {
            SpanRecords::PerTrace => {
                spans.sort_unstable_by_key(|(trace, scope, body)| (*trace, *scope, body.start));
                spans.chunk_by(|a, b| a.0 == b.0).for_each(|trace| split(Some(trace[0].0), trace));
            }
            SpanRecords::PerBatch => {
                spans.sort_unstable_by_key(|(_, scope, body)| (*scope, body.start));
                split(None, &spans);
            }
        }
        records
    }
}

/// How many of `spans` (ordered by scope), one at least, one record takes without its
/// `ExportTraceServiceRequest` passing `max_bytes`, counting each varint length at its widest.
fn spans_that_fit(resource_bytes: usize, scopes: &[EncodedScope], spans: &[EncodedSpan], max_bytes: usize) -> usize {
    const HEADER: usize = 1 + 5;
    let mut bytes = HEADER + resource_bytes;
    let mut scope = None;
    for (index, (_, span_scope, body)) in spans.iter().enumerate() {
        let mut more = delimited_len(SCOPE_SPANS_SPANS, body.len());
        if scope != Some(*span_scope) {
            more += HEADER + scopes[*span_scope].fields.len();
        }
        if index > 0 && bytes + more > max_bytes {
            return index;
        }
        bytes += more;
        scope = Some(*span_scope);
    }
    spans.len()
}

/// One record's `ExportTraceServiceRequest`: a `ResourceSpans` of `spans`, which are ordered by
/// scope, a `ScopeSpans` per scope.
fn frame_record(resource_fields: &[u8], scopes: &[EncodedScope], bodies: &[u8], spans: &[EncodedSpan]) -> Vec<u8> {
    let groups: Vec<&[EncodedSpan]> = spans.chunk_by(|a, b| a.1 == b.1).collect();
    let scope_body = |group: &[EncodedSpan]| scopes[group[0].1].fields.len() + group.iter().map(|s| delimited_len(SCOPE_SPANS_SPANS, s.2.len())).sum::<usize>();
    let resource_body = resource_fields.len() + groups.iter().map(|g| delimited_len(RESOURCE_SPANS_SCOPE_SPANS, scope_body(g))).sum::<usize>();
    let mut out = Vec::with_capacity(delimited_len(REQUEST_RESOURCE_SPANS, resource_body));
    write_delimited_header(REQUEST_RESOURCE_SPANS, resource_body, &mut out);
    // `resource` first and `schema_url` last would be the usual order; protobuf takes fields in
    // any order, and the two are kept together as one encoded run.
    out.extend_from_slice(resource_fields);
    for group in &groups {
        write_delimited_header(RESOURCE_SPANS_SCOPE_SPANS, scope_body(group), &mut out);
        out.extend_from_slice(&scopes[group[0].1].fields);
        for (_, _, body) in *group {
            write_delimited_header(SCOPE_SPANS_SPANS, body.len(), &mut out);
            out.extend_from_slice(&bodies[body.clone()]);
        }
    }
    out
}

impl SpanExporter for KafkaSpanExporter {
    /// Queues the batch's records in the producer and returns, unless more than
    /// [`MAX_UNANSWERED_EXPORTS`] exports would then be waiting for Kafka: then it first waits
    /// until the oldest is answered. Fails with the first error reported for a record of any
    /// export answered since an export last returned one (Kafka's, within `message.timeout.ms`,
    /// or the producer's refusal of a record too large for it), so the SDK logs it; flushes
    /// report the failures of the exports they cover as well.
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let records = self.records(batch);
        let sequence = self.unanswered.started();
        let batch = Arc::new(Batch { sequence, unanswered: AtomicUsize::new(records.len() + 1), failure: Mutex::new(None), exports: Arc::clone(&self.unanswered) });
        for (trace_id, payload) in &records {
            let record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(&batch)).payload(payload);
            let record = match trace_id {
                Some(trace_id) => record.key(&trace_id[..]),
                None => record,
            };
            if let Err((error, _)) = self.producer.send(record) {
                // Refused here (too large, queue full), so never answered: counted as answered
                // with the failure, and the batch's other records still go.
                batch.failed(format!("kafka: {error}"));
                batch.answered(1);
            }
        }
        batch.answered(1);
        self.poller.wake();
        self.unanswered.at_most(MAX_UNANSWERED_EXPORTS).await.map_err(OTelSdkError::InternalFailure)
    }

    /// Waits until Kafka has answered every record exported so far.
    fn force_flush(&self) -> OTelSdkResult {
        self.unanswered.wait_for(self.unanswered.next(), self.flush_timeout)
    }

    /// Waits for Kafka's answers to every export, leaving their failures to be reported by
    /// [`KafkaBatchSpanProcessor`]'s shutdown: the SDK's processor discards what this returns.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.unanswered.wait(self.unanswered.next(), timeout).map(drop)
    }

    /// What the SDK's batch processor calls as it stops, before it drops the exporter (and with
    /// it the producer, which purges the records Kafka has not answered): waits until just
    /// before the deadline of [`KafkaBatchSpanProcessor`]'s shutdown, rather than the SDK's fixed
    /// 5 s, which would purge records Kafka was still within its `message.timeout.ms` to answer.
    /// Under the SDK's own `BatchSpanProcessor`, which sets no deadline, it waits the flush
    /// timeout, on the processor's thread: the provider's shutdown still returns at its own
    /// timeout.
    fn shutdown(&self) -> OTelSdkResult {
        let timeout = match *lock(&self.shutdown_deadline) {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.flush_timeout,
        };
        self.shutdown_with_timeout(timeout)
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

/// The SDK's [`BatchSpanProcessor`] over a [`KafkaSpanExporter`], with a `force_flush` that
/// returns once Kafka has answered every span ended before it: the SDK's processor flushes by
/// exporting what it holds, and this exporter's exports return before Kafka answers.
#[derive(Debug)]
pub struct KafkaBatchSpanProcessor {
    batches: BatchSpanProcessor,
    unanswered: Arc<UnansweredExports>,
    flush_timeout: Duration,
    shutdown_deadline: Arc<Mutex<Option<Instant>>>,
}

impl KafkaBatchSpanProcessor {
    pub fn new(exporter: KafkaSpanExporter, config: BatchConfig) -> KafkaBatchSpanProcessor {
        let (unanswered, flush_timeout, shutdown_deadline) = (Arc::clone(&exporter.unanswered), exporter.flush_timeout, Arc::clone(&exporter.shutdown_deadline));
        KafkaBatchSpanProcessor { batches: BatchSpanProcessor::builder(exporter).with_batch_config(config).build(), unanswered, flush_timeout, shutdown_deadline }
    }

    /// How long a flush may wait for Kafka's answers (`message.timeout.ms` and 2 s), and so how
    /// long a shutdown needs to give every span ended before it its answer.
    pub fn flush_timeout(&self) -> Duration {
        self.flush_timeout
    }
}

impl SpanProcessor for KafkaBatchSpanProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, context: &opentelemetry::Context) {
        self.batches.on_start(span, context);
    }

    fn on_end(&self, span: SpanData) {
        self.batches.on_end(span);
    }

    /// Exports what the SDK's processor holds, then waits for Kafka's answers to every export
    /// started until then, all within the flush timeout (or the SDK's own 5 s for the export,
    /// when that is longer); fails with the failures of those exports.
    fn force_flush(&self) -> OTelSdkResult {
        let deadline = Instant::now() + self.flush_timeout;
        let exported = self.batches.force_flush();
        let answered = self.unanswered.wait_for(self.unanswered.next(), deadline.saturating_duration_since(Instant::now()));
        answered.and(exported)
    }

    /// Stops the SDK's processor, which exports what it holds and then waits, in the exporter's
    /// shutdown, for Kafka's answers; then reports the failures of every export, all within
    /// `timeout`. They are reported here because the SDK's processor discards what the
    /// exporter's shutdown returns.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        // The exporter stops waiting a little earlier: the SDK's processor then drops it, and
        // dropping the producer purges what Kafka has not answered and collects those reports,
        // which has to fit in the time left.
        *lock(&self.shutdown_deadline) = Some(deadline - (timeout / 4).min(PRODUCER_DROP_MARGIN));
        let stopped = self.batches.shutdown_with_timeout(timeout);
        let answered = self.unanswered.wait_for(self.unanswered.next(), deadline.saturating_duration_since(Instant::now()));
        answered.and(stopped)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batches.set_resource(resource);
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

    fn unreachable(message_timeout_ms: u32) -> KafkaSpanExporter {
        KafkaSpanExporter::new(&KafkaExport { producer: vec![("message.timeout.ms".into(), message_timeout_ms.to_string())], ..KafkaExport::new("127.0.0.1:1", "otlp_spans") }).unwrap()
    }

    /// A record that landed: its key and how many spans it holds.
    type Landed = (Option<Vec<u8>>, usize);

    /// Exports `batch` through a mock cluster and returns what the flush after it returned, and
    /// the records that landed once `expected` spans have.
    fn land(kafka: impl FnOnce(String) -> KafkaExport, batch: Vec<SpanData>, expected: usize) -> (OTelSdkResult, Vec<Landed>) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message as _;

        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("otlp_spans", 3, 1).unwrap();
        let exporter = KafkaSpanExporter::new(&kafka(cluster.bootstrap_servers())).unwrap();
        run(exporter.export(batch)).unwrap();
        run(exporter.export(Vec::new())).unwrap();
        let flushed = exporter.force_flush();
        assert!(!exporter.unanswered.any());

        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).set("group.id", "check").set("auto.offset.reset", "earliest").create().unwrap();
        consumer.subscribe(&["otlp_spans"]).unwrap();
        let mut landed: Vec<Landed> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while landed.iter().map(|(_, spans)| spans).sum::<usize>() < expected && std::time::Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let request = ExportTraceServiceRequest::decode(message.payload().unwrap()).unwrap();
                let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                landed.push((message.key().map(<[u8]>::to_vec), spans));
            }
        }
        (flushed, landed)
    }

    /// 20 traces of a span each.
    fn twenty_traces() -> Vec<SpanData> {
        let scope = InstrumentationScope::builder("http").build();
        (1..=20).map(|trace| span(trace, 2, &scope)).collect()
    }

    /// A record per trace: each lands keyed by its trace id, and a flush returns once Kafka
    /// answered every one.
    #[test]
    fn exported_records_land_keyed_by_trace_id() {
        let (flushed, landed) = land(|brokers| KafkaExport { records: SpanRecords::PerTrace, ..KafkaExport::new(brokers, "otlp_spans") }, twenty_traces(), 20);
        flushed.unwrap();
        let mut keys: Vec<u8> = landed.into_iter().map(|(key, spans)| {
            assert_eq!(spans, 1);
            key.expect("keyed")[0]
        }).collect();
        keys.sort_unstable();
        assert_eq!(keys, (1..=20).collect::<Vec<u8>>());
    }

    /// Per batch, the batch lands as one unkeyed record.
    #[test]
    fn a_batch_lands_as_one_unkeyed_record() {
        let (flushed, landed) = land(|brokers| KafkaExport { records: SpanRecords::PerBatch, ..KafkaExport::new(brokers, "otlp_spans") }, twenty_traces(), 20);
        flushed.unwrap();
        assert_eq!(landed, vec![(None, 20)]);
    }

    /// A span too large for `message.max.bytes` is refused and reported, and the rest of its
    /// batch lands: per batch, and per trace, where its trace's other spans go in a record of
    /// their own.
    #[test]
    fn a_span_past_the_size_limit_fails_alone() {
        let scope = InstrumentationScope::builder("http").build();
        let mut batch: Vec<SpanData> = (0..30u8).map(|id| span(id % 3 + 1, id, &scope)).collect();
        batch[13].attributes.push(KeyValue::new("blob", "x".repeat(3_000)));
        for records in [SpanRecords::PerBatch, SpanRecords::PerTrace] {
            let kafka = |brokers| KafkaExport { records, producer: vec![("message.max.bytes".into(), "0x7d0".into())], ..KafkaExport::new(brokers, "otlp_spans") };
            let (flushed, landed) = land(kafka, batch.clone(), 29);
            let error = flushed.unwrap_err().to_string();
            assert!(error.contains("MessageSizeTooLarge"), "{records:?}: {error}");
            assert_eq!(landed.iter().map(|(_, spans)| spans).sum::<usize>(), 29, "{records:?}: {landed:?}");
            assert!(landed.len() > 3, "{records:?}: records split at 0x7d0 = 2000 bytes, as librdkafka reads it: {landed:?}");
        }
    }

    /// An export returns before Kafka answers; records Kafka does not store fail the flush that
    /// waits for them, with Kafka's reason.
    #[test]
    fn a_flush_reports_records_kafka_did_not_store() {
        let exporter = unreachable(300);
        let scope = InstrumentationScope::builder("http").build();
        run(exporter.export(vec![span(1, 2, &scope), span(2, 2, &scope)])).unwrap();
        assert!(exporter.unanswered.any(), "the export returned before Kafka answered");
        let error = exporter.force_flush().unwrap_err();
        assert!(error.to_string().contains("kafka: Message production error: MessageTimedOut"), "{error}");
        assert!(!exporter.unanswered.any());
        exporter.force_flush().expect("a failure is reported once");
    }

    /// Past MAX_UNANSWERED_EXPORTS, an export waits for the oldest to be answered, and reports
    /// its failure.
    #[test]
    fn an_export_waits_once_too_many_are_unanswered() {
        let exporter = unreachable(1500);
        let scope = InstrumentationScope::builder("http").build();
        for trace in 0..MAX_UNANSWERED_EXPORTS {
            run(exporter.export(vec![span(trace as u8, 2, &scope)])).expect("returns before Kafka answers");
        }
        assert_eq!(lock(&exporter.unanswered.state).unanswered.len(), MAX_UNANSWERED_EXPORTS);
        let error = run(exporter.export(vec![span(99, 2, &scope)])).unwrap_err();
        assert!(error.to_string().contains("MessageTimedOut"), "{error}");
        assert!(lock(&exporter.unanswered.state).unanswered.len() <= MAX_UNANSWERED_EXPORTS);
        let _ = exporter.force_flush();
    }

    /// A flush waits for the exports started before it, not for those a busy exporter starts
    /// meanwhile, and reports the failures of those it covers, even where an export already
    /// returned them for the SDK to log.
    #[test]
    fn a_flush_covers_the_exports_started_before_it() {
        let exports = UnansweredExports::default();
        let first = exports.started();
        let before = exports.next();
        let later = exports.started();
        exports.answered(later, Some("kafka: later".into()));
        exports.answered(first, Some("kafka: first".into()));
        assert_eq!(run(exports.at_most(MAX_UNANSWERED_EXPORTS)), Err("kafka: later".into()), "the first failure answered is logged");
        assert_eq!(exports.wait_for(before, Duration::ZERO).unwrap_err().to_string(), OTelSdkError::InternalFailure("kafka: first".into()).to_string());
        exports.wait_for(before, Duration::ZERO).expect("reported once");
        assert!(exports.wait_for(exports.next(), Duration::ZERO).unwrap_err().to_string().contains("kafka: later"));

        let failed = exports.started();
        exports.answered(failed, Some("kafka: once".into()));
        assert!(exports.wait_for(exports.next(), Duration::ZERO).is_err());
        assert_eq!(run(exports.at_most(MAX_UNANSWERED_EXPORTS)), Ok(()), "a failure a flush reported is not returned again by an export");

        let early = exports.started();
        let before = exports.next();
        let late = exports.started();
        exports.answered(early, Some("kafka: early".into()));
        exports.answered(late, Some("kafka: late".into()));
        assert!(exports.wait_for(before, Duration::ZERO).unwrap_err().to_string().contains("kafka: early"));
        assert_eq!(run(exports.at_most(MAX_UNANSWERED_EXPORTS)), Err("kafka: late".into()), "the failure a flush leaves is still logged");
        assert!(exports.wait_for(exports.next(), Duration::ZERO).unwrap_err().to_string().contains("kafka: late"));

        let busy = exports.started();
        let before = exports.next();
        let _still_unanswered = exports.started();
        exports.answered(busy, None);
        exports.wait_for(before, Duration::ZERO).expect("done once the exports before it are answered");
        assert!(matches!(exports.wait_for(exports.next(), Duration::ZERO), Err(OTelSdkError::Timeout(_))));
    }

    /// Failures no flush has reported are kept up to a bound; the next flush counts the ones
    /// forgotten.
    #[test]
    fn failures_kept_for_flushes_are_bounded() {
        let exports = UnansweredExports::default();
        for _ in 0..MAX_KEPT_FAILURES + 2 {
            let export = exports.started();
            exports.answered(export, Some(format!("kafka: {export}")));
        }
        assert_eq!(lock(&exports.state).unflushed.len(), MAX_KEPT_FAILURES);
        let error = exports.wait_for(exports.next(), Duration::ZERO).unwrap_err().to_string();
        assert!(error.contains("kafka: 2 (and 2 earlier exports Kafka did not store)"), "{error}");
        exports.wait_for(exports.next(), Duration::ZERO).unwrap();
    }

    /// A provider over an exporter whose broker is unreachable, one span ended.
    fn provider_with_a_span_kafka_will_not_store(message_timeout_ms: u32) -> opentelemetry_sdk::trace::SdkTracerProvider {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};

        let processor = KafkaBatchSpanProcessor::new(unreachable(message_timeout_ms), BatchConfig::default());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_span_processor(processor).build();
        provider.tracer("test").in_span("checkout", |_| {});
        provider
    }

    /// Through the SDK, the provider's flush waits for Kafka's answers, not only for the export,
    /// and so does its shutdown, which reports what Kafka did not store of the last spans.
    #[test]
    fn the_providers_flush_and_shutdown_wait_for_kafka() {
        let error = provider_with_a_span_kafka_will_not_store(300).force_flush().unwrap_err();
        assert!(error.to_string().contains("MessageTimedOut"), "{error}");
        let error = provider_with_a_span_kafka_will_not_store(300).shutdown().unwrap_err();
        assert!(error.to_string().contains("MessageTimedOut"), "{error}");
    }

    /// A shutdown given longer than the SDK's 5 s waits that long for Kafka: the records are
    /// answered (here, timed out) by Kafka rather than purged when the SDK drops the exporter.
    #[test]
    fn a_shutdown_waits_for_kafka_past_five_seconds() {
        let provider = provider_with_a_span_kafka_will_not_store(6_000);
        let started = Instant::now();
        let error = provider.shutdown_with_timeout(flush_timeout(Some("6000")) + Duration::from_secs(2)).unwrap_err();
        assert!(error.to_string().contains("MessageTimedOut"), "{error}");
        assert!(started.elapsed() >= Duration::from_secs(6), "answered after {:?}", started.elapsed());
    }

    /// A shutdown shorter than Kafka's answers stops the exporter within it: the producer is
    /// dropped and the records it purges are reported (were the exporter still waiting on the
    /// SDK's thread, the shutdown would fail with a timeout instead).
    #[test]
    fn a_shutdown_stops_the_exporter_within_its_timeout() {
        let provider = provider_with_a_span_kafka_will_not_store(60_000);
        let timeout = Duration::from_millis(1_500);
        let started = Instant::now();
        let error = provider.shutdown_with_timeout(timeout).unwrap_err();
        assert!(error.to_string().contains("PurgeQueue"), "the exporter stopped and its records were purged within {timeout:?}: {error} after {:?}", started.elapsed());
    }

    #[test]
    fn flushes_wait_past_the_message_timeout() {
        assert_eq!(flush_timeout(None), Duration::from_secs(12));
        assert_eq!(flush_timeout(Some("0")), Duration::from_secs(12));
        assert_eq!(flush_timeout(Some("30000")), Duration::from_secs(32));
        assert_eq!(flush_timeout(Some("300")), Duration::from_millis(2300));
        let by_alias = KafkaExport { producer: vec![(MESSAGE_TIMEOUT_ALIAS.into(), "30000".into())], ..KafkaExport::new("127.0.0.1:1", "otlp_spans") };
        assert_eq!(KafkaSpanExporter::new(&by_alias).unwrap().flush_timeout, Duration::from_secs(32));
        let both = KafkaExport { producer: vec![("compression.codec".into(), "lz4".into()), ("compression.type".into(), "zstd".into())], ..by_alias };
        let error = KafkaSpanExporter::new(&both).unwrap_err().to_string();
        assert!(error.contains("both compression.type and compression.codec"), "{error}");
    }

    /// What opentelemetry-proto's own conversion makes of `spans`, scopes in name order (the
    /// conversion's order is its own).
    fn converted(spans: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        let mut request = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(spans, &resource.into()) };
        request.resource_spans[0].scope_spans.sort_by_key(|s| s.scope.as_ref().unwrap().name.clone());
        request
    }

    fn decoded(bytes: &[u8]) -> ExportTraceServiceRequest {
        let mut request = ExportTraceServiceRequest::decode(bytes).unwrap();
        request.resource_spans[0].scope_spans.sort_by_key(|s| s.scope.as_ref().unwrap().name.clone());
        request
    }

    fn per_batch(producer: Vec<(String, String)>) -> (KafkaSpanExporter, Resource) {
        let mut exporter = KafkaSpanExporter::new(&KafkaExport { producer, records: SpanRecords::PerBatch, ..KafkaExport::new("127.0.0.1:1", "otlp_spans") }).unwrap();
        let resource = Resource::builder_empty().with_attributes([KeyValue::new("service.name", "checkout")]).build();
        exporter.set_resource(&resource);
        (exporter, resource)
    }

    /// Per batch, the spans of every trace go in one unkeyed record, the request the OTLP
    /// conversion would build of the whole batch.
    #[test]
    fn a_batch_becomes_one_unkeyed_record() {
        let (exporter, resource) = per_batch(Vec::new());
        let http = InstrumentationScope::builder("http").build();
        let kafka_scope = InstrumentationScope::builder("kafka").build();
        let batch = vec![span(1, 1, &http), span(2, 2, &kafka_scope), span(3, 3, &http), span(1, 4, &kafka_scope), span(2, 5, &http)];
        let records = exporter.records(batch.clone());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, None);
        assert_eq!(decoded(&records[0].1), converted(batch, &resource));
    }

    /// A batch that would pass `message.max.bytes` in one record is split: every record fits,
    /// and together they hold each span once, in its scope.
    #[test]
    fn a_batch_past_the_record_size_limit_is_split() {
        let (exporter, resource) = per_batch(vec![("message.max.bytes".into(), "1000".into())]);
        let http = InstrumentationScope::builder("http").build();
        let kafka_scope = InstrumentationScope::builder("kafka").build();
        let batch: Vec<SpanData> = (0..40u8).map(|id| span(id % 7 + 1, id % 6 + 1, if id % 3 == 0 { &kafka_scope } else { &http })).collect();
        let records = exporter.records(batch.clone());
        assert!(records.len() > 1, "{} record(s)", records.len());
        let mut spans = Vec::new();
        for (key, bytes) in &records {
            assert_eq!(*key, None);
            assert!(bytes.len() <= 1000 - RECORD_FRAMING_BYTES, "a record of {} bytes", bytes.len());
            for resource_spans in decoded(bytes).resource_spans {
                assert_eq!(resource_spans.resource, converted(batch.clone(), &resource).resource_spans[0].resource);
                for scope_spans in resource_spans.scope_spans {
                    let scope = scope_spans.scope.unwrap().name;
                    spans.extend(scope_spans.spans.into_iter().map(|span| (scope.clone(), span)));
                }
            }
        }
        let mut expected: Vec<_> = converted(batch, &resource).resource_spans.remove(0).scope_spans.into_iter().flat_map(|scope_spans| {
            let scope = scope_spans.scope.unwrap().name;
            scope_spans.spans.into_iter().map(move |span| (scope.clone(), span))
        }).collect();
        let key = |(scope, span): &(String, opentelemetry_proto::tonic::trace::v1::Span)| (scope.clone(), span.trace_id.clone(), span.span_id.clone(), span.start_time_unix_nano);
        spans.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(spans, expected);
    }

    /// Every record decodes to what opentelemetry-proto's own conversion makes of that trace's
    /// spans, resource and scopes included.
    #[test]
    fn each_trace_becomes_the_request_the_otlp_conversion_would_build() {
        let mut exporter = KafkaSpanExporter::new(&KafkaExport { records: SpanRecords::PerTrace, ..KafkaExport::new("127.0.0.1:1", "otlp_spans") }).unwrap();
        let resource = Resource::builder_empty().with_attributes([KeyValue::new("service.name", "checkout")]).with_schema_url([], "https://opentelemetry.io/schemas/1.26.0").build();
        exporter.set_resource(&resource);
        let http = InstrumentationScope::builder("http").with_version("1.0").build();
        let kafka_scope = InstrumentationScope::builder("kafka").with_schema_url("https://opentelemetry.io/schemas/1.26.0").build();
        let batch = vec![span(1, 1, &http), span(2, 2, &kafka_scope), span(1, 3, &kafka_scope), span(1, 4, &http), span(2, 3, &http), span(2, 6, &http), span(1, 5, &kafka_scope)];
        let mut records = exporter.records(batch.clone());
        records.sort_by_key(|(trace_id, _)| *trace_id);
        assert_eq!(records.iter().map(|(id, _)| id.unwrap()[0]).collect::<Vec<_>>(), vec![1, 2]);
        for (trace_id, bytes) in records {
            let trace_id = trace_id.unwrap();
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
