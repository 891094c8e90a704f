//! Trace context across Kafka, per the OpenTelemetry messaging conventions: a PRODUCER span per
//! record sent, whose context goes into the record's headers; a CONSUMER span per record
//! processed, which continues the producer's trace and links to the producer span, so tools that
//! follow either parents or links see the hop.
//!
//! Each span comes as an `opentelemetry::Context` holding it as the current span: attach it
//! while the work runs (`let _attached = context.attach()`, or `.with_context(context)` on a
//! future) and the `tracing` spans made inside are its children. The span ends when it is ended
//! (`context.span().end()`) or when the last copy of its context is dropped. Under
//! [`crate::init`]'s parent-based sampling, a record sent or processed under a parent that was
//! not sampled gets no span: the context handed back is that parent's, which records nothing,
//! and the record still carries it onward.
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
//! ```no_run
//! # fn example(message: rdkafka::message::BorrowedMessage<'_>) {
//! let context = tracepipe_instrument::kafka::consumer_span_in_group(&message, Some("billing"));
//! let _attached = context.attach();
//! tracing::info!("processing"); // an event on the consumer span
//! # }
//! ```
//!
//! [`producer_span`], [`inject`] and [`record_delivery`] do what [`send`] does by parts, for
//! other producers.

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use rdkafka::message::{Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::propagation::{extract_kafka, inject_kafka};
use crate::tracer::{joined, parent_unsampled, start_span};

fn system() -> KeyValue {
    KeyValue::new("messaging.system", "kafka")
}

/// A started PRODUCER span for sending to `topic`, a child of the current context. The key and
/// where Kafka stored the record can be added with [`record_key`] and [`record_delivery`];
/// [`send`] does all of it.
pub fn producer_span(topic: &str) -> Context {
    let parent = Context::current();
    if parent_unsampled(&parent) {
        return parent;
    }
    let attributes = vec![
        system(),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "send"),
        KeyValue::new("messaging.destination.name", joined(&[topic])),
    ];
    start_span(joined(&["send", topic]), SpanKind::Producer, attributes, Vec::new(), parent)
}

/// Records the record's key on a producer or consumer span, when it is text (as the conventions
/// ask: binary keys are left out).
pub fn record_key(context: &Context, key: &[u8]) {
    if let Some(key) = key_attribute(key) {
        context.span().set_attribute(key);
    }
}

/// `messaging.kafka.message.key` for a key that is text.
fn key_attribute(key: &[u8]) -> Option<KeyValue> {
    std::str::from_utf8(key).ok().map(|key| KeyValue::new("messaging.kafka.message.key", key.to_string()))
}

/// A partition number as the conventions' string id; the numbers a topic has are few, so each
/// is made once.
fn partition_id(partition: i32) -> std::borrow::Cow<'static, str> {
    joined(&[itoa::Buffer::new().format(partition)])
}

/// Records on a producer span where Kafka stored the record.
pub fn record_delivery(context: &Context, partition: i32, offset: i64) {
    let span = context.span();
    span.set_attribute(KeyValue::new("messaging.destination.partition.id", partition_id(partition)));
    span.set_attribute(KeyValue::new("messaging.kafka.offset", offset));
}

/// Sends `record` inside a PRODUCER span (a child of the current context): the span's context
/// goes into the record's headers, with its key and size, and where Kafka stored it or why it
/// did not, on the span, which ends when Kafka has answered.
pub async fn send<K, P>(producer: &FutureProducer, record: FutureRecord<'_, K, P>, queue_timeout: impl Into<Timeout>) -> OwnedDeliveryResult
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let context = producer_span(record.topic);
    let recording = context.span().is_recording();
    if let Some(key) = record.key.filter(|_| recording) {
        record_key(&context, key.to_bytes());
    }
    if let Some(payload) = record.payload.filter(|_| recording) {
        context.span().set_attribute(KeyValue::new("messaging.message.body.size", payload.to_bytes().len() as i64));
    }
    let mut record = record;
    let headers = inject(&context, record.headers.take().unwrap_or_default());
    let result = producer.send(record.headers(headers), queue_timeout).with_context(context.clone()).await;
    if !recording {
        return result;
    }
    match &result {
        Ok(delivery) => record_delivery(&context, delivery.partition, delivery.offset),
        Err((error, _)) => {
            let span = context.span();
            span.set_attribute(KeyValue::new("error.type", error.rdkafka_error_code().map_or_else(|| error.to_string(), |code| format!("{code:?}"))));
            span.set_status(Status::error(error.to_string()));
        }
    }
    context.span().end();
    result
}

/// `headers` with the trace context of `context` added (`traceparent`, `tracestate`).
pub fn inject(context: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    inject_kafka(context, headers)
}

/// A started CONSUMER span for processing `message`: a child of the producer's context from its
/// headers, and linked to it; with no context in the headers, a child of the current context.
pub fn consumer_span<M: Message>(message: &M) -> Context
where
    M::Headers: Headers,
{
    consumer_span_in_group(message, None)
}

/// [`consumer_span`], naming the consumer group (`messaging.consumer.group.name`).
pub fn consumer_span_in_group<M: Message>(message: &M, group: Option<&str>) -> Context
where
    M::Headers: Headers,
{
    let producer = extract_kafka(message.headers());
    let linked = producer.span().span_context().is_valid();
    let parent = if linked { producer } else { Context::current() };
    if parent_unsampled(&parent) {
        return parent;
    }
    // When linked, the parent is the producer's context.
    let links = if linked { vec![Link::with_context(parent.span().span_context().clone())] } else { Vec::new() };
    let topic = message.topic();
    let mut attributes = Vec::with_capacity(11);
    attributes.extend([
        system(),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.destination.name", joined(&[topic])),
        KeyValue::new("messaging.destination.partition.id", partition_id(message.partition())),
        KeyValue::new("messaging.kafka.offset", message.offset()),
        KeyValue::new("messaging.message.body.size", message.payload().map_or(0, <[u8]>::len) as i64),
    ]);
    if let Some(group) = group {
        attributes.push(KeyValue::new("messaging.consumer.group.name", group.to_string()));
    }
    attributes.extend(message.key().and_then(key_attribute));
    if message.payload().is_none() {
        attributes.push(KeyValue::new("messaging.kafka.message.tombstone", true));
    }
    start_span(joined(&["process", topic]), SpanKind::Consumer, attributes, links, parent)
}
