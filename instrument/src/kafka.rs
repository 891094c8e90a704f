//! Trace context across Kafka, per the OpenTelemetry messaging conventions: a PRODUCER span per
//! record sent, whose context goes into the record's headers; a CONSUMER span per record
//! processed, which continues the producer's trace and links to the producer span, so tools that
//! follow either parents or links see the hop.
//!
//! ```no_run
//! # use rdkafka::producer::FutureRecord;
//! # use rdkafka::message::OwnedHeaders;
//! let span = tracepipe_instrument::kafka::producer_span("orders");
//! let headers = tracepipe_instrument::kafka::inject(&span, OwnedHeaders::new());
//! let record = FutureRecord::to("orders").key("42").payload("{}").headers(headers);
//! // producer.send(record, timeout).instrument(span).await
//! # let _ = record;
//! ```

use opentelemetry::trace::TraceContextExt;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{extract_kafka, inject_kafka};

/// A PRODUCER span for sending to `topic`, a child of the current span.
pub fn producer_span(topic: &str) -> tracing::Span {
    tracing::info_span!(
        "kafka.send",
        otel.name = %format!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %topic,
    )
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
    );
    let producer = extract_kafka(message.headers());
    let producer_span = producer.span().span_context().clone();
    if producer_span.is_valid() {
        span.add_link(producer_span);
        let _ = span.set_parent(producer);
    }
    span
}
