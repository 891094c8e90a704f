//! What tracing costs on a request's own path, in process: the spans the example shop's frontend
//! makes for one `GET /checkout` (a server span continuing the caller's context, a consumer span
//! linked to a producer, a child span inside it) and the
//! orders service's producer span, with `init`'s subscriber and the Kafka exporter sending to an
//! in-process broker; beside them, what one `tracing` span costs through `tracing-opentelemetry`
//! and one span straight from the SDK's tracer. The export itself runs on the SDK's thread and
//! is not timed here; the example shop's bench (`benches/instrumentation.rs`) counts every
//! thread.

use std::convert::Infallible;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::mocking::MockCluster;
use tower_service::Service;
use tracepipe_instrument::{http::TraceLayer, kafka, Config};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn spans(c: &mut Criterion) {
    let cluster = MockCluster::new(1).expect("in-process broker");
    cluster.create_topic("otlp_spans", 4, 1).expect("topic");
    let telemetry = tracepipe_instrument::init(Config::new("bench").kafka(cluster.bootstrap_servers(), "otlp_spans").filter("warn")).expect("telemetry");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let handler = tower_layer::Layer::layer(&TraceLayer, tower::service_fn(|_request: http::Request<()>| async {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    c.bench_function("server span (TraceLayer, remote parent, two polls)", |b| {
        b.iter(|| {
            let request = http::Request::get("/checkout/42").header("traceparent", TRACEPARENT).body(()).unwrap();
            runtime.block_on(handler.clone().call(request)).unwrap()
        })
    });

    c.bench_function("producer span (send, key, inject, delivery)", |b| {
        b.iter(|| {
            let context = kafka::producer_span("orders.placed");
            kafka::record_key(&context, b"42-1234");
            let headers = kafka::inject(&context, OwnedHeaders::new());
            runtime.block_on(async { tokio::task::yield_now().await }.with_context(context.clone()));
            kafka::record_delivery(&context, 2, 1_000);
            context.span().end();
            headers
        })
    });

    let message = OwnedMessage::new(
        Some(b"{}".to_vec()),
        Some(b"42-1234".to_vec()),
        "orders.placed".into(),
        Timestamp::CreateTime(1_764_000_000_000),
        2,
        1_000,
        Some(OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(TRACEPARENT) })),
    );
    c.bench_function("consumer span with a child (linked to the producer)", |b| {
        b.iter(|| {
            let _consumer = kafka::consumer_span_in_group(&message, Some("shop-frontend")).attach();
            let _confirm = tracing::info_span!("confirm order", order.id = "42-1234").entered();
        })
    });
    c.bench_function("tracing span through tracing-opentelemetry (four fields, two polls)", |b| {
        b.iter(|| {
            let span = tracing::info_span!("send orders.placed", otel.kind = "producer", messaging.system = "kafka", messaging.destination.name = "orders.placed", messaging.kafka.offset = 1_000);
            runtime.block_on(async { tokio::task::yield_now().await }.instrument(span))
        })
    });

    let tracer = opentelemetry::trace::TracerProvider::tracer(telemetry.provider(), "bench");
    c.bench_function("SDK span straight from the tracer (server kind, five attributes)", |b| {
        use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
        use opentelemetry::KeyValue;
        b.iter(|| {
            let parent = tracepipe_instrument::propagation::extract_http(&{
                let mut headers = http::HeaderMap::new();
                headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
                headers
            });
            let mut span = tracer
                .span_builder("GET /checkout/{item}")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.request.method", "GET"),
                    KeyValue::new("http.route", "/checkout/{item}"),
                    KeyValue::new("url.path", "/checkout/42".to_string()),
                ])
                .start_with_context(&tracer, &parent);
            span.set_attribute(KeyValue::new("http.response.status_code", 200));
            let cx = parent.with_span(span);
            cx.span().end();
        })
    });
    std::thread::sleep(Duration::from_millis(600));
}

criterion_group!(benches, spans);
criterion_main!(benches);
