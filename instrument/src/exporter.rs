//! An OpenTelemetry span exporter that publishes OTLP to Kafka: one
//! `ExportTraceServiceRequest` record per trace in each batch, keyed by the 16-byte trace id, on
//! the topic tracepipe's router reads (`otlp_spans`) — what the OpenTelemetry Collector's kafka
//! exporter writes with `partition_traces_by_id`, without a collector in between.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::KafkaExport;

pub struct KafkaSpanExporter {
    producer: FutureProducer,
    topic: String,
    resource: ResourceAttributesWithSchema,
}

impl std::fmt::Debug for KafkaSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSpanExporter").field("topic", &self.topic).finish()
    }
}

/// How long one export may wait for Kafka before the batch is reported failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaSpanExporter {
    pub fn new(kafka: &KafkaExport) -> Result<KafkaSpanExporter, rdkafka::error::KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("client.id", "tracepipe-instrument")
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            // The Java client's key hashing, as tracepipe's own producers use.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", EXPORT_TIMEOUT.as_millis().to_string());
        for (key, value) in &kafka.producer {
            config.set(key, value);
        }
        Ok(KafkaSpanExporter { producer: config.create()?, topic: kafka.topic.clone(), resource: ResourceAttributesWithSchema::default() })
    }

    /// The records a batch becomes: (trace id, encoded request).
    pub fn records(&self, batch: Vec<SpanData>) -> Vec<([u8; 16], Vec<u8>)> {
        let mut by_trace: HashMap<[u8; 16], Vec<SpanData>> = HashMap::new();
        for span in batch {
            by_trace.entry(span.span_context.trace_id().to_bytes()).or_default().push(span);
        }
        by_trace
            .into_iter()
            .map(|(trace_id, spans)| {
                let request = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(spans, &self.resource) };
                (trace_id, request.encode_to_vec())
            })
            .collect()
    }
}

impl SpanExporter for KafkaSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let records = self.records(batch);
        let mut deliveries = Vec::with_capacity(records.len());
        for (trace_id, payload) in &records {
            let record = FutureRecord::to(&self.topic).key(&trace_id[..]).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(OTelSdkError::InternalFailure(format!("kafka: {error}"))),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(OTelSdkError::InternalFailure(format!("kafka: {error}"))),
                Err(_) => return Err(OTelSdkError::InternalFailure("kafka producer dropped".into())),
            }
        }
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.producer.flush(EXPORT_TIMEOUT).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.producer.flush(timeout).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}
