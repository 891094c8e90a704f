//! The assembler: groups the spans of `tracepipe.spans` by trace id into `tracepipe.traces`.
//!
//! A trace is complete when its root has arrived and no span came for `grace`; or when no span
//! came for `idle_timeout` (the root never arrived); or, flagged truncated, when it has been open
//! for `max_duration`, reached `max_spans`, or its spans reached `max_trace_bytes` (so that no
//! record is larger than Kafka takes; see [`AssemblerConfig::allow_whole_traces`]). Spans of a
//! trace that was already emitted go out as numbered late fragments of the same trace id once no
//! span came for `grace`. Duplicate span ids
//! within an open trace are dropped and counted.
//!
//! Spans are kept as the encoded `resource_spans` bytes they arrived in, plus 8 bytes of span id
//! each, and emitted by concatenation: a span is decoded to a summary once and never re-encoded
//! (except to drop a duplicate).
//!
//! Offsets: the low watermark of a partition is the first offset of its oldest open trace, so a
//! crash replays every span still held. Emitted traces hold that offset until acknowledged. On a
//! rebalance or shutdown nothing partial is emitted: the state is dropped and the next owner
//! replays from the watermark.
//!
//! Memory: `memory_budget_bytes` bounds the process's anonymous memory, in sixteenths, split by
//! what each part was measured to cost (heaptrack and `/proc/PID/smaps` of an assembler 10× over
//! its budget, lz4 between the processors):
//!
//! - 9 for the state (span bytes, ids, per-trace overhead, and the emitted-id cache, itself at
//!   most 2). Past it the traces that cost most (size × age) are emitted early, flagged truncated
//!   with completion `MEMORY_PRESSURE`, down to 8, so one eviction puts at most 1 in flight.
//! - 1 for that eviction batch, on its way to the producer.
//! - 3 for librdkafka, whose buffers are set to a thirty-second each (consumer prefetch, producer
//!   queue; see [`AssemblerConfig::bound_kafka_buffers`]) because they cost about 2.5× what those
//!   settings name: fetched batches are held decompressed (with growth slack), queued records
//!   also sit in request and compression buffers.
//! - 3 of headroom for the allocator's fragmentation across threads and the small structures.
//!
pub mod config;
mod emitted;
mod metrics;
mod pages;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::time::Duration;

use prost::Message;
use tracepipe_processor::trace_context::TraceContext;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::otlp_proto::IdHasher;
use tracepipe_schemas::v1::{Completion, TraceSpans};
use tracepipe_schemas::view::visit_trace_spans;
use tracepipe_schemas::TraceId;

pub use emitted::EmittedTraces;
use pages::{PagePool, PagedBytes};

#[derive(Debug, Clone)]
pub struct AssemblerConfig {
    pub grace: Duration,
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub max_spans: u32,
    /// Encoded spans of one trace, past which it is emitted truncated.
    pub max_trace_bytes: usize,
    pub memory_budget_bytes: usize,
    /// How many emitted trace ids are remembered to number late fragments.
    pub emitted_cache_traces: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            grace: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(60),
            max_spans: 10_000,
            max_trace_bytes: 8 << 20,
            memory_budget_bytes: 256 << 20,
            emitted_cache_traces: 500_000,
        }
    }
}

/// Bytes counted per open trace besides its spans: the map entry, the slot and the deadline entry.
const TRACE_OVERHEAD: usize = 160;
/// Open traces with more spans than this keep a hash index of span ids for duplicate checks.
const INDEXED_ABOVE: usize = 32;

type IdMap<V> = HashMap<TraceId, V, BuildHasherDefault<IdHasher>>;

struct OpenTrace {
    trace_id: TraceId,
    generation: u32,
    fragment: u32,
    has_root: bool,
    duplicates: u32,
    first_seen: UnixNanos,
    last_activity: UnixNanos,
    first_offset: SourceOffset,
    span_ids: Vec<u64>,
    span_index: Option<HashSet<u64, BuildHasherDefault<IdHasher>>>,
    /// The `resource_spans` fields of every record, verbatim.
    body: PagedBytes,
}

impl OpenTrace {
    fn contains(&self, id: u64) -> bool {
        match &self.span_index {
            Some(index) => index.contains(&id),
            None => self.span_ids.contains(&id),
        }
    }

    fn insert(&mut self, id: u64) {
        self.span_ids.push(id);
        if let Some(index) = &mut self.span_index {
            index.insert(id);
        } else if self.span_ids.len() > INDEXED_ABOVE {
            self.span_index = Some(self.span_ids.iter().copied().collect());
        }
    }

    fn cost(&self) -> usize {
        TRACE_OVERHEAD
            + self.body.cost()
            + self.span_ids.capacity() * 8
            + self.span_index.as_ref().map_or(0, |i| i.capacity() * 9)
    }
}

impl AssemblerConfig {
    /// Sizes librdkafka's buffers in proportion to the memory budget (see the crate docs): the
    /// consumer's prefetch and the producer's queue are each set to a thirty-second of it, within
    /// librdkafka's limits (a fetch takes at least one 1 MB message) and at most its defaults.
    /// The producer may send records as large as the largest trace ([`Self::allow_whole_traces`]).
    /// Settings made explicitly in the topology's kafka section win.
    pub fn bound_kafka_buffers(&self, consumer: &mut BTreeMap<String, String>, producer: &mut BTreeMap<String, String>) {
        let kbytes = (self.memory_budget_bytes / 32 / 1024).max(1024);
        let default = |settings: &mut BTreeMap<String, String>, key: &str, value: usize| {
            settings.entry(key.to_string()).or_insert_with(|| value.to_string());
        };
        default(consumer, "queued.max.messages.kbytes", kbytes.min(65_536));
        default(consumer, "fetch.max.bytes", kbytes.min(51_200) * 1024);
        default(producer, "queue.buffering.max.kbytes", kbytes.min(1_048_576));
        self.allow_whole_traces(producer);
    }

    /// Lets a producer (the assembler's, and the sampler's, which forwards the same records) send
    /// the largest record the assembler writes: `max_trace_bytes`, overshot by at most one input
    /// record (the router's payloads are at most 512 KiB), plus the record's own fields. An
    /// explicit `message.max.bytes` wins.
    pub fn allow_whole_traces(&self, producer: &mut BTreeMap<String, String>) {
        let largest = self.max_trace_bytes + tracepipe_schemas::split::MAX_CHUNK_BYTES + (64 << 10);
        producer.entry("message.max.bytes".to_string()).or_insert_with(|| largest.to_string());
    }
}

/// Sixteenths of the memory budget the state may hold, and what an eviction brings it down to.
const STATE_SIXTEENTHS: usize = 9;
const AFTER_EVICTION_SIXTEENTHS: usize = 8;

/// The largest `max_trace_bytes` a memory budget allows: one eviction batch, since one trace is
/// emitted at a time.
pub fn largest_trace_limit(memory_budget_bytes: usize) -> usize {
    memory_budget_bytes / 16 * (STATE_SIXTEENTHS - AFTER_EVICTION_SIXTEENTHS)
}

pub struct TraceAssembler {
    config: AssemblerConfig,
    output: OutputId,
    open: IdMap<u32>,
    /// The trace context of open traces whose assembly tracepipe traces (self-tracing: few), so
    /// the emitted trace continues it.
    traced: IdMap<TraceContext>,
    slots: Vec<Option<OpenTrace>>,
    free_slots: Vec<u32>,
    /// (deadline, slot, generation): one entry per open trace, pushed when it opens and pushed
    /// again, later, when it is due but not complete. An entry whose slot holds another
    /// generation (its trace was emitted early) is stale and skipped.
    deadlines: BinaryHeap<Reverse<(UnixNanos, u32, u32)>>,
    next_generation: u32,
    /// The part of the memory budget the state may hold (see the crate docs).
    state_budget: usize,
    /// Per partition: first offset of each open trace → how many open traces start there.
    watermarks: HashMap<SourcePartition, BTreeMap<i64, u32>>,
    emitted: EmittedTraces,
    pages: PagePool,
    buffered_bytes: usize,
    buffered_spans: usize,
    ranges: Vec<Range<usize>>,
    incoming: Vec<(u64, bool)>,
    /// Per incoming span: not a duplicate.
    keep: Vec<bool>,
    /// Span ids of the incoming record, for duplicate checks within a large one.
    record_ids: HashSet<u64, BuildHasherDefault<IdHasher>>,
    encoded: Vec<u8>,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn write_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        prost::encoding::encode_key(field, prost::encoding::WireType::Varint, out);
        prost::encoding::encode_varint(value, out);
    }
}

impl TraceAssembler {
    pub fn new(config: AssemblerConfig, output: OutputId) -> Self {
        let emitted_capacity = config.emitted_cache_traces.min(config.memory_budget_bytes / 8 / EmittedTraces::MAX_BYTES_PER_ID);
        let state_budget = config.memory_budget_bytes / 16 * STATE_SIXTEENTHS;
        TraceAssembler {
            emitted: EmittedTraces::new(emitted_capacity),
            next_generation: 0,
            state_budget,
            config,
            output,
            open: IdMap::default(),
            traced: IdMap::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            deadlines: BinaryHeap::new(),
            watermarks: HashMap::new(),
            pages: PagePool::default(),
            buffered_bytes: 0,
            buffered_spans: 0,
            ranges: Vec::new(),
            incoming: Vec::new(),
            keep: Vec::new(),
            record_ids: HashSet::default(),
            encoded: Vec::new(),
        }
    }

    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    /// Bytes held in open traces.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Bytes counted against the memory budget: open traces and the emitted-id cache.
    pub fn counted_bytes(&self) -> usize {
        self.buffered_bytes + self.emitted.cost()
    }

    fn slot(&mut self, trace: OpenTrace) -> u32 {
        match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(trace);
                slot
            }
            None => {
                self.slots.push(Some(trace));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn next_deadline(&self, trace: &OpenTrace) -> UnixNanos {
        let quiet = if trace.has_root || trace.fragment > 0 { self.config.grace } else { self.config.idle_timeout };
        (trace.last_activity + nanos(quiet)).min(trace.first_seen + nanos(self.config.max_duration))
    }

    /// Takes a trace out of the state; its offset hold moves to the emitted record.
    fn remove(&mut self, slot: u32) -> OpenTrace {
        let trace = self.slots[slot as usize].take().expect("live slot");
        self.free_slots.push(slot);
        self.open.remove(&trace.trace_id);
        if let Some(starts) = self.watermarks.get_mut(&trace.first_offset.source) {
            if let Some(count) = starts.get_mut(&trace.first_offset.offset) {
                *count -= 1;
                if *count == 0 {
                    starts.remove(&trace.first_offset.offset);
                }
            }
        }
        self.buffered_bytes -= trace.cost();
        self.buffered_spans -= trace.span_ids.len();
        trace
    }

    fn forget_traced(&mut self, trace_id: &TraceId) -> Option<TraceContext> {
        if self.traced.is_empty() {
            return None;
        }
        self.traced.remove(trace_id)
    }

    fn emit(&mut self, slot: u32, completion: Completion, now: UnixNanos, out: &mut Emitter) {
        let mut trace = self.remove(slot);
        let truncated = matches!(completion, Completion::MaxDuration | Completion::MaxSpans | Completion::MaxBytes | Completion::MemoryPressure);
        let buf = &mut self.encoded;
        buf.clear();
        buf.extend_from_slice(&[0x0a, 16]);
        buf.extend_from_slice(&trace.trace_id.0);
        trace.body.copy_to(&self.pages, buf);
        trace.body.release(&mut self.pages);
        write_varint_field(buf, 3, completion as u64);
        write_varint_field(buf, 4, u64::from(truncated));
        write_varint_field(buf, 5, u64::from(trace.fragment));
        write_varint_field(buf, 6, trace.span_ids.len() as u64);
        write_varint_field(buf, 7, u64::from(trace.duplicates));
        prost::encoding::fixed64::encode(8, &trace.first_seen, buf);
        prost::encoding::fixed64::encode(9, &now, buf);
        out.emit_holding(self.output, &trace.trace_id.0, buf, Some(trace.first_offset));
        if let Some(context) = self.forget_traced(&trace.trace_id) {
            out.continue_context(context);
        }
        self.emitted.record(trace.trace_id);
        metrics::EMITTED.with_label_values(&[completion.as_str()]).inc();
        if completion == Completion::MemoryPressure {
            metrics::EVICTED.inc();
        }
    }

    /// Emits the traces that cost most (size × age) until the state is down to
    /// [`AFTER_EVICTION_SIXTEENTHS`] of the budget.
    fn relieve_memory_pressure(&mut self, now: UnixNanos, out: &mut Emitter) {
        if self.counted_bytes() <= self.state_budget {
            return;
        }
        let target = (self.state_budget / STATE_SIXTEENTHS * AFTER_EVICTION_SIXTEENTHS).saturating_sub(self.emitted.cost());
        let mut candidates: Vec<(u128, u32, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, t)| {
                let t = t.as_ref()?;
                let age = u128::from(now.saturating_sub(t.first_seen).max(1));
                Some((t.cost() as u128 * age, slot as u32, t.cost()))
            })
            .collect();
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (_, slot, _) in candidates {
            if self.buffered_bytes <= target {
                break;
            }
            self.emit(slot, Completion::MemoryPressure, now, out);
        }
    }

    fn update_gauges(&self) {
        metrics::OPEN.set(self.open.len() as i64);
        metrics::SPANS_BUFFERED.set(self.buffered_spans as i64);
        metrics::BYTES_BUFFERED.set(self.buffered_bytes as i64);
        metrics::BYTES_EMITTED_CACHE.set(self.emitted.cost() as i64);
    }

    /// Which incoming spans are new: in neither the open trace nor earlier in the record.
    /// Fills `self.keep`; returns whether all are.
    fn mark_new_spans(&mut self, open: Option<u32>) -> bool {
        let trace = open.and_then(|slot| self.slots[slot as usize].as_ref());
        let many = self.incoming.len() > INDEXED_ABOVE;
        self.record_ids.clear();
        self.keep.clear();
        let mut all_new = true;
        for (i, &(id, _)) in self.incoming.iter().enumerate() {
            let earlier = if many { !self.record_ids.insert(id) } else { self.incoming[..i].iter().any(|&(other, _)| other == id) };
            let new = !earlier && !trace.is_some_and(|t| t.contains(id));
            all_new &= new;
            self.keep.push(new);
        }
        all_new
    }

    /// Re-encodes the record's `resource_spans` without the spans `keep` flags as duplicates,
    /// into `self.encoded`. Rare; nothing else is decoded.
    fn encode_without_duplicates(&mut self, payload: &[u8]) -> Result<(), Poison> {
        let mut decoded = TraceSpans::decode(payload).map_err(|e| Poison::new("decode", format!("tracepipe.v1.TraceSpans: {e}")))?;
        let mut flags = self.keep.iter();
        for rs in &mut decoded.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|_| *flags.next().unwrap_or(&false));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        decoded.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        self.encoded.clear();
        for rs in &decoded.resource_spans {
            prost::encoding::message::encode(2, rs, &mut self.encoded);
        }
        Ok(())
    }

    /// Adds one `TraceSpans` record. Returns an error if it cannot be read, with the state
    /// untouched: everything that can fail happens before the first change.
    fn add(&mut self, payload: &[u8], at: SourceOffset, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        self.ranges.clear();
        self.incoming.clear();
        let incoming = &mut self.incoming;
        let trace_id = visit_trace_spans(payload, &mut self.ranges, |span| {
            let id = u64::from_le_bytes(span.span_id.try_into().expect("8 bytes, checked by the view"));
            incoming.push((id, span.is_root()));
        })
        .map_err(|e| Poison::new("decode", format!("tracepipe.v1.TraceSpans: {e}")))?;
        if self.incoming.is_empty() {
            return Ok(());
        }
        let open = self.open.get(&trace_id).copied();
        let all_new = self.mark_new_spans(open);
        if !all_new {
            self.encode_without_duplicates(payload)?;
        }
        // After everything that can refuse the record, which then changes nothing.
        if out.traced() {
            self.traced.entry(trace_id).or_insert(out.context());
        }

        let slot = match open {
            Some(slot) => slot,
            None => {
                let fragment = self.emitted.emissions(&trace_id);
                self.next_generation = self.next_generation.wrapping_add(1);
                let trace = OpenTrace {
                    trace_id,
                    generation: self.next_generation,
                    fragment,
                    has_root: false,
                    duplicates: 0,
                    first_seen: now,
                    last_activity: now,
                    first_offset: at,
                    span_ids: Vec::new(),
                    span_index: None,
                    body: PagedBytes::default(),
                };
                self.buffered_bytes += trace.cost();
                let slot = self.slot(trace);
                self.open.insert(trace_id, slot);
                *self.watermarks.entry(at.source).or_default().entry(at.offset).or_insert(0) += 1;
                slot
            }
        };
        let trace = self.slots[slot as usize].as_mut().expect("live slot");
        let cost_before = trace.cost();
        let spans_before = trace.span_ids.len();
        let had_root = trace.has_root;
        if trace.fragment > 0 {
            metrics::LATE.inc_by(self.incoming.len() as u64);
        }
        for (&(id, is_root), &new) in self.incoming.iter().zip(&self.keep) {
            if new {
                trace.insert(id);
                trace.has_root |= is_root;
            } else {
                trace.duplicates += 1;
            }
        }
        if all_new {
            for range in &self.ranges {
                trace.body.append(&mut self.pages, &payload[range.clone()]);
            }
        } else {
            metrics::DUPLICATES.inc_by(self.keep.iter().filter(|k| !**k).count() as u64);
            trace.body.append(&mut self.pages, &self.encoded);
        }
        metrics::ASSEMBLED.inc_by((trace.span_ids.len() - spans_before) as u64);
        let opened = open.is_none();
        let root_came = !had_root && trace.has_root;
        trace.last_activity = now;
        let full = if trace.span_ids.len() >= self.config.max_spans as usize {
            Some(Completion::MaxSpans)
        } else if trace.body.len() >= self.config.max_trace_bytes {
            Some(Completion::MaxBytes)
        } else {
            None
        };
        let cost_after = trace.cost();
        let spans_after = trace.span_ids.len();
        self.buffered_bytes = self.buffered_bytes + cost_after - cost_before;
        self.buffered_spans += spans_after - spans_before;
        if let Some(completion) = full {
            self.emit(slot, completion, now, out);
        } else if opened || root_came {
            // Other records only move the deadline later: the entry is pushed again when it
            // comes due (see `on_tick`), so the heap holds about one entry per open trace. The
            // root moves it earlier (grace instead of idle_timeout), so it gets an entry of its own.
            let trace = self.slots[slot as usize].as_ref().expect("live slot");
            let deadline = self.next_deadline(trace);
            self.deadlines.push(Reverse((deadline, slot, trace.generation)));
        }
        self.relieve_memory_pressure(now, out);
        Ok(())
    }
}

impl Processor for TraceAssembler {
    fn name(&self) -> &'static str {
        "assembler"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        self.add(input.payload, SourceOffset { source: input.source, offset: input.offset }, now, out)
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }

    fn on_tick(&mut self, now: UnixNanos, out: &mut Emitter) {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(trace) = self.slots[slot as usize].as_ref() else { continue };
            if trace.generation != generation {
                continue;
            }
            let quiet = now.saturating_sub(trace.last_activity);
            let completion = if now.saturating_sub(trace.first_seen) >= nanos(self.config.max_duration) {
                Some(Completion::MaxDuration)
            } else if (trace.has_root || trace.fragment > 0) && quiet >= nanos(self.config.grace) {
                Some(if trace.has_root { Completion::RootAndGrace } else { Completion::IdleTimeout })
            } else if quiet >= nanos(self.config.idle_timeout) {
                Some(Completion::IdleTimeout)
            } else {
                None
            };
            match completion {
                Some(completion) => self.emit(slot, completion, now, out),
                None => {
                    let next = self.next_deadline(trace);
                    self.deadlines.push(Reverse((next, slot, generation)));
                }
            }
        }
        self.update_gauges();
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.watermarks.get(&source)?.first_key_value().map(|(&offset, _)| offset)
    }

    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        let slots: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, t)| t.as_ref().filter(|t| sources.contains(&t.first_offset.source)).map(|_| slot as u32))
            .collect();
        for slot in slots {
            let mut trace = self.remove(slot);
            trace.body.release(&mut self.pages);
            self.forget_traced(&trace.trace_id);
        }
        for source in sources {
            self.watermarks.remove(source);
        }
        self.update_gauges();
    }
}
