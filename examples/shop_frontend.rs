//! The frontend of the example shop: `GET /checkout/{item}` calls the orders service over HTTP;
//! the orders service's `orders.placed` event comes back over Kafka and is processed here, in the
//! same trace (a consumer span continuing the producer's context and linked to it). In the
//! reference profile (`SHOP_PROFILE=reference`) it answers a checkout page's JSON made from the
//! priced order (examples/shop/work.rs); in the thin one, what the orders service answered.
//!
//!     KAFKA_BROKERS=127.0.0.1:9092 ORDERS_URL=http://127.0.0.1:8081 PORT=8080 cargo run --example shop_frontend

#[path = "shop/common.rs"]
mod common;
#[path = "shop/work.rs"]
mod work;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use reqwest_middleware::ClientWithMiddleware;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use common::{Instrumentation, Profile, Settings};

struct Frontend {
    http: ClientWithMiddleware,
    orders_url: String,
    instrumentation: Instrumentation,
    profile: Profile,
}

async fn call_orders(frontend: &Frontend, item: String) -> Result<String, (StatusCode, String)> {
    let url = format!("{}/orders", frontend.orders_url);
    let mut request = frontend.http.post(&url).body(item).build().map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let span = match frontend.instrumentation {
        Instrumentation::Standard => {
            let (host, port) = (request.url().host_str().unwrap_or_default().to_string(), request.url().port_or_known_default().unwrap_or_default());
            let span = tracing::info_span!(
                "POST",
                otel.kind = "client",
                http.request.method = "POST",
                server.address = %host,
                server.port = port,
                url.full = %url,
                http.response.status_code = tracing::field::Empty,
            );
            common::standard::inject_http(&span, request.headers_mut());
            span
        }
        _ => tracing::Span::none(),
    };
    let response = frontend.http.execute(request).instrument(span.clone()).await.map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    span.record("http.response.status_code", response.status().as_u16());
    if !response.status().is_success() {
        return Err((StatusCode::BAD_GATEWAY, format!("orders answered {}", response.status())));
    }
    response.text().await.map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))
}

async fn checkout(State(frontend): State<Arc<Frontend>>, Path(item): Path<String>) -> Result<String, (StatusCode, String)> {
    let answer = call_orders(&frontend, item).await?;
    match frontend.profile {
        Profile::Thin => Ok(answer),
        Profile::Reference => work::checkout_page(&answer).map_err(|e| (StatusCode::BAD_GATEWAY, format!("orders answered an order this page cannot read: {e}"))),
    }
}

const GROUP: &str = "shop-frontend";

/// Confirms placed orders: one consumer span per event.
async fn confirm_orders(brokers: String, instrumentation: Instrumentation) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("kafka consumer");
    consumer.subscribe(&[common::ORDERS_TOPIC]).expect("subscribe");
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let order_id = message.key().and_then(|key| std::str::from_utf8(key).ok()).unwrap_or_default();
                match instrumentation {
                    Instrumentation::Tracepipe => {
                        // The consumer span is current while the event is processed, so the
                        // `tracing` span below is its child; it ends when the attached context
                        // is dropped.
                        let _consumer = tracepipe_instrument::kafka::consumer_span_in_group(&message, Some(GROUP)).attach();
                        let _confirm = tracing::info_span!("confirm order", order.id = order_id).entered();
                    }
                    Instrumentation::Standard => {
                        let consumer = tracing::info_span!(
                            "process orders.placed",
                            otel.kind = "consumer",
                            messaging.system = "kafka",
                            messaging.operation.type = "process",
                            messaging.operation.name = "process",
                            messaging.destination.name = common::ORDERS_TOPIC,
                            messaging.destination.partition.id = %message.partition(),
                            messaging.kafka.offset = message.offset(),
                            messaging.message.body.size = message.payload().map_or(0, <[u8]>::len),
                            messaging.consumer.group.name = GROUP,
                            messaging.kafka.message.key = order_id,
                        );
                        // A child of the producer's span, and linked to it, as tracepipe-instrument's.
                        let producer = common::standard::extract_kafka(message.headers());
                        consumer.add_link(opentelemetry::trace::TraceContextExt::span(&producer).span_context().clone());
                        let _ = consumer.set_parent(producer);
                        let _consumer = consumer.entered();
                        let _confirm = tracing::info_span!("confirm order", order.id = order_id).entered();
                    }
                    Instrumentation::Off => {}
                }
            }
            Err(error) => eprintln!("orders.placed: {error}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env(8080);
    let telemetry = common::telemetry("frontend", &settings);
    let orders_url = std::env::var("ORDERS_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new());
    let http = if settings.tracepipe() { client.with(tracepipe_instrument::client::TracingMiddleware).build() } else { client.build() };
    tokio::spawn(confirm_orders(settings.brokers.clone(), settings.instrumentation));
    let frontend = Frontend { http, orders_url, instrumentation: settings.instrumentation, profile: settings.profile };
    let app = Router::new().route("/checkout/{item}", get(checkout)).with_state(Arc::new(frontend));
    let app = common::traced(app, settings.instrumentation);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await.expect("bind");
    println!("frontend listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).with_graceful_shutdown(common::terminated()).await.expect("serve");
    drop(telemetry);
}
