//! Publishing records for a caller that answers someone only once Kafka has them: the OTLP
//! gateway acknowledges an export request after every record derived from it is acknowledged by
//! the broker, and tells the client to retry otherwise.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::metrics;
use crate::self_trace::{self, SelfTraceSettings, SelfTracer};
use tracepipe_processor::trace_context::{TraceContext, TRACEPARENT};
use crate::KafkaSettings;

/// Why a set of records is not (known to be) stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer's queue is full: the broker is slower than the callers. Retry later.
    #[error("the producer queue is full")]
    QueueFull,
    /// A record was not acknowledged (broker down, timeout, authorization, …).
    #[error("not acknowledged by Kafka: {0}")]
    NotAcknowledged(KafkaError),
    /// The record can never be stored as it is (e.g. over `message.max.bytes`).
    #[error("refused by the producer: {0}")]
    Refused(KafkaError),
}

impl PublishError {
    /// Whether sending the same records again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PublishError::Refused(_))
    }
}

/// Whether the broker refused a record for what it is (too large, or a record it will not take),
/// so that sending it again can never succeed. Everything else (the broker down, a timeout, a
/// leader moving, a corrupted transfer, an authorization an operator can still grant) may pass
/// later.
pub(crate) fn refuses_for_good(error: &KafkaError) -> bool {
    matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord))
}

/// One producer for one topic, shared by every request (it is `Sync`).
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    name: &'static str,
    /// With self-tracing on, the publisher is an entry: it chooses the requests tracepipe follows.
    tracer: Option<Mutex<SelfTracer>>,
}

impl Publisher {
    /// `ack_timeout` bounds how long a record may wait for the broker (librdkafka's
    /// `message.timeout.ms`), so a caller is answered within it even when Kafka is down, unless
    /// the producer settings give `message.timeout.ms` or `delivery.timeout.ms` themselves.
    pub fn new(kafka: &KafkaSettings, name: &'static str, topic: impl Into<String>, ack_timeout: Duration) -> Result<Publisher, KafkaError> {
        let mut config = kafka.producer_config(name);
        if !kafka.sets_producer("message.timeout.ms") {
            config.set("message.timeout.ms", ack_timeout.as_millis().max(1).to_string());
        }
        let producer: FutureProducer = config.create()?;
        Ok(Publisher { producer, topic: topic.into(), name, tracer: None })
    }

    /// With `settings` (an entry's), tracepipe's own tracing starts here for a share of the
    /// published sets (a `send {topic}` span each, the records carrying its context), and the
    /// other records' contexts are unsampled, so later processors follow only the chosen (see
    /// [`crate::self_trace`]). `instance` names this process in the spans' resource.
    pub fn self_traced(mut self, settings: Option<SelfTraceSettings>, instance: &str) -> Self {
        self.tracer = settings.map(|settings| Mutex::new(SelfTracer::new(settings, self.name, instance)));
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every `(key, value)`, each with a `traceparent` header continuing `parent` (the
    /// caller's request context, if it had one), and resolves once all are acknowledged, or with the first
    /// failure. Records enqueued before a failure may still be stored: the caller's retry then
    /// duplicates them, which downstream deduplicates by span id.
    pub async fn publish_all<'a>(&self, parent: Option<&[u8]>, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<(), PublishError> {
        let parent = parent.and_then(TraceContext::parse);
        let (context, own_span) = match &self.tracer {
            Some(tracer) => tracer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).begin(parent.as_ref(), false),
            None => (TraceContext::child_of(parent.as_ref()), None),
        };
        let mut sent = 0usize;
        let outcome = self.send_all(&context.to_header(), records, &mut sent).await;
        if let (Some(tracer), Some(span)) = (&self.tracer, own_span) {
            let failure = outcome.as_ref().err().map(ToString::to_string);
            let mut tracer = tracer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            tracer.published(span, &self.topic, sent, failure.as_deref());
            self.publish_own_spans(&mut tracer, false);
        }
        outcome
    }

    /// Publishes the own spans waiting for a second or more: called every second, so they do not
    /// wait for the next request when traffic stops.
    pub fn publish_own_spans_due(&self) {
        if let Some(tracer) = &self.tracer {
            self.publish_own_spans(&mut tracer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()), false);
        }
    }

    /// Publishes tracepipe's own spans if it is time (or `force`): unkeyed, with the header that
    /// keeps the router from tracing them again; counted published or dropped once Kafka answers.
    fn publish_own_spans(&self, tracer: &mut SelfTracer, force: bool) {
        let Some((payload, spans)) = tracer.flush(Instant::now(), force) else { return };
        let record = FutureRecord::<[u8], [u8]>::to(tracer.topic()).payload(payload.as_slice()).headers(self_trace::record_headers());
        let name = self.name;
        match self.producer.send_result(record) {
            Ok(delivery) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move { self_trace::count(name, if matches!(delivery.await, Ok(Ok(_))) { "published" } else { "dropped" }, spans) });
                }
                // At shutdown, outside the runtime: flush() waits for it; counted as sent.
                Err(_) => self_trace::count(name, "published", spans),
            },
            Err((error, _)) => {
                tracing::debug!(processor = name, %error, "own spans not published");
                self_trace::count(name, "dropped", spans);
            }
        }
    }

    async fn send_all<'a>(&self, context: &str, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, sent: &mut usize) -> Result<(), PublishError> {
        let mut deliveries = Vec::new();
        let mut bytes = 0u64;
        for (key, value) in records {
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(context) });
            let record = FutureRecord::to(&self.topic).key(key).payload(value).headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(PublishError::QueueFull),
                Err((error, _)) => return Err(PublishError::Refused(error)),
            }
            bytes += value.len() as u64;
        }
        let count = deliveries.len() as u64;
        *sent = deliveries.len();
        // Every record is in flight already; awaiting them in order costs no more than the slowest.
        let mut acknowledged = Ok(());
        for delivery in deliveries {
            let failed = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => error,
                Err(_canceled) => KafkaError::Canceled,
            };
            acknowledged = Err(if refuses_for_good(&failed) { PublishError::Refused(failed) } else { PublishError::NotAcknowledged(failed) });
            break;
        }
        match acknowledged {
            Ok(()) => {
                metrics::PRODUCED.with_label_values(&[self.name, &self.topic]).inc_by(count);
                metrics::PRODUCED_SIZE.with_label_values(&[self.name, &self.topic]).inc_by(bytes);
                Ok(())
            }
            Err(error) => {
                metrics::DELIVERY_FAILED.with_label_values(&[self.name, &self.topic]).inc();
                Err(error)
            }
        }
    }

    /// Waits up to `timeout` for what is still queued; used at shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Some(tracer) = &self.tracer {
            self.publish_own_spans(&mut tracer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()), true);
        }
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, topic = %self.topic, "records still queued at shutdown");
        }
    }
}
