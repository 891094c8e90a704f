//! Publishing records for a caller that answers someone only once Kafka has them: the OTLP
//! gateway acknowledges an export request after every record derived from it is acknowledged by
//! the broker, and tells the client to retry otherwise.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::metrics;
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
        Ok(Publisher { producer, topic: topic.into(), name })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every `(key, value)`, each with a `traceparent` header continuing `parent` (the
    /// caller's request context, if it had one), and resolves once all are acknowledged, or with the first
    /// failure. Records enqueued before a failure may still be stored: the caller's retry then
    /// duplicates them, which downstream deduplicates by span id.
    pub async fn publish_all<'a>(&self, parent: Option<&[u8]>, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<(), PublishError> {
        let context = TraceContext::child_of(parent.and_then(TraceContext::parse).as_ref()).to_header();
        let mut deliveries = Vec::new();
        let mut bytes = 0u64;
        for (key, value) in records {
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(&context) });
            let record = FutureRecord::to(&self.topic).key(key).payload(value).headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(PublishError::QueueFull),
                Err((error, _)) => return Err(PublishError::Refused(error)),
            }
            bytes += value.len() as u64;
        }
        let count = deliveries.len() as u64;
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
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, topic = %self.topic, "records still queued at shutdown");
        }
    }
}
