//! Under [`tracepipe_instrument::init`]'s parent-based sampling, a request whose caller did not
//! sample it makes no spans of the library's: each hop carries the caller's context on
//! unchanged, still marked unsampled; a sampled caller's request gets spans of its own.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage, Timestamp};
use tower_service::Service;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The context the handler ran in, and the `traceparent` a record sent from it carried.
fn serve(flags: &str) -> (SpanContext, String) {
    static TELEMETRY: std::sync::OnceLock<tracepipe_instrument::Telemetry> = std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| tracepipe_instrument::init(tracepipe_instrument::Config::new("unsampled").filter("off")).expect("telemetry"));

    let seen = Arc::new(Mutex::new(None));
    let seen_in_handler = seen.clone();
    let mut service = tower_layer::Layer::layer(
        &tracepipe_instrument::http::TraceLayer,
        tower::service_fn(move |_request: http::Request<()>| {
            let seen = seen_in_handler.clone();
            async move {
                let current = opentelemetry::Context::current().span().span_context().clone();
                let producer = tracepipe_instrument::kafka::producer_span("orders.placed");
                let headers = tracepipe_instrument::kafka::inject(&producer, OwnedHeaders::new());
                let traceparent = headers.iter().find(|h| h.key == "traceparent").and_then(|h| h.value).map(|v| String::from_utf8(v.to_vec()).unwrap());
                *seen.lock().unwrap() = Some((current, traceparent.expect("a traceparent was sent")));
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }),
    );
    let request = http::Request::post("/orders").header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}")).body(()).unwrap();
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(service.call(request)).unwrap();
    let seen = seen.lock().unwrap().take().expect("the handler ran");
    seen
}

#[test]
fn an_unsampled_caller_s_context_crosses_each_hop_unchanged() {
    let (current, traceparent) = serve("00");
    assert_eq!(current.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(current.span_id().to_string(), CALLER_SPAN, "no server span was made");
    assert!(!current.is_sampled());
    assert_eq!(traceparent, format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00"), "no producer span was made either");

    let record = OwnedMessage::new(Some(b"{}".to_vec()), None, "orders.placed".into(), Timestamp::NotAvailable, 0, 7, Some(OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(traceparent.as_bytes()) })));
    let consumer = tracepipe_instrument::kafka::consumer_span(&record);
    let consumed = consumer.span().span_context().clone();
    assert_eq!((consumed.trace_id().to_string(), consumed.span_id().to_string()), (CALLER_TRACE.to_string(), CALLER_SPAN.to_string()));
    assert!(!consumed.is_sampled() && !consumer.span().is_recording());
}

#[test]
fn a_sampled_caller_s_request_gets_spans_of_its_own() {
    let (current, traceparent) = serve("01");
    assert_eq!(current.trace_id().to_string(), CALLER_TRACE);
    assert_ne!(current.span_id().to_string(), CALLER_SPAN, "the server span is the handler's context");
    assert!(current.is_sampled());
    let sent_span = traceparent.split('-').nth(2).unwrap();
    assert!(traceparent.starts_with(&format!("00-{CALLER_TRACE}-")) && traceparent.ends_with("-01"), "{traceparent}");
    assert_ne!(sent_span, current.span_id().to_string(), "the producer span is the record's parent");
    assert_ne!(sent_span, CALLER_SPAN);
}

/// A sampler that records every span without sampling it, as another provider in the process
/// might.
#[derive(Debug, Clone)]
struct RecordOnly;

impl opentelemetry_sdk::trace::ShouldSample for RecordOnly {
    fn should_sample(
        &self,
        _parent: Option<&opentelemetry::Context>,
        _trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        _kind: &opentelemetry::trace::SpanKind,
        _attributes: &[opentelemetry::KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        opentelemetry_sdk::trace::SamplingResult { decision: opentelemetry_sdk::trace::SamplingDecision::RecordOnly, attributes: Vec::new(), trace_state: Default::default() }
    }
}

#[test]
fn a_recording_unsampled_parent_is_never_handed_out_as_a_child_s_span() {
    serve("00");
    let other = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_sampler(RecordOnly).build();
    let parent = opentelemetry::trace::Tracer::start(&opentelemetry::trace::TracerProvider::tracer(&other, "other"), "recording, not sampled");
    let _attached = opentelemetry::Context::current_with_span(parent).attach();
    let parent_context = opentelemetry::Context::current().span().span_context().clone();
    assert!(!parent_context.is_sampled() && opentelemetry::Context::current().span().is_recording());

    let producer = tracepipe_instrument::kafka::producer_span("orders.placed");
    assert_ne!(producer.span().span_context().span_id(), parent_context.span_id(), "the producer has a span of its own");
    producer.span().end();
    assert!(opentelemetry::Context::current().span().is_recording(), "the parent was not ended by its child");
}
