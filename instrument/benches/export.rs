//! What the Kafka exporter spends turning a batch of spans into records, on the SDK's export
//! thread: a batch shaped like the example shop's frontend (per trace a server span continuing a
//! remote parent, an HTTP client span, a consumer span linked to its producer and a child of
//! it), traces interleaved as they end. Sending is not timed; `benches/spans.rs` times the
//! spans' own path and the example shop's bench counts every thread.

use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use tracepipe_instrument::{KafkaExport, KafkaSpanExporter, SpanRecords};

const TRACES: u64 = 64;

fn span(trace: u64, id: u64, parent: u64, kind: SpanKind, name: &'static str, attributes: Vec<KeyValue>, scope: &InstrumentationScope) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_000_000_000 + trace * 1_000_000);
    SpanData {
        span_context: SpanContext::new(TraceId::from(u128::from(trace) << 64 | 0xabcd), SpanId::from(id), TraceFlags::SAMPLED, false, TraceState::default()),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: kind == SpanKind::Server || kind == SpanKind::Consumer,
        span_kind: kind,
        name: name.into(),
        start_time: start,
        end_time: start + Duration::from_micros(1_500 + id),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// The four spans the frontend records for trace `trace`.
fn request(trace: u64, library: &InstrumentationScope, application: &InstrumentationScope) -> [SpanData; 4] {
    let id = trace * 8;
    let producer = SpanContext::new(TraceId::from(u128::from(trace) << 64 | 0xabcd), SpanId::from(id + 7), TraceFlags::SAMPLED, true, TraceState::default());
    let mut consumer = span(trace, id + 3, id + 7, SpanKind::Consumer, "process orders.placed", vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.destination.name", "orders.placed"),
        KeyValue::new("messaging.destination.partition.id", "2"),
        KeyValue::new("messaging.kafka.offset", 1_000 + trace as i64),
        KeyValue::new("messaging.message.body.size", 2),
        KeyValue::new("messaging.consumer.group.name", "shop-frontend".to_string()),
        KeyValue::new("messaging.kafka.message.key", format!("{trace}-1234")),
    ], library);
    consumer.links.links.push(Link::with_context(producer));
    [
        span(trace, id + 1, id, SpanKind::Server, "GET /checkout/{item}", vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/checkout/{item}"),
            KeyValue::new("url.path", format!("/checkout/{trace}")),
            KeyValue::new("http.response.status_code", 200),
        ], library),
        span(trace, id + 2, id + 1, SpanKind::Client, "POST", vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("server.address", "127.0.0.1".to_string()),
            KeyValue::new("server.port", 8081),
            KeyValue::new("url.full", "http://127.0.0.1:8081/orders".to_string()),
            KeyValue::new("http.response.status_code", 201),
        ], library),
        consumer,
        span(trace, id + 4, id + 3, SpanKind::Internal, "confirm order", vec![KeyValue::new("order.id", format!("{trace}-1234"))], application),
    ]
}

fn exporter(records: SpanRecords) -> KafkaSpanExporter {
    let mut exporter = KafkaSpanExporter::new(&KafkaExport { records, ..KafkaExport::new("127.0.0.1:1", "otlp_spans") }).expect("exporter");
    exporter.set_resource(&Resource::builder_empty().with_attributes([KeyValue::new("service.name", "frontend"), KeyValue::new("telemetry.sdk.name", "tracepipe-instrument")]).build());
    exporter
}

fn export(c: &mut Criterion) {
    let library = InstrumentationScope::builder("tracepipe-instrument").with_version("0.1.0").build();
    let application = InstrumentationScope::builder("shop_frontend").build();
    // Server and client spans end with their request; the consumer's two end a few requests
    // later, when the event has come back over Kafka.
    let mut batch = Vec::new();
    for trace in 0..TRACES + 4 {
        if trace < TRACES {
            let [server, client, _, _] = request(trace, &library, &application);
            batch.extend([client, server]);
        }
        if trace >= 4 {
            let [_, _, consumer, confirm] = request(trace - 4, &library, &application);
            batch.extend([confirm, consumer]);
        }
    }
    let mut group = c.benchmark_group("export");
    group.throughput(Throughput::Elements(batch.len() as u64));
    for (records, name) in [(SpanRecords::PerTrace, "a record per trace"), (SpanRecords::PerBatch, "one record")] {
        let exporter = exporter(records);
        group.bench_function(format!("{TRACES} traces ({} spans), {name}", batch.len()), |b| {
            b.iter_batched(|| batch.clone(), |batch| exporter.records(batch), BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, export);
criterion_main!(benches);
