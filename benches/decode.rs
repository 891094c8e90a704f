//! Decode + split per input encoding, in spans per second, on batches the load generator makes
//! from the small scenario (200 spans per OTLP or Zipkin message, one span per Jaeger message).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe_schemas::split::SplitBatch;
use tracepipe_schemas::{Encoding, SpanSplitter};

const SCENARIO: &str = include_str!("../tests/scenarios/small.yaml");

/// About 10 000 spans as the messages of one encoding.
fn messages(encoding: Encoding) -> (Vec<Vec<u8>>, u64) {
    let scenario = Scenario::from_yaml(SCENARIO).unwrap();
    let mut generator = TraceGenerator::new(scenario.clone());
    let encoder = MessageEncoder::new(encoding, &scenario, generator.services());
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut pending = Vec::new();
    while total < 10_000 {
        let trace = generator.generate(1_764_000_000_000_000_000 + total * 1_000_000, 0.0);
        total += trace.spans.len() as u64;
        pending.extend(trace.spans);
        if pending.len() >= 200 {
            out.extend(encoder.encode(std::mem::take(&mut pending)).into_iter().map(|(_, value)| value));
        }
    }
    out.extend(encoder.encode(pending).into_iter().map(|(_, value)| value));
    (out, total)
}

fn decode_and_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_and_split");
    for encoding in Encoding::ALL {
        let (messages, spans) = messages(encoding);
        let bytes: usize = messages.iter().map(Vec::len).sum();
        eprintln!("{encoding}: {spans} spans in {} messages, {} bytes per span", messages.len(), bytes as u64 / spans);
        group.throughput(Throughput::Elements(spans));
        let mut splitter = SpanSplitter::new(0);
        let mut batch = SplitBatch::default();
        group.bench_with_input(BenchmarkId::from_parameter(encoding), &messages, |b, messages| {
            b.iter(|| {
                for message in messages {
                    splitter.split(encoding, message, &mut batch).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_and_split);
criterion_main!(benches);
