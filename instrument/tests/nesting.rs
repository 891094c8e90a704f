//! The library's spans and the service's own `tracing` spans make one tree: a `tracing` span
//! inside a request is the server span's child, a producer span made inside that `tracing` span
//! is its child, and a consumer span continues the producer's trace from the record's headers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use rdkafka::message::{OwnedMessage, Timestamp};
use tower_service::Service;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn library_and_tracing_spans_nest_across_http_and_kafka() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(collected.clone()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("service")));
    let _default = tracing::subscriber::set_default(subscriber);

    let record_headers = Arc::new(Mutex::new(None));
    let headers_out = record_headers.clone();
    let mut service = tower_layer::Layer::layer(
        &tracepipe_instrument::http::TraceLayer,
        tower::service_fn(move |_request: http::Request<()>| {
            let headers_out = headers_out.clone();
            async move {
                let span = tracing::info_span!("load cart");
                let _entered = span.enter();
                let producer = tracepipe_instrument::kafka::producer_span("orders.placed");
                *headers_out.lock().unwrap() = Some(tracepipe_instrument::kafka::inject(&producer, rdkafka::message::OwnedHeaders::new()));
                tracepipe_instrument::kafka::record_delivery(&producer, 1, 7);
                producer.span().end();
                Ok::<_, Infallible>(http::Response::builder().status(503).body(()).unwrap())
            }
        }),
    );
    let request = http::Request::post("/orders").header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")).body(()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let response = runtime.block_on(service.call(request)).unwrap();
    assert_eq!(response.status(), 503);

    let headers = record_headers.lock().unwrap().take().expect("the producer ran");
    let message = OwnedMessage::new(Some(b"{}".to_vec()), Some(b"42".to_vec()), "orders.placed".into(), Timestamp::NotAvailable, 1, 7, Some(headers));
    drop(tracepipe_instrument::kafka::consumer_span_in_group(&message, Some("billing")).attach());
    // A record whose context is garbage and whose key is not text: a trace of its own, no link.
    let garbage = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header { key: "traceparent", value: Some("00-zz-not-a-context-01") });
    let stray = OwnedMessage::new(Some(b"{}".to_vec()), Some(vec![0xff, 0xfe]), "orders.failed".into(), Timestamp::NotAvailable, 0, 3, Some(garbage));
    drop(tracepipe_instrument::kafka::consumer_span(&stray));
    provider.force_flush().unwrap();

    let spans = collected.0.lock().unwrap().clone();
    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name} in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())).clone();
    let (server, cart, producer, consumer) = (find("POST"), find("load cart"), find("send orders.placed"), find("process orders.placed"));
    let caller_trace = TraceId::from_hex(CALLER_TRACE).unwrap();
    for span in [&server, &cart, &producer, &consumer] {
        assert_eq!(span.span_context.trace_id(), caller_trace, "{} continues the caller's trace", span.name);
    }
    assert_eq!(server.parent_span_id, SpanId::from_hex(CALLER_SPAN).unwrap());
    assert!(server.parent_span_is_remote);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert!(matches!(server.status, opentelemetry::trace::Status::Error { .. }), "a 5xx is a server error");
    let attribute = |span: &SpanData, key: &str| span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string());
    assert_eq!(attribute(&server, "http.response.status_code").as_deref(), Some("503"));
    assert_eq!(attribute(&server, "url.path").as_deref(), Some("/orders"));
    assert_eq!(cart.parent_span_id, server.span_context.span_id(), "a tracing span inside the request is the server span's child");
    assert_eq!(producer.parent_span_id, cart.span_context.span_id(), "a producer span inside a tracing span is its child");
    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(attribute(&producer, "messaging.kafka.offset").as_deref(), Some("7"));
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id(), "the consumer continues the producer's context");
    assert_eq!(consumer.span_kind, SpanKind::Consumer);
    assert_eq!(consumer.links.links.iter().map(|l| l.span_context.span_id()).collect::<Vec<_>>(), vec![producer.span_context.span_id()]);
    assert_eq!(attribute(&consumer, "messaging.consumer.group.name").as_deref(), Some("billing"));
    assert_eq!(attribute(&consumer, "messaging.kafka.message.key").as_deref(), Some("42"));
    let stray = find("process orders.failed");
    assert_ne!(stray.span_context.trace_id(), caller_trace, "an unreadable context starts a trace of its own");
    assert_eq!(stray.parent_span_id, SpanId::INVALID);
    assert!(stray.links.links.is_empty());
    assert_eq!(attribute(&stray, "messaging.kafka.message.key"), None, "a binary key is left out");
}
