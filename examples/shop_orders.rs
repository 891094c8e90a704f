//! The orders service of the example shop: `POST /orders` stores nothing but publishes an
//! `orders.placed` event to Kafka, with the trace context in the record's headers.
//!
//!     KAFKA_BROKERS=127.0.0.1:9092 PORT=8081 cargo run --example shop_orders

#[path = "shop/common.rs"]
mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Orders {
    producer: FutureProducer,
    instrumented: bool,
}

async fn place_order(State(orders): State<Arc<Orders>>, item: String) -> Result<(StatusCode, String), (StatusCode, String)> {
    let order_id = format!("{item}-{}", std::process::id());
    let record = FutureRecord::to(common::ORDERS_TOPIC).key(&order_id).payload(&item);
    let delivered = if orders.instrumented {
        tracepipe_instrument::kafka::send(&orders.producer, record, KAFKA_TIMEOUT).await
    } else {
        orders.producer.send(record, KAFKA_TIMEOUT).await
    };
    delivered.map_err(|(e, _)| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((StatusCode::CREATED, order_id))
}

#[tokio::main]
async fn main() {
    let settings = common::Settings::from_env(8081);
    let telemetry = common::telemetry("orders", &settings);
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &settings.brokers).set("linger.ms", "1").create().expect("kafka producer");
    let app = Router::new().route("/orders", post(place_order)).with_state(Arc::new(Orders { producer, instrumented: settings.instrumented }));
    let app = if settings.instrumented { app.layer(tracepipe_instrument::http::TraceLayer) } else { app };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await.expect("bind");
    println!("orders listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).with_graceful_shutdown(common::terminated()).await.expect("serve");
    drop(telemetry);
}
