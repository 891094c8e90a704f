//! Trace context across Kafka, per the OpenTelemetry messaging conventions: a PRODUCER span per
//! record sent, whose context goes into the record's headers; a CONSUMER span per record
//! processed, which continues the producer's trace and links to the producer span, so tools that
//! follow either parents or links see the hop.
//!
//! ```no_run
//! # async fn example(producer: rdkafka::producer::FutureProducer) {
//! use rdkafka::producer::FutureRecord;
//! let record = FutureRecord::to("orders").key("42").payload("{}");
//! let delivered = tracepipe_instrument::kafka::send(&producer, record, std::time::Duration::from_secs(5)).await;
//! # let _ = delivered;
//! # }
//! ```
//!
//! [`producer_span`], [`inject`] and [`record_delivery`] do the same by parts, for other producers.

use opentelemetry::trace::TraceContextExt;
use rdkafka::message::{Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::util::Timeout;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{extract_kafka, inject_kafka};

/// A PRODUCER span for sending to `topic`, a child of the current span. The key and where Kafka
/// stored the record can be added with [`record_key`] and [`record_delivery`]; [`send`] does all
/// of it.
pub fn producer_span(topic: &str) -> tracing::Span {
    tracing::info_span!(
        "kafka.send",
        otel.name = %format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %topic,
        messaging.kafka.message.key = Empty,
        messaging.message.body.size = Empty,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        error.type = Empty,
    )
}

/// Records the record's key on a producer or consumer span, when it is text (as the conventions
/// ask: binary keys are left out).
pub fn record_key(span: &tracing::Span, key: &[u8]) {
    if let Ok(key) = std::str::from_utf8(key) {
        span.record("messaging.kafka.message.key", key);
    }
}

/// Records on a producer span where Kafka stored the record.
pub fn record_delivery(span: &tracing::Span, partition: i32, offset: i64) {
    span.record("messaging.destination.partition.id", partition.to_string());
    span.record("messaging.kafka.offset", offset);
}

/// Sends `record` inside a PRODUCER span (a child of the current span): the span's context goes
/// into the record's headers, with its key and size, and where Kafka stored it or why it did
/// not, on the span.
pub async fn send<K, P>(producer: &FutureProducer, record: FutureRecord<'_, K, P>, queue_timeout: impl Into<Timeout>) -> OwnedDeliveryResult
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let span = producer_span(record.topic);
    if let Some(key) = record.key {
        record_key(&span, key.to_bytes());
    }
    if let Some(payload) = record.payload {
        span.record("messaging.message.body.size", payload.to_bytes().len());
    }
    let mut record = record;
    let headers = inject(&span, record.headers.take().unwrap_or_else(OwnedHeaders::new));
    let result = producer.send(record.headers(headers), queue_timeout).instrument(span.clone()).await;
    match &result {
        Ok(delivery) => record_delivery(&span, delivery.partition, delivery.offset),
        Err((error, _)) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.rdkafka_error_code().map_or_else(|| error.to_string(), |code| format!("{code:?}")));
        }
    }
    result
}

/// `headers` with the context of `span` added (`traceparent`, `tracestate`).
pub fn inject(span: &tracing::Span, headers: OwnedHeaders) -> OwnedHeaders {
    inject_kafka(&span.context(), headers)
}

/// A CONSUMER span for processing `message`: child of the producer's context from its headers,
/// and linked to it. Run the processing inside it (`.instrument(span)` or `span.in_scope`).
pub fn consumer_span<M: Message>(message: &M) -> tracing::Span
where
    M::Headers: Headers,
{
    consumer_span_in_group(message, None)
}

/// [`consumer_span`], naming the consumer group (`messaging.consumer.group.name`).
pub fn consumer_span_in_group<M: Message>(message: &M, group: Option<&str>) -> tracing::Span
where
    M::Headers: Headers,
{
    let topic = message.topic();
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = %format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = %message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.consumer.group.name = group,
        messaging.message.body.size = message.payload().map_or(0, <[u8]>::len),
        messaging.kafka.message.key = Empty,
        messaging.kafka.message.tombstone = message.payload().is_none().then_some(true),
    );
    if let Some(key) = message.key() {
        record_key(&span, key);
    }
    let producer = extract_kafka(message.headers());
    let producer_span = producer.span().span_context().clone();
    if producer_span.is_valid() {
        span.add_link(producer_span);
        let _ = span.set_parent(producer);
    }
    span
}
