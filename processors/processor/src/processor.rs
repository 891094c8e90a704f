//! The processor contract: a synchronous state machine that never touches Kafka, tokio or the
//! clock. The pipeline hands it input and the current time; it writes outputs into an [`Emitter`].

use std::ops::Range;

use crate::trace_context::TraceContext;

/// Nanoseconds since the Unix epoch. Passed in, so tests drive time.
pub type UnixNanos = u64;

/// One partition of one input topic; `input` is the topic's place in the pipeline's input list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePartition {
    pub input: u16,
    pub partition: i32,
}

/// An input offset that an output, or a processor's state, depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceOffset {
    pub source: SourcePartition,
    pub offset: i64,
}

/// One output topic of a processor, as the pipeline that runs it numbered it when the topic was
/// bound to the processor's named output (e.g. the analyzer's `rollups` and `alerts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutputId(pub u16);

/// One consumed record.
#[derive(Debug, Clone, Copy)]
pub struct InputRecord<'a> {
    pub source: SourcePartition,
    pub topic: &'a str,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub timestamp_ms: Option<i64>,
}

/// Input the processor cannot use at all. The pipeline writes the record to the dead-letter topic
/// with `reason` and moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// A short stable name (a metric label and the `tracepipe.dlq.kind` header).
    pub kind: &'static str,
    pub reason: String,
}

impl Poison {
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Poison { kind, reason: reason.into() }
    }
}

pub trait Processor: Send + 'static {
    /// Name in metrics, logs and dead-letter headers.
    fn name(&self) -> &'static str;

    /// Handles one input record. Outputs emitted here hold the record's offset until acknowledged.
    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison>;

    /// Called every [`Processor::tick_interval`]; emits what time has completed.
    fn on_tick(&mut self, _now: UnixNanos, _out: &mut Emitter) {}

    /// How often [`Processor::on_tick`] runs; `None` for stateless processors.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether the processor cannot take more input now (its own writes wait, e.g. the sink's
    /// store is down): the pipeline then pauses the input partitions and keeps polling, ticking
    /// and serving acknowledgements until it can.
    fn congested(&self) -> bool {
        false
    }

    /// The smallest offset of `source` still held in state, if any.
    fn low_watermark(&self, _source: SourcePartition) -> Option<i64> {
        None
    }

    /// The partitions are being taken away: emit what can be emitted now. What stays in state must
    /// still show in [`Processor::low_watermark`]; the pipeline commits, then calls
    /// [`Processor::release_partitions`].
    fn on_revoke(&mut self, _sources: &[SourcePartition], _now: UnixNanos, _out: &mut Emitter) {}

    /// Drops all state of partitions that were revoked and committed.
    fn release_partitions(&mut self, _sources: &[SourcePartition]) {}

    /// Shutting down: emit everything that is held.
    fn drain(&mut self, _now: UnixNanos, _out: &mut Emitter) {}
}

/// A record the processor emitted, its bytes in the emitter's buffer ([`Emitter::key`],
/// [`Emitter::value`]).
#[derive(Debug, Clone)]
pub struct EmittedRecord {
    pub output: OutputId,
    /// The input offset this record keeps uncommitted until the broker acknowledges it.
    pub hold: Option<SourceOffset>,
    /// The context of the input it was derived from ([`Emitter::context`] when it was emitted).
    pub context: TraceContext,
    key: Range<usize>,
    value: Range<usize>,
    /// Further offsets held ([`Emitter::more_holds`]): a windowed aggregate covers many partitions.
    more_holds: Range<usize>,
}

/// Where a processor writes its outputs. One buffer for all bytes, reused across inputs, so
/// emitting does not allocate once it has grown.
#[derive(Debug)]
pub struct Emitter {
    data: Vec<u8>,
    records: Vec<EmittedRecord>,
    holds: Vec<SourceOffset>,
    current: Option<SourceOffset>,
    context: TraceContext,
    /// Whether tracepipe traces its own work on the input being handled (self-tracing).
    traced: bool,
    dead_letter: Option<Poison>,
}

impl Default for Emitter {
    fn default() -> Self {
        Emitter {
            data: Vec::new(),
            records: Vec::new(),
            holds: Vec::new(),
            current: None,
            context: TraceContext::child_of(None),
            traced: false,
            dead_letter: None,
        }
    }
}

impl Emitter {
    /// Emits a record derived from the input being handled (or, outside `on_input`, held by nothing).
    pub fn emit(&mut self, output: OutputId, key: &[u8], value: &[u8]) {
        let hold = self.current;
        self.emit_holding(output, key, value, hold);
    }

    /// Emits a record that keeps `hold` uncommitted until the broker acknowledges it.
    pub fn emit_holding(&mut self, output: OutputId, key: &[u8], value: &[u8], hold: Option<SourceOffset>) {
        let key_start = self.data.len();
        self.data.extend_from_slice(key);
        let value_start = self.data.len();
        self.data.extend_from_slice(value);
        self.records.push(EmittedRecord {
            output,
            key: key_start..value_start,
            value: value_start..self.data.len(),
            hold,
            more_holds: self.holds.len()..self.holds.len(),
            context: self.context,
        });
    }

    /// The record emitted last continues `context` (that of an earlier input, kept by the
    /// processor) instead of the current one.
    pub fn continue_context(&mut self, context: TraceContext) {
        if let Some(record) = self.records.last_mut() {
            record.context = context;
        }
    }

    /// Emits a record that keeps every offset in `holds` uncommitted until the broker acknowledges
    /// it: an aggregate over a window holds the first offset of each partition it covers.
    pub fn emit_holding_all(&mut self, output: OutputId, key: &[u8], value: &[u8], holds: &[SourceOffset]) {
        let (first, rest) = match holds.split_first() {
            Some((first, rest)) => (Some(*first), rest),
            None => (None, &[][..]),
        };
        self.emit_holding(output, key, value, first);
        let start = self.holds.len();
        self.holds.extend_from_slice(rest);
        self.records.last_mut().expect("just emitted").more_holds = start..self.holds.len();
    }

    /// Sends the current input to the dead-letter topic as well (e.g. some of its spans were
    /// rejected); what was emitted from it still goes out.
    pub fn dead_letter(&mut self, poison: Poison) {
        self.dead_letter = Some(poison);
    }

    /// The dead-letter request for the current input, if any (for tests of processors).
    pub fn pending_dead_letter(&self) -> Option<&Poison> {
        self.dead_letter.as_ref()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The emitted records as (output, key, value), for tests of processors.
    pub fn records(&self) -> impl Iterator<Item = (OutputId, &[u8], &[u8])> {
        self.records.iter().map(|r| (r.output, &self.data[r.key.clone()], &self.data[r.value.clone()]))
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.holds.clear();
        self.dead_letter = None;
    }

    // The pipeline's side: it frames each input with `begin_input`/`end_input`, sends what was
    // emitted, and clears the emitter for the next input.

    /// What has been emitted since the last [`Emitter::clear`], in order.
    pub fn emitted(&self) -> &[EmittedRecord] {
        &self.records
    }

    /// The trace context of the input being handled: every record emitted from it continues it.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// The input at `source`, consumed with `context`, is about to be handed to the processor:
    /// what it emits holds `source` by default.
    pub fn begin_input(&mut self, source: SourceOffset, context: TraceContext) {
        self.current = Some(source);
        self.context = context;
    }

    pub fn end_input(&mut self) {
        self.current = None;
        self.context = TraceContext::child_of(None);
        self.traced = false;
    }

    /// The input being handled is one whose processing tracepipe traces: a processor that emits
    /// its outputs later keeps [`Emitter::context`] for them ([`Emitter::continue_context`]).
    pub fn trace_own_work(&mut self) {
        self.traced = true;
    }

    pub fn traced(&self) -> bool {
        self.traced
    }

    pub fn take_dead_letter(&mut self) -> Option<Poison> {
        self.dead_letter.take()
    }

    pub fn more_holds(&self, record: &EmittedRecord) -> &[SourceOffset] {
        &self.holds[record.more_holds.clone()]
    }

    pub fn key(&self, record: &EmittedRecord) -> &[u8] {
        &self.data[record.key.clone()]
    }

    pub fn value(&self, record: &EmittedRecord) -> &[u8] {
        &self.data[record.value.clone()]
    }

    /// Forgets what the current input emitted, starting at `first_record` (used when it turns out
    /// to be poison after emitting).
    pub fn truncate(&mut self, first_record: usize) {
        if let Some(first) = self.records.get(first_record) {
            self.data.truncate(first.key.start);
            self.holds.truncate(first.more_holds.start);
            self.records.truncate(first_record);
        }
    }
}
