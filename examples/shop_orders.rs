//! The orders service of the example shop: `POST /orders` publishes an `orders.placed` event to
//! Kafka, with the trace context in the record's headers, and answers. In the thin profile it
//! answers the order id; in the reference profile (`SHOP_PROFILE=reference`) it first prices the
//! order against its SQLite catalog and answers the order as JSON (examples/shop/work.rs).
//!
//!     KAFKA_BROKERS=127.0.0.1:9092 PORT=8081 cargo run --example shop_orders

#[path = "shop/common.rs"]
mod common;
#[path = "shop/work.rs"]
mod work;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tracing::Instrument;

use common::{Instrumentation, Profile};

const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Orders {
    producer: FutureProducer,
    instrumentation: Instrumentation,
    profile: Profile,
}

async fn place_order(State(orders): State<Arc<Orders>>, item: String) -> Result<(StatusCode, String), (StatusCode, String)> {
    let order_id = format!("{item}-{}", std::process::id());
    let body = match orders.profile {
        Profile::Thin => order_id.clone(),
        Profile::Reference => serde_json::to_string(&work::price_order(order_id.clone(), &item)).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    };
    let record = FutureRecord::to(common::ORDERS_TOPIC).key(&order_id).payload(&item);
    let delivered = match orders.instrumentation {
        Instrumentation::Tracepipe => tracepipe_instrument::kafka::send(&orders.producer, record, KAFKA_TIMEOUT).await,
        Instrumentation::Standard => {
            let span = tracing::info_span!(
                "send orders.placed",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "send",
                messaging.operation.name = "send",
                messaging.destination.name = common::ORDERS_TOPIC,
                messaging.kafka.message.key = %order_id,
                messaging.message.body.size = item.len(),
                messaging.destination.partition.id = tracing::field::Empty,
                messaging.kafka.offset = tracing::field::Empty,
            );
            let record = record.headers(common::standard::inject_kafka(&span, OwnedHeaders::new()));
            let delivered = orders.producer.send(record, KAFKA_TIMEOUT).instrument(span.clone()).await;
            if let Ok(delivery) = &delivered {
                span.record("messaging.destination.partition.id", delivery.partition.to_string());
                span.record("messaging.kafka.offset", delivery.offset);
            }
            delivered
        }
        Instrumentation::Off => orders.producer.send(record, KAFKA_TIMEOUT).await,
    };
    delivered.map_err(|(e, _)| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((StatusCode::CREATED, body))
}

#[tokio::main]
async fn main() {
    let settings = common::Settings::from_env(8081);
    let telemetry = common::telemetry("orders", &settings);
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &settings.brokers).set("linger.ms", "1").create().expect("kafka producer");
    let orders = Orders { producer, instrumentation: settings.instrumentation, profile: settings.profile };
    let app = Router::new().route("/orders", post(place_order)).with_state(Arc::new(orders));
    let app = common::traced(app, settings.instrumentation);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await.expect("bind");
    println!("orders listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).with_graceful_shutdown(common::terminated()).await.expect("serve");
    drop(telemetry);
}
