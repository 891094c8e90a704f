//! The frontend of the example shop: `GET /checkout/{item}` calls the orders service over HTTP;
//! the orders service's `orders.placed` event comes back over Kafka and is processed here, in the
//! same trace (a consumer span continuing the producer's context and linked to it).
//!
//!     KAFKA_BROKERS=127.0.0.1:9092 ORDERS_URL=http://127.0.0.1:8081 PORT=8080 cargo run --example shop_frontend

#[path = "shop/common.rs"]
mod common;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use reqwest_middleware::ClientWithMiddleware;

struct Frontend {
    http: ClientWithMiddleware,
    orders_url: String,
}

async fn checkout(State(frontend): State<Arc<Frontend>>, Path(item): Path<String>) -> Result<String, (StatusCode, String)> {
    let response = frontend.http.post(format!("{}/orders", frontend.orders_url)).body(item).send().await.map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    if !response.status().is_success() {
        return Err((StatusCode::BAD_GATEWAY, format!("orders answered {}", response.status())));
    }
    response.text().await.map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))
}

const GROUP: &str = "shop-frontend";

/// Confirms placed orders: one consumer span per event.
async fn confirm_orders(brokers: String, instrumented: bool) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("kafka consumer");
    consumer.subscribe(&[common::ORDERS_TOPIC]).expect("subscribe");
    loop {
        match consumer.recv().await {
            Ok(message) if instrumented => {
                // The consumer span is current while the event is processed, so the `tracing`
                // span below is its child; it ends when the attached context is dropped.
                let _consumer = tracepipe_instrument::kafka::consumer_span_in_group(&message, Some(GROUP)).attach();
                let order_id = message.key().and_then(|key| std::str::from_utf8(key).ok()).unwrap_or_default();
                let _confirm = tracing::info_span!("confirm order", order.id = order_id).entered();
            }
            Ok(_) => {}
            Err(error) => eprintln!("orders.placed: {error}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let settings = common::Settings::from_env(8080);
    let telemetry = common::telemetry("frontend", &settings);
    let orders_url = std::env::var("ORDERS_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new());
    let http = if settings.instrumented { client.with(tracepipe_instrument::client::TracingMiddleware).build() } else { client.build() };
    tokio::spawn(confirm_orders(settings.brokers.clone(), settings.instrumented));
    let app = Router::new().route("/checkout/{item}", get(checkout)).with_state(Arc::new(Frontend { http, orders_url }));
    let app = if settings.instrumented { app.layer(tracepipe_instrument::http::TraceLayer) } else { app };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await.expect("bind");
    println!("frontend listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).with_graceful_shutdown(common::terminated()).await.expect("serve");
    drop(telemetry);
}
