//! tracepipe traced by itself: spans of a pipeline's own work, exported as OTLP to a topic (by
//! default the one applications publish to), so a deployment can be followed in tracepipe or in
//! any OTLP backend.
//!
//! The pipeline hands the processor one record at a time, so the unit of work is a record: a
//! traced record gets a `process {topic}` span (kind consumer) lasting from handing it to the
//! processor until its outputs are enqueued, and each topic it is published to a `send {topic}`
//! span (kind producer), as the messaging conventions name them. Outputs a processor emits later
//! (the assembler's trace once it is complete, on a tick) get their `send` span then, under the
//! `process` span whose context the processor kept.
//!
//! Which records are traced: the entries (the router, and the OTLP gateway, which publishes past
//! it) start a new trace for a share `ratio` of the records they take in, linked to the producer
//! or request context the record carried, and mark only those outputs sampled; every later
//! processor traces what arrives sampled. So a traced record
//! is followed through the whole pipeline and nothing else is. The spans' own records carry
//! [`SELF_TELEMETRY`]: the entry never traces them, so tracepipe's spans are not traced again.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracepipe_processor::trace_context::TraceContext;

/// The header on tracepipe's own span records, so the entry does not trace them again.
pub const SELF_TELEMETRY: &str = "tracepipe-self-telemetry";

/// W3C trace flags: sampled.
const SAMPLED: u8 = 0x01;

/// Spans are published once this many are waiting, or after [`FLUSH_INTERVAL`].
const FLUSH_SPANS: usize = 256;
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Spans waiting beyond this (the broker is unreachable) are counted and dropped: a pipeline's
/// telemetry must not hold its memory.
const MAX_WAITING_SPANS: usize = 8192;

#[derive(Debug, Clone, PartialEq)]
pub struct SelfTraceSettings {
    /// Where the spans go, as an OTLP protobuf `ExportTraceServiceRequest` per record.
    pub topic: String,
    /// The share of records the entry starts a trace for.
    pub ratio: f64,
    /// Whether this pipeline is where records enter tracepipe (it decides; the others follow).
    pub entry: bool,
}

/// Whether the context says tracepipe traces the work done for it: with self-tracing on, only
/// the contexts the entry chose are sampled.
pub fn is_traced(context: &TraceContext) -> bool {
    context.is_sampled()
}

/// A traced record's work in progress.
pub struct ProcessSpan {
    context: TraceContext,
    parent_span_id: Option<[u8; 8]>,
    link: Option<TraceContext>,
    start: u64,
    started: Instant,
}

impl ProcessSpan {
    /// Now, on the span's clock: its start and the monotonic time since.
    fn end_nanos(&self) -> u64 {
        self.start.saturating_add(self.started.elapsed().as_nanos() as u64)
    }

    /// The context the processor sees (and the assembler keeps) for this record's outputs.
    pub fn context(&self) -> TraceContext {
        self.context
    }
}

/// Builds and batches one pipeline's spans.
pub struct SelfTracer {
    settings: SelfTraceSettings,
    resource: Resource,
    spans: Vec<Span>,
    next_flush: Instant,
    /// The processor's name, the label of its spans in `tracepipe_self_trace_spans_total`.
    processor: String,
}

/// Where a record was read: the `process` span's attributes.
pub struct ReadFrom<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub group: &'a str,
}

impl SelfTracer {
    pub fn new(settings: SelfTraceSettings, processor: &str, instance: &str) -> Self {
        let resource = Resource {
            attributes: vec![
                string("service.name", &format!("tracepipe-{processor}")),
                string("service.namespace", "tracepipe"),
                string("service.version", env!("CARGO_PKG_VERSION")),
                string("service.instance.id", instance),
            ],
            ..Default::default()
        };
        SelfTracer { settings, resource, spans: Vec::new(), next_flush: Instant::now() + FLUSH_INTERVAL, processor: processor.to_string() }
    }

    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    /// Decides whether the record with `parent` (its producer context) and `self_telemetry` (it
    /// holds tracepipe's own spans) is traced; if so, starts its span. Untraced records keep
    /// today's context: a child of the producer's, unsampled at the entry.
    pub fn begin(&self, parent: Option<&TraceContext>, self_telemetry: bool) -> (TraceContext, Option<ProcessSpan>) {
        let mut context = TraceContext::child_of(parent);
        let traced = if self.settings.entry {
            !self_telemetry && fastrand::f64() < self.settings.ratio
        } else {
            parent.is_some_and(is_traced)
        };
        if !traced {
            if self.settings.entry {
                context.flags &= !SAMPLED;
            }
            return (context, None);
        }
        // The entry starts tracepipe's own trace, linked to the record's producer; later
        // processors continue it.
        let (context, parent_span_id, link) = if self.settings.entry {
            let mut root = TraceContext::child_of(None);
            root.flags |= SAMPLED;
            (root, None, parent.copied())
        } else {
            (context, parent.map(|p| p.span_id), None)
        };
        (context, Some(ProcessSpan { context, parent_span_id, link, start: unix_nanos(), started: Instant::now() }))
    }

    /// Ends a record's `process` span: `outputs` records were emitted for it, `failure` is why it
    /// went to the dead-letter topic, if it did.
    pub fn end(&mut self, process: ProcessSpan, read: ReadFrom<'_>, outputs: usize, failure: Option<&str>) {
        let end = process.end_nanos();
        let attributes = vec![
            string("messaging.system", "kafka"),
            string("messaging.operation.type", "process"),
            string("messaging.operation.name", "process"),
            string("messaging.destination.name", read.topic),
            string("messaging.destination.partition.id", &read.partition.to_string()),
            string("messaging.consumer.group.name", read.group),
            int("messaging.kafka.offset", read.offset),
            int("tracepipe.outputs", outputs as i64),
        ];
        let (links, status) = (links_to(process.link), error_status(failure));
        self.push(Span {
            trace_id: process.context.trace_id.to_vec(),
            span_id: process.context.span_id.to_vec(),
            parent_span_id: process.parent_span_id.map(|id| id.to_vec()).unwrap_or_default(),
            name: format!("process {}", read.topic),
            kind: span::SpanKind::Consumer as i32,
            start_time_unix_nano: process.start,
            end_time_unix_nano: end.max(process.start),
            attributes,
            links,
            status,
            flags: 0x100,
            ..Default::default()
        });
    }

    /// The `send {topic}` span, with `context`, under `parent`, for `records` records just
    /// published with that context.
    pub fn send(&mut self, parent: &TraceContext, topic: &str, context: TraceContext, records: usize) {
        let now = unix_nanos();
        self.push(Span {
            trace_id: context.trace_id.to_vec(),
            span_id: context.span_id.to_vec(),
            parent_span_id: parent.span_id.to_vec(),
            name: format!("send {topic}"),
            kind: span::SpanKind::Producer as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now,
            attributes: send_attributes(topic, records),
            flags: 0x100,
            ..Default::default()
        });
    }

    /// Ends the span of a record published by a processor that is not a pipeline (the gateway):
    /// `send {topic}` (kind producer) for `records` records sent with the span's context,
    /// from [`begin`](Self::begin) until Kafka answered, an error if it did not store them.
    pub fn published(&mut self, span: ProcessSpan, topic: &str, records: usize, failure: Option<&str>) {
        let (end, links, status) = (span.end_nanos(), links_to(span.link), error_status(failure));
        self.push(Span {
            trace_id: span.context.trace_id.to_vec(),
            span_id: span.context.span_id.to_vec(),
            parent_span_id: span.parent_span_id.map(|id| id.to_vec()).unwrap_or_default(),
            name: format!("send {topic}"),
            kind: span::SpanKind::Producer as i32,
            start_time_unix_nano: span.start,
            end_time_unix_nano: end.max(span.start),
            attributes: send_attributes(topic, records),
            links,
            status,
            flags: 0x100,
            ..Default::default()
        });
    }

    fn push(&mut self, span: Span) {
        if self.spans.len() >= MAX_WAITING_SPANS {
            count(&self.processor, "dropped", 1);
            return;
        }
        self.spans.push(span);
    }

    /// The spans to publish now, as one OTLP request, and how many, if it is time (or `force`).
    pub fn flush(&mut self, now: Instant, force: bool) -> Option<(Vec<u8>, usize)> {
        if self.spans.is_empty() || !(force || self.spans.len() >= FLUSH_SPANS || now >= self.next_flush) {
            return None;
        }
        self.next_flush = now + FLUSH_INTERVAL;
        let count = self.spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "tracepipe-runtime".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                    spans: std::mem::take(&mut self.spans),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Some((request.encode_to_vec(), count))
    }
}

/// Counts `spans` of `processor`'s own spans as `outcome` (published or dropped).
pub fn count(processor: &str, outcome: &str, spans: usize) {
    crate::metrics::SELF_TRACE_SPANS.with_label_values(&[processor, outcome]).inc_by(spans as u64);
}

/// The headers of a record of tracepipe's own spans: [`SELF_TELEMETRY`], so the entry does not
/// trace it again.
pub fn record_headers() -> rdkafka::message::OwnedHeaders {
    rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(rdkafka::message::Header { key: SELF_TELEMETRY, value: Some("1") })
}

/// A `send` span's attributes, as the messaging conventions name them.
fn send_attributes(topic: &str, records: usize) -> Vec<KeyValue> {
    vec![
        string("messaging.system", "kafka"),
        string("messaging.operation.type", "send"),
        string("messaging.operation.name", "send"),
        string("messaging.destination.name", topic),
        int("messaging.batch.message_count", records as i64),
    ]
}

/// The link to the context a record or request carried into tracepipe, if any.
fn links_to(link: Option<TraceContext>) -> Vec<span::Link> {
    link.map(|link| span::Link { trace_id: link.trace_id.to_vec(), span_id: link.span_id.to_vec(), ..Default::default() }).into_iter().collect()
}

fn error_status(failure: Option<&str>) -> Option<Status> {
    failure.map(|reason| Status { code: status::StatusCode::Error as i32, message: reason.to_string() })
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entry: bool, ratio: f64) -> SelfTraceSettings {
        SelfTraceSettings { topic: "otlp_spans".into(), ratio, entry }
    }

    #[test]
    fn the_entry_decides_later_processors_follow_and_own_spans_are_never_traced() {
        let upstream = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let entry = SelfTracer::new(settings(true, 1.0), "router", "host-1");
        let (context, span) = entry.begin(Some(&upstream), false);
        let span = span.expect("ratio 1 traces every record");
        assert_ne!(context.trace_id, upstream.trace_id, "tracepipe's own trace, linked to the producer");
        assert_eq!(span.link, Some(upstream));
        assert!(is_traced(&context));
        let (context, span) = entry.begin(Some(&upstream), true);
        assert!(span.is_none() && !is_traced(&context), "its own spans are not traced again");
        let (context, span) = SelfTracer::new(settings(true, 0.0), "router", "host-1").begin(Some(&upstream), false);
        assert!(span.is_none() && !is_traced(&context), "an untraced record's outputs are unsampled, whatever the application sampled");
        assert_eq!(context.trace_id, upstream.trace_id, "and continue the producer's trace as before");

        let later = SelfTracer::new(settings(false, 0.0), "assembler", "host-1");
        let traced = TraceContext { flags: SAMPLED, ..upstream };
        let (context, span) = later.begin(Some(&traced), false);
        assert_eq!(span.unwrap().parent_span_id, Some(traced.span_id));
        assert_eq!(context.trace_id, traced.trace_id);
        let untraced = TraceContext { flags: 0, ..upstream };
        assert!(later.begin(Some(&untraced), false).1.is_none());
        assert!(later.begin(None, false).1.is_none());
    }

    #[test]
    fn spans_are_published_as_one_otlp_request_with_the_pipeline_as_service() {
        let mut tracer = SelfTracer::new(settings(true, 1.0), "router", "host-1");
        let (_, span) = tracer.begin(None, false);
        let process = span.unwrap();
        let context = process.context();
        tracer.end(process, ReadFrom { topic: "otlp_spans", partition: 3, offset: 42, group: "tracepipe-router" }, 2, Some("bad record"));
        tracer.send(&context, "tracepipe.spans", TraceContext::child_of(Some(&context)), 2);
        assert!(tracer.flush(Instant::now(), false).is_none(), "not yet due");
        let (payload, count) = tracer.flush(Instant::now(), true).unwrap();
        assert_eq!(count, 2);
        let request = ExportTraceServiceRequest::decode(payload.as_slice()).unwrap();
        let resource = &request.resource_spans[0];
        let service = resource.resource.as_ref().unwrap().attributes.iter().find(|kv| kv.key == "service.name").unwrap();
        assert_eq!(service.value.as_ref().unwrap().value, Some(any_value::Value::StringValue("tracepipe-router".into())));
        let spans = &resource.scope_spans[0].spans;
        assert_eq!(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["process otlp_spans", "send tracepipe.spans"]);
        assert_eq!(spans[0].kind, span::SpanKind::Consumer as i32);
        assert_eq!(spans[0].status.as_ref().unwrap().message, "bad record");
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[1].trace_id, spans[0].trace_id);
        assert!(tracer.flush(Instant::now(), true).is_none(), "nothing left");
    }
}
