//! The assembler in spans per second and bytes of memory per buffered span, and the sampler in
//! traces per second, on traffic from the 30-service scenario split as the router splits it.
//! Memory is measured, not estimated: a counting allocator gives the heap bytes the assembler
//! holds for its open traces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use tracepipe::loadgen::{MessageEncoder, Scenario, TraceGenerator};
use tracepipe::topology::{Topology, DEFAULT_TOPOLOGY};
use tracepipe_assembler::{AssemblerConfig, TraceAssembler};
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_sampler::TailSampler;
use tracepipe_schemas::split::SplitBatch;
use tracepipe_schemas::{Encoding, SpanSplitter};

const SCENARIO: &str = include_str!("../tests/scenarios/large.yaml");

/// The system allocator, counting the bytes allocated less those freed while `COUNTING` is set:
/// only the memory measurement sets it, so the throughput benches pay one relaxed load per call.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;
const SECOND: u64 = 1_000_000_000;

/// `tracepipe.spans` records (one trace's spans from one input message each) for ~`spans` spans.
fn span_records(spans: u64) -> (Vec<Vec<u8>>, u64) {
    let scenario = Scenario::from_yaml(SCENARIO).unwrap();
    let mut generator = TraceGenerator::new(scenario.clone());
    let encoder = MessageEncoder::new(Encoding::OtlpProto, &scenario, generator.services());
    let mut splitter = SpanSplitter::new(0);
    let mut batch = SplitBatch::default();
    let (mut records, mut total, mut pending) = (Vec::new(), 0u64, Vec::new());
    while total < spans {
        let trace = generator.generate(1_764_000_000_000_000_000 + total * 1_000, 0.0);
        total += trace.spans.len() as u64;
        pending.extend(trace.spans);
        if pending.len() >= 200 || total >= spans {
            for (_, message) in encoder.encode(std::mem::take(&mut pending)) {
                splitter.split(Encoding::OtlpProto, &message, &mut batch).unwrap();
                records.extend(batch.chunks.iter().map(|c| batch.payload(c).to_vec()));
            }
        }
    }
    (records, total)
}

fn input(payload: &[u8], offset: i64) -> InputRecord<'_> {
    InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.spans", offset, key: None, payload, timestamp_ms: None }
}

/// Feeds every record 1 ms apart and ticks every 100 ms; returns the assembled traces.
fn assemble(records: &[Vec<u8>], out: &mut Emitter) -> Vec<Vec<u8>> {
    let mut assembler = TraceAssembler::new(AssemblerConfig::default(), OutputId(0));
    let mut traces = Vec::new();
    let mut now = 0;
    for (offset, record) in records.iter().enumerate() {
        now += 1_000_000;
        assembler.on_input(&input(record, offset as i64), now, out).unwrap();
        if offset % 100 == 0 {
            assembler.on_tick(now, out);
            traces.extend(out.records().map(|(_, _, v)| v.to_vec()));
            out.clear();
        }
    }
    assembler.on_tick(now + 3600 * SECOND, out);
    traces.extend(out.records().map(|(_, _, v)| v.to_vec()));
    out.clear();
    traces
}

fn memory_per_span() {
    let (records, spans) = span_records(200_000);
    let encoded: usize = records.iter().map(Vec::len).sum();
    COUNTING.store(true, Ordering::Relaxed);
    let mut assembler = TraceAssembler::new(AssemblerConfig { memory_budget_bytes: usize::MAX, ..Default::default() }, OutputId(0));
    let mut out = Emitter::default();
    for (offset, record) in records.iter().enumerate() {
        assembler.on_input(&input(record, offset as i64), 0, &mut out).unwrap();
    }
    let held = LIVE_BYTES.load(Ordering::Relaxed).max(0) as usize;
    COUNTING.store(false, Ordering::Relaxed);
    println!(
        "assembler memory: {spans} spans buffered in {} traces, {} bytes encoded per span; heap held {} bytes per span ({:.2}x the encoded size), counted against the budget {} ({:.2}x)",
        assembler.open_traces(),
        encoded as u64 / spans,
        held as u64 / spans,
        held as f64 / encoded as f64,
        assembler.counted_bytes() as u64 / spans,
        assembler.counted_bytes() as f64 / encoded as f64
    );
}

fn assembler_and_sampler(c: &mut Criterion) {
    memory_per_span();
    let (records, spans) = span_records(50_000);
    let mut group = c.benchmark_group("assembler");
    group.throughput(Throughput::Elements(spans));
    let mut out = Emitter::default();
    group.bench_function("spans", |b| b.iter(|| assemble(&records, &mut out)));
    group.finish();

    let traces = assemble(&records, &mut out);
    let topology = Topology::from_yaml(DEFAULT_TOPOLOGY).unwrap();
    let config = topology.processor::<tracepipe_sampler::config::SamplerSpec>().unwrap().config.clone();
    // What the shipped rules keep of this traffic: what the sink writes, for sizing the store.
    let mut sampler = TailSampler::new(config.clone(), OutputId(0));
    let (mut kept, mut kept_bytes) = (0usize, 0usize);
    for (i, trace) in traces.iter().enumerate() {
        sampler.on_input(&input(trace, i as i64), i as u64 * 1_000_000, &mut out).unwrap();
        kept += out.records().count();
        kept_bytes += out.records().map(|(_, _, v)| v.len()).sum::<usize>();
        out.clear();
    }
    let all_bytes: usize = traces.iter().map(Vec::len).sum();
    println!(
        "sampler keeps {kept} of {} traces ({:.1}%), {:.1}% of the bytes, with topology.yaml's rules",
        traces.len(),
        100.0 * kept as f64 / traces.len() as f64,
        100.0 * kept_bytes as f64 / all_bytes as f64
    );
    let mut group = c.benchmark_group("sampler");
    group.throughput(Throughput::Elements(traces.len() as u64));
    group.bench_function("traces", |b| {
        b.iter(|| {
            let mut sampler = TailSampler::new(config.clone(), OutputId(0));
            let mut out = Emitter::default();
            for (i, trace) in traces.iter().enumerate() {
                sampler.on_input(&input(trace, i as i64), i as u64 * 1_000_000, &mut out).unwrap();
                out.clear();
            }
        })
    });
    group.finish();
    let decoded = tracepipe_schemas::v1::AssembledTrace::decode(traces[0].as_slice()).unwrap();
    assert!(decoded.span_count > 0);
}

criterion_group!(benches, assembler_and_sampler);
criterion_main!(benches);
