//! Runs one processor against Kafka on a dedicated thread (see the crate docs for the offset
//! protocol).
//!
//! The thread owns a `BaseConsumer` and a `BaseProducer`. Delivery reports are queued by the
//! producer context and applied before new input is taken, so acknowledgements always advance
//! first. Rebalance callbacks run inside `consumer.poll` on the same thread; they reach the engine
//! through a mutex that is never held across a poll of the consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin::{ComponentState, Health};
use crate::dlq;
use crate::error::RuntimeError;
use crate::metrics;
use tracepipe_processor::{EmittedRecord, Emitter, InputRecord, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use crate::progress::{Held, Progress};
use crate::self_trace::{self, is_traced, ReadFrom, SelfTracer, SELF_TELEMETRY};
use crate::settings::PipelineSettings;
use tracepipe_processor::trace_context::{TraceContext, TRACEPARENT};

/// How a pipeline ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineExit {
    /// Shutdown was requested; everything was drained and committed.
    Drained,
}

pub struct Pipeline<P: Processor> {
    settings: PipelineSettings,
    processor: P,
}

fn unix_nanos() -> UnixNanos {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl<P: Processor> Pipeline<P> {
    pub fn new(settings: PipelineSettings, processor: P) -> Self {
        Pipeline { settings, processor }
    }

    /// Runs on a named thread until `shutdown` is cancelled or a fatal error.
    pub fn spawn(self, shutdown: CancellationToken, health: Health) -> JoinHandle<Result<PipelineExit, RuntimeError>> {
        let name = self.processor.name();
        health.register(name);
        std::thread::Builder::new()
            .name(format!("{name}-pipeline"))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&shutdown, &health)));
                match &result {
                    Ok(Ok(_)) => health.set_ready(name, false),
                    Ok(Err(error)) => {
                        error!(processor = name, %error, "pipeline stopped");
                        health.set(name, ComponentState::Failed(error.to_string()));
                    }
                    Err(_) => health.set(name, ComponentState::Failed("the pipeline thread panicked".into())),
                }
                result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .expect("spawn pipeline thread")
    }

    /// Runs on the calling thread until `shutdown` is cancelled or a fatal error.
    pub fn run(self, shutdown: &CancellationToken, health: &Health) -> Result<PipelineExit, RuntimeError> {
        let name = self.processor.name();
        let client_id = format!("tracepipe-{name}-{}", std::process::id());
        let settings = self.settings;
        let producer: BaseProducer<DeliveryContext> = settings
            .kafka
            .producer_config(&client_id)
            .create_with_context(DeliveryContext::default())
            .map_err(RuntimeError::Config)?;
        let tick_interval = self.processor.tick_interval();
        let consumed: Vec<(IntCounter, IntCounter)> = settings
            .inputs
            .iter()
            .map(|topic| (metrics::CONSUMED.with_label_values(&[name, topic]), metrics::CONSUMED_SIZE.with_label_values(&[name, topic])))
            .collect();
        let engine = Arc::new(Mutex::new(Engine {
            name,
            processor: self.processor,
            emitter: Emitter::default(),
            consumed,
            outputs: OutputSender::new(name, producer, settings.clone(), &client_id),
        }));
        let consumer: BaseConsumer<RebalanceContext<P>> = settings
            .kafka
            .consumer_config(&settings.group, &client_id)
            .create_with_context(RebalanceContext {
                engine: engine.clone(),
                name,
                accepted_commits: Mutex::default(),
                progress_seen: Mutex::default(),
                last_error_log: Mutex::default(),
                assignment_changed: AtomicBool::new(false),
            })
            .map_err(RuntimeError::Config)?;
        let topics: Vec<&str> = settings.inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| RuntimeError::Subscribe { topics: settings.inputs.clone(), source })?;
        health.set_ready(name, true);
        info!(processor = name, group = %settings.group, inputs = ?settings.inputs, "pipeline started");

        let mut next_commit = Instant::now() + settings.commit_interval;
        let mut next_tick = tick_interval.map(|interval| Instant::now() + interval);
        let mut troubles = ConsumerTroubles::default();
        let mut paused = false;
        let mut congested_since: Option<Instant> = None;
        let mut reported = ComponentState::Ready;
        while !shutdown.is_cancelled() {
            let congested = {
                let mut engine = lock(&engine);
                engine.outputs.serve_deliveries(Duration::ZERO)?;
                let now = Instant::now();
                engine.outputs.publish_own_spans(now, false);
                if let (Some(due), Some(interval)) = (next_tick, tick_interval) {
                    if now >= due {
                        engine.tick()?;
                        next_tick = Some(now + interval);
                    }
                }
                if now >= next_commit {
                    engine.commit(&consumer, None, CommitMode::Async);
                    next_commit = now + settings.commit_interval;
                }
                engine.outputs.congested() || engine.processor.congested()
            };
            // Backpressure: outputs wait for the broker (or the processor for its store). A
            // burst is waited out serving acknowledgements; congestion that lasts pauses the input
            // partitions, which keeps the member polling and so in its group however long it
            // lasts. Not pausing for every burst spares librdkafka from dropping and fetching
            // again what it had prefetched.
            let now = Instant::now();
            let congested_for = if congested { now.duration_since(*congested_since.get_or_insert(now)) } else { Duration::ZERO };
            if !congested {
                congested_since = None;
            }
            if congested && !paused && congested_for < PAUSE_AFTER {
                lock(&engine).outputs.serve_deliveries(Duration::from_millis(10))?;
                continue;
            }
            let assignment_changed = consumer.context().assignment_changed.swap(false, Ordering::Relaxed);
            if congested && (!paused || assignment_changed) {
                pause(&consumer, name, true);
                paused = true;
            } else if !congested && paused {
                pause(&consumer, name, false);
                paused = false;
            }
            let state = match (paused, consumer.context().progress_seen.lock().unwrap().not_ready.clone()) {
                (true, _) => ComponentState::NotReady("input paused: outputs are waiting for the broker or the store".into()),
                (false, Some(why)) => ComponentState::NotReady(why),
                (false, None) => ComponentState::Ready,
            };
            if state != reported {
                match &state {
                    ComponentState::NotReady(why) => warn!(processor = name, reason = %why, "not ready"),
                    _ => info!(processor = name, "ready"),
                }
                health.set(name, state.clone());
                reported = state;
            }
            if congested {
                lock(&engine).outputs.serve_deliveries(Duration::from_millis(10))?;
            }
            match consumer.poll(Duration::from_millis(if congested { 0 } else { 100 })) {
                None => {}
                Some(Ok(message)) => lock(&engine).handle(&message)?,
                Some(Err(error)) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(RuntimeError::Fatal(KafkaError::MessageConsumption(code)))
                            .inspect_err(|_| error!(processor = name, %reason, "fatal consumer error"));
                    }
                    troubles.observe(&consumer, name, &error)?;
                }
            }
        }

        info!(processor = name, "draining");
        let result = lock(&engine).drain(&consumer, settings.drain_deadline);
        // Closing the consumer revokes its partitions; the engine lock must be free for that.
        drop(consumer);
        result.map(|()| PipelineExit::Drained)
    }
}

/// The engine, also after a panic on the processing thread poisoned its lock: the rebalance
/// callbacks that run while the consumer closes still need it.
fn lock<P: Processor>(engine: &Mutex<Engine<P>>) -> std::sync::MutexGuard<'_, Engine<P>> {
    engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything the processing thread and the rebalance callbacks share.
struct Engine<P: Processor> {
    name: &'static str,
    processor: P,
    emitter: Emitter,
    /// Per input topic: records and bytes consumed.
    consumed: Vec<(IntCounter, IntCounter)>,
    outputs: OutputSender,
}

impl<P: Processor> Engine<P> {
    fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        let topic = message.topic();
        let input = self.outputs.settings.inputs.iter().position(|t| t == topic).unwrap_or(0) as u16;
        let at = SourceOffset { source: SourcePartition { input, partition: message.partition() }, offset: message.offset() };
        let payload = message.payload().unwrap_or(&[]);
        self.outputs.progress.consumed(at);
        let (records, bytes) = &self.consumed[input as usize];
        records.inc();
        bytes.inc_by(payload.len() as u64);

        let headers = message.headers();
        let parent = headers.and_then(|headers| headers.iter().find(|h| h.key == TRACEPARENT)).and_then(|h| TraceContext::parse(h.value?));
        let (context, process) = match &self.outputs.tracer {
            Some(tracer) => tracer.begin(parent.as_ref(), headers.is_some_and(|headers| headers.iter().any(|h| h.key == SELF_TELEMETRY))),
            None => (TraceContext::child_of(parent.as_ref()), None),
        };
        self.emitter.clear();
        // What this input's outputs (and its dead letter) hold until the broker has them: its
        // offset, or the processor's low watermark of the partition if that is older. A processor
        // that can rebuild its state only from some positions (the analyzer's segment starts)
        // names the latest of them as its low watermark; holding no later offset keeps a commit
        // from landing between two of them, whatever order acknowledgements come back in.
        let low = self.processor.low_watermark(at.source).map_or(at.offset, |low| low.min(at.offset));
        let hold = SourceOffset { source: at.source, offset: low };
        self.emitter.begin_input(hold, context);
        if process.is_some() {
            self.emitter.trace_own_work();
        }
        let record = InputRecord {
            source: at.source,
            topic,
            offset: at.offset,
            key: message.key(),
            payload,
            timestamp_ms: message.timestamp().to_millis(),
        };
        let mut dead_letter = match self.processor.on_input(&record, unix_nanos(), &mut self.emitter) {
            Ok(()) => self.emitter.take_dead_letter(),
            Err(poison) => {
                self.emitter.truncate(0);
                Some(poison)
            }
        };
        let outputs = self.emitter.len();
        if let Err(rejected) = self.outputs.send(&mut self.emitter) {
            dead_letter = Some(rejected);
        }
        if let Some(poison) = &dead_letter {
            warn!(processor = self.name, topic, partition = at.source.partition, offset = at.offset, kind = poison.kind, reason = %poison.reason, "input sent to dlq");
            self.outputs.send_dead_letter(message, at, hold, poison, self.emitter.context())?;
        }
        if let (Some(process), Some(tracer)) = (process, &mut self.outputs.tracer) {
            let read = ReadFrom { topic, partition: at.source.partition, offset: at.offset, group: &self.outputs.settings.group };
            tracer.end(process, read, outputs, dead_letter.as_ref().map(|poison| poison.reason.as_str()));
        }
        self.emitter.end_input();
        Ok(())
    }

    fn tick(&mut self) -> Result<(), RuntimeError> {
        self.emitter.clear();
        self.processor.on_tick(unix_nanos(), &mut self.emitter);
        self.send_without_input()
    }

    /// Sends what was emitted outside of any input (ticks, revoke, drain). An output the producer
    /// refuses outright has no input to dead-letter; it is logged and counted.
    fn send_without_input(&mut self) -> Result<(), RuntimeError> {
        if let Err(poison) = self.outputs.send(&mut self.emitter) {
            error!(processor = self.name, reason = %poison.reason, "output refused by the producer and dropped");
        }
        Ok(())
    }

    /// Takes in the commits the broker accepted since the last call.
    fn apply_accepted_commits(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>) {
        let accepted = std::mem::take(&mut *consumer.context().accepted_commits.lock().unwrap());
        for (topic, partition, position) in accepted {
            if let Some(input) = self.outputs.settings.inputs.iter().position(|t| *t == topic) {
                self.outputs.progress.acknowledge(SourcePartition { input: input as u16, partition }, position);
            }
        }
    }

    /// Asks the broker to commit every position past what it last accepted (of `only`
    /// partitions, or all). An asynchronous commit counts once its answer comes back accepted;
    /// one that fails is asked for again at the next call. Returns whether a synchronous commit
    /// was accepted (or there was nothing to commit).
    fn commit(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>, only: Option<&[SourcePartition]>, mode: CommitMode) -> bool {
        self.apply_accepted_commits(consumer);
        let processor = &self.processor;
        let positions = self.outputs.progress.to_commit(only, |source| processor.low_watermark(source));
        for (source, uncommitted) in self.outputs.progress.uncommitted() {
            let topic = &self.outputs.settings.inputs[source.input as usize];
            metrics::UNCOMMITTED_MESSAGES.with_label_values(&[self.name, topic, &source.partition.to_string()]).set(uncommitted);
        }
        if positions.is_empty() {
            return true;
        }
        let mut list = TopicPartitionList::new();
        for (source, position) in &positions {
            let topic = &self.outputs.settings.inputs[source.input as usize];
            if let Err(error) = list.add_partition_offset(topic, source.partition, Offset::Offset(*position)) {
                warn!(processor = self.name, %error, "cannot build commit list");
            }
        }
        match consumer.commit(&list, mode) {
            Ok(()) => {
                if matches!(mode, CommitMode::Sync) {
                    metrics::COMMITTED.with_label_values(&[self.name, "ok"]).inc();
                    for &(source, position) in &positions {
                        self.outputs.progress.acknowledge(source, position);
                    }
                }
                debug!(processor = self.name, positions = ?positions.iter().map(|(s, p)| (s.partition, *p)).collect::<Vec<_>>(), ?mode, "commit sent");
                true
            }
            Err(error) => {
                metrics::COMMITTED.with_label_values(&[self.name, "error"]).inc();
                warn!(processor = self.name, %error, ?mode, "commit failed; it is asked for again");
                false
            }
        }
    }

    /// A synchronous commit, asked for again until the broker accepts it or `deadline` passes.
    fn commit_before(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>, only: Option<&[SourcePartition]>, deadline: Instant) -> bool {
        loop {
            if self.commit(consumer, only, CommitMode::Sync) {
                return true;
            }
            if Instant::now() + Duration::from_millis(200) >= deadline {
                error!(processor = self.name, "commit not accepted before the deadline; the input after the last accepted position will be read again");
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Partitions are being revoked: flush them, wait for their outputs, commit, forget.
    fn revoke(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>, sources: &[SourcePartition]) {
        self.emitter.clear();
        self.processor.on_revoke(sources, unix_nanos(), &mut self.emitter);
        let _ = self.send_without_input();
        let deadline = Instant::now() + self.outputs.settings.drain_deadline;
        while self.outputs.progress.in_flight() > 0 && Instant::now() < deadline {
            if let Err(error) = self.outputs.serve_deliveries(Duration::from_millis(20)) {
                error!(processor = self.name, %error, "delivery failed during revoke; uncommitted input will be replayed");
                break;
            }
        }
        self.commit_before(consumer, Some(sources), deadline.max(Instant::now() + Duration::from_secs(1)));
        self.processor.release_partitions(sources);
        for source in sources {
            self.outputs.progress.revoke(*source);
        }
    }

    fn drain(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>, deadline: Duration) -> Result<(), RuntimeError> {
        self.emitter.clear();
        self.processor.drain(unix_nanos(), &mut self.emitter);
        self.send_without_input()?;
        self.outputs.publish_own_spans(Instant::now(), true);
        let until = Instant::now() + deadline;
        while self.outputs.progress.in_flight() > 0 && Instant::now() < until {
            self.outputs.serve_deliveries(Duration::from_millis(20))?;
        }
        self.commit_before(consumer, None, until.max(Instant::now() + Duration::from_secs(1)));
        if self.outputs.progress.in_flight() > 0 {
            return Err(RuntimeError::DrainDeadline(deadline));
        }
        info!(processor = self.name, "drained and committed");
        Ok(())
    }
}

/// An output in flight, found again by the slot number passed as delivery opaque.
struct Slot {
    hold: Option<Held>,
    /// Empty (and unallocated) but for windowed aggregates.
    more_holds: Vec<Held>,
    /// Index into [`OutputSender::targets`].
    target: usize,
    attempts: u32,
    bytes: usize,
}

/// A topic the pipeline writes to, with its counters resolved once.
struct Target {
    topic: Arc<str>,
    produced: IntCounter,
    produced_bytes: IntCounter,
    delivery_failed: IntCounter,
    dropped: IntCounter,
}

impl Target {
    fn new(processor: &str, topic: &str) -> Self {
        let labels = [processor, topic];
        Target {
            topic: topic.into(),
            produced: metrics::PRODUCED.with_label_values(&labels),
            produced_bytes: metrics::PRODUCED_SIZE.with_label_values(&labels),
            delivery_failed: metrics::DELIVERY_FAILED.with_label_values(&labels),
            dropped: metrics::DROPPED.with_label_values(&labels),
        }
    }
}

/// The producer side: sends outputs, tracks them until acknowledged, retries failed deliveries.
struct OutputSender {
    name: &'static str,
    producer: BaseProducer<DeliveryContext>,
    settings: PipelineSettings,
    /// The output topics in order, then the dead-letter topic.
    targets: Vec<Target>,
    in_flight: IntGauge,
    /// Bytes of the outputs in flight: kept below the producer's queue size, so a full queue
    /// (which would block the sending thread) is rare and input is paused before it.
    in_flight_bytes: usize,
    max_in_flight_bytes: usize,
    progress: Progress,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
    /// The pipeline's own spans, when self-tracing is on.
    tracer: Option<SelfTracer>,
    /// Per traced output context and target: the context of its `send` span and how many records.
    sends: Vec<(TraceContext, usize, TraceContext, usize)>,
}

impl OutputSender {
    fn new(name: &'static str, producer: BaseProducer<DeliveryContext>, settings: PipelineSettings, instance: &str) -> Self {
        let targets = settings.outputs.iter().chain([&settings.dlq_topic]).map(|topic| Target::new(name, topic)).collect();
        OutputSender {
            tracer: settings.self_trace.clone().map(|trace| SelfTracer::new(trace, name, instance)),
            name,
            producer,
            targets,
            in_flight: metrics::IN_FLIGHT_OUTPUTS.with_label_values(&[name]),
            in_flight_bytes: 0,
            max_in_flight_bytes: settings.kafka.producer_queue_bytes() / 2,
            settings,
            progress: Progress::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Whether no more input should be taken until the broker acknowledges some outputs.
    fn congested(&self) -> bool {
        self.progress.in_flight() >= self.settings.max_in_flight || self.in_flight_bytes >= self.max_in_flight_bytes
    }

    fn dlq_target(&self) -> usize {
        self.targets.len() - 1
    }

    /// Takes a slot for an output holding `hold` and `more_holds` until the broker has it.
    fn allocate(&mut self, hold: Option<SourceOffset>, more_holds: &[SourceOffset], target: usize, bytes: usize) -> usize {
        let slot = Slot {
            hold: hold.map(|at| self.progress.hold(at)),
            more_holds: more_holds.iter().map(|&at| self.progress.hold(at)).collect(),
            target,
            attempts: 1,
            bytes,
        };
        self.in_flight.inc();
        self.in_flight_bytes += slot.bytes;
        match self.free_slots.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn free(&mut self, index: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(index)?.take()?;
        self.free_slots.push(index);
        for &hold in slot.hold.iter().chain(&slot.more_holds) {
            self.progress.release(hold);
        }
        self.in_flight.dec();
        self.in_flight_bytes -= slot.bytes;
        Some(slot)
    }

    /// Sends everything in the emitter. A full queue is backpressure: serve acknowledgements and
    /// retry. An output the producer refuses outright (e.g. larger than message.max.bytes) is
    /// returned as poison so the input it came from can be dead-lettered.
    fn send(&mut self, emitter: &mut Emitter) -> Result<(), Poison> {
        let mut refused = None;
        self.sends.clear();
        for record in emitter.emitted() {
            let context = self.send_context(record);
            if let Err(poison) = self.send_record(emitter, record, context) {
                refused = Some(poison);
            }
        }
        emitter.clear();
        if let Some(tracer) = &mut self.tracer {
            for &(parent, target, context, records) in &self.sends {
                tracer.send(&parent, &self.targets[target].topic, context, records);
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// The context a record carries: its own, or, when its work is traced, that of the `send`
    /// span of its input (or tick) and topic.
    fn send_context(&mut self, record: &EmittedRecord) -> TraceContext {
        if self.tracer.is_none() || !is_traced(&record.context) {
            return record.context;
        }
        let target = record.output.0 as usize;
        if let Some(send) = self.sends.iter_mut().find(|(parent, t, _, _)| parent.span_id == record.context.span_id && *t == target) {
            send.3 += 1;
            return send.2;
        }
        let context = TraceContext::child_of(Some(&record.context));
        self.sends.push((record.context, target, context, 1));
        context
    }

    /// Publishes the pipeline's own spans if it is time (or `force`): unkeyed, fire and forget,
    /// holding no input; lost ones are counted.
    fn publish_own_spans(&mut self, now: Instant, force: bool) {
        let Some(tracer) = &mut self.tracer else { return };
        let Some((payload, spans)) = tracer.flush(now, force) else { return };
        let record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(tracer.topic(), OWN_SPANS - spans).payload(payload.as_slice()).headers(self_trace::record_headers());
        // Counted published or dropped by its delivery report.
        if let Err((error, _)) = self.producer.send(record) {
            debug!(processor = self.name, %error, "own spans not published");
            self_trace::count(self.name, "dropped", spans);
        }
    }

    fn send_record(&mut self, emitter: &Emitter, record: &EmittedRecord, context: TraceContext) -> Result<(), Poison> {
        let value = emitter.value(record);
        let target = record.output.0 as usize;
        assert!(target < self.dlq_target(), "processor emitted to output {target}, which the pipeline does not declare");
        let slot = self.allocate(record.hold, emitter.more_holds(record), target, value.len());
        let headers = OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: TRACEPARENT, value: Some(&context.to_header()) });
        let topic = self.targets[target].topic.clone();
        let base = BaseRecord::with_opaque_to(&topic, slot).key(emitter.key(record)).payload(value).headers(headers);
        self.enqueue(base, slot, true).map_err(|error| {
            self.targets[target].dropped.inc();
            Poison::new("output_rejected", format!("producer refused an output of {} bytes to {topic}: {error}", value.len()))
        })
    }

    /// Writes `message`, read at `at`, to the dead-letter topic; the record holds `hold` until the
    /// broker has it.
    fn send_dead_letter(&mut self, message: &BorrowedMessage<'_>, at: SourceOffset, hold: SourceOffset, poison: &Poison, context: TraceContext) -> Result<(), RuntimeError> {
        metrics::DLQ.with_label_values(&[self.name, poison.kind]).inc();
        let payload = message.payload().unwrap_or(&[]);
        let mut headers = OwnedHeaders::new_with_capacity(8);
        if let Some(original) = message.headers() {
            for header in original.iter().filter(|h| h.key != TRACEPARENT) {
                headers = headers.insert(header);
            }
        }
        let partition = at.source.partition.to_string();
        let offset = at.offset.to_string();
        headers = headers
            .insert(Header { key: TRACEPARENT, value: Some(&context.to_header()) })
            .insert(Header { key: dlq::HEADER_PROCESSOR, value: Some(self.name) })
            .insert(Header { key: dlq::HEADER_KIND, value: Some(poison.kind) })
            .insert(Header { key: dlq::HEADER_REASON, value: Some(&poison.reason) })
            .insert(Header { key: dlq::HEADER_SOURCE_TOPIC, value: Some(message.topic()) })
            .insert(Header { key: dlq::HEADER_SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: dlq::HEADER_SOURCE_OFFSET, value: Some(&offset) });
        let target = self.dlq_target();
        let slot = self.allocate(Some(hold), &[], target, payload.len());
        let topic = self.targets[target].topic.clone();
        let mut base = BaseRecord::with_opaque_to(&topic, slot).payload(payload).headers(headers);
        if let Some(key) = message.key() {
            base = base.key(key);
        }
        if let Err(error) = self.enqueue(base, slot, true) {
            // Not even the DLQ takes it (larger than message.max.bytes): nothing else can be done.
            self.targets[target].dropped.inc();
            error!(processor = self.name, topic = message.topic(), partition = at.source.partition, offset = at.offset, %error, "dlq refused the record; it is dropped");
        }
        Ok(())
    }

    /// Sends `record`, waiting out a full queue. On any other refusal the slot is freed only with
    /// `free_on_refusal`: a record sent again after a failed delivery keeps holding its input
    /// offset, so that the pipeline, which then stops, never commits past it.
    fn enqueue(&mut self, mut record: BaseRecord<'_, [u8], [u8], usize>, slot: usize, free_on_refusal: bool) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                    // Acknowledgements are applied later; the slot of this record stays allocated.
                    self.apply_reports().map_err(|e| match e {
                        RuntimeError::Delivery { source, .. } => source,
                        _ => KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    })?;
                }
                Err((error, _)) => {
                    if free_on_refusal {
                        self.free(slot);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Polls the producer for up to `timeout` and applies the delivery reports.
    fn serve_deliveries(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        self.producer.poll(timeout);
        // A zero-timeout poll serves one event (one batch of reports); keep going while events
        // bring reports, so acknowledgements never lag behind an idle input.
        for _ in 0..10_000 {
            let queued = self.producer.context().reports.lock().unwrap().len();
            self.producer.poll(Duration::ZERO);
            if self.producer.context().reports.lock().unwrap().len() == queued {
                break;
            }
        }
        self.apply_reports()
    }

    fn apply_reports(&mut self) -> Result<(), RuntimeError> {
        let reports = std::mem::take(&mut *self.producer.context().reports.lock().unwrap());
        for report in reports {
            let (DeliveryReport::Delivered(index) | DeliveryReport::Failed { slot: index, .. }) = report;
            if let Some(spans) = own_spans_of(index) {
                self_trace::count(self.name, if matches!(report, DeliveryReport::Delivered(_)) { "published" } else { "dropped" }, spans);
                continue;
            }
            match report {
                DeliveryReport::Delivered(index) => {
                    if let Some(slot) = self.free(index) {
                        let target = &self.targets[slot.target];
                        target.produced.inc();
                        target.produced_bytes.inc_by(slot.bytes as u64);
                    }
                }
                DeliveryReport::Failed { slot: index, error, message } => self.retry(index, error, message)?,
            }
        }
        Ok(())
    }

    /// A delivery failed. An error that may pass (the broker down, a leader moving, a timeout)
    /// is retried for as long as it lasts: the output keeps holding its input offset, and input
    /// is paused once too many outputs wait. An output the broker refuses for what it is (larger
    /// than the topic's `max.message.bytes`, a record it will not take) goes to the dead-letter
    /// topic with the reason and the input position it holds; one the dead-letter topic refuses
    /// too is counted as dropped and logged with that position.
    fn retry(&mut self, index: usize, error: KafkaError, message: OwnedMessage) -> Result<(), RuntimeError> {
        let dlq = self.dlq_target();
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Ok(()) };
        let failed_target = slot.target;
        let hold = slot.hold.map(|held| held.at);
        let target = &self.targets[failed_target];
        let topic = target.topic.clone();
        target.delivery_failed.inc();
        slot.attempts += 1;
        let attempts = slot.attempts;
        let payload = message.payload().unwrap_or(&[]);
        if crate::publish::refuses_for_good(&error) {
            let (source_topic, partition, offset) = match hold {
                Some(at) => (self.settings.inputs.get(at.source.input as usize).cloned().unwrap_or_default(), at.source.partition.to_string(), at.offset.to_string()),
                None => (String::new(), String::new(), String::new()),
            };
            if failed_target == dlq {
                self.targets[dlq].dropped.inc();
                error!(processor = self.name, %topic, bytes = payload.len(), %source_topic, partition, offset, %error, "the dead-letter topic refused the record too; it is dropped");
                self.free(index);
                return Ok(());
            }
            let reason = format!("{topic} refused an output of {} bytes: {error}", payload.len());
            warn!(processor = self.name, %topic, bytes = payload.len(), %source_topic, partition, offset, %error, "output refused by the broker; sent to the dead-letter topic");
            metrics::DLQ.with_label_values(&[self.name, "output_refused"]).inc();
            let mut headers = OwnedHeaders::new_with_capacity(8);
            if let Some(original) = message.headers() {
                for header in original.iter() {
                    headers = headers.insert(header);
                }
            }
            headers = headers
                .insert(Header { key: dlq::HEADER_PROCESSOR, value: Some(self.name) })
                .insert(Header { key: dlq::HEADER_KIND, value: Some("output_refused") })
                .insert(Header { key: dlq::HEADER_REASON, value: Some(&reason) })
                .insert(Header { key: dlq::HEADER_OUTPUT_TOPIC, value: Some(&*topic) })
                .insert(Header { key: dlq::HEADER_SOURCE_TOPIC, value: Some(&source_topic) })
                .insert(Header { key: dlq::HEADER_SOURCE_PARTITION, value: Some(&partition) })
                .insert(Header { key: dlq::HEADER_SOURCE_OFFSET, value: Some(&offset) });
            if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
                slot.target = dlq;
                slot.attempts = 1;
            }
            let dlq_topic = self.targets[dlq].topic.clone();
            let mut record = BaseRecord::with_opaque_to(&dlq_topic, index).payload(payload).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            return self.enqueue(record, index, false).map_err(|source| RuntimeError::Delivery { topic: dlq_topic.to_string(), attempts: 1, source });
        }
        if attempts == 2 || attempts % 10 == 0 {
            warn!(processor = self.name, %topic, attempt = attempts, %error, "delivery failed; retrying for as long as it fails");
        }
        // No pause here: librdkafka has already retried with backoff for `message.timeout.ms`,
        // and the record sent again waits that long once more.
        let mut record = BaseRecord::with_opaque_to(&topic, index).payload(payload);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.clone());
        }
        self.enqueue(record, index, false).map_err(|source| RuntimeError::Delivery { topic: topic.to_string(), attempts, source })
    }
}

enum DeliveryReport {
    Delivered(usize),
    Failed { slot: usize, error: KafkaError, message: OwnedMessage },
}

/// Queues delivery reports for the processing thread; they arrive while it polls the producer.
#[derive(Default)]
struct DeliveryContext {
    reports: Mutex<Vec<DeliveryReport>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let report = match result {
            Ok(_) => DeliveryReport::Delivered(slot),
            Err((error, message)) => DeliveryReport::Failed { slot, error: error.clone(), message: message.detach() },
        };
        self.reports.lock().unwrap().push(report);
    }
}

/// (input, partition) pairs, sorted, for logs.
fn partition_numbers(sources: &[SourcePartition]) -> Vec<(u16, i32)> {
    let mut numbers: Vec<(u16, i32)> = sources.iter().map(|s| (s.input, s.partition)).collect();
    numbers.sort_unstable();
    numbers
}

struct RebalanceContext<P: Processor> {
    engine: Arc<Mutex<Engine<P>>>,
    name: &'static str,
    /// (topic, partition, position) of each commit the broker accepted, queued by the commit
    /// callback (which may run while the engine is locked) for the processing thread.
    accepted_commits: Mutex<Vec<(String, i32, i64)>>,
    /// What the statistics showed about connectivity and progress.
    progress_seen: Mutex<ProgressSeen>,
    /// librdkafka's last warning or error, which says why (a refused password, a certificate
    /// that does not verify) where the error event carries only a code.
    last_error_log: Mutex<Option<String>>,
    /// Set by an assignment, so a pipeline paused by backpressure pauses the new partitions too.
    assignment_changed: AtomicBool,
}

/// What the consumer's statistics (every `statistics.interval.ms`) showed.
#[derive(Debug, Default)]
struct ProgressSeen {
    /// A broker has been up, or the group has assigned partitions, since the pipeline started:
    /// authentication and TLS work.
    connected_once: bool,
    /// Per assigned partition: its position at the last statistics and how many statistics in a
    /// row it has had records waiting after that position without moving.
    partitions: HashMap<(String, i32), (i64, u32)>,
    /// Why the pipeline is not doing its work now, if it is not.
    not_ready: Option<String>,
}

/// The delivery opaques of the pipeline's own span records, above every slot: `OWN_SPANS - n` for
/// a record of `n` spans, so its delivery report counts them published or dropped and holds nothing.
const OWN_SPANS: usize = usize::MAX;

/// How many of tracepipe's own spans a delivery opaque stands for, if it is of such a record.
fn own_spans_of(opaque: usize) -> Option<usize> {
    // A flush holds at most MAX_WAITING_SPANS spans, far fewer than a pipeline's slots can reach.
    (opaque > OWN_SPANS - (1 << 24)).then(|| OWN_SPANS - opaque)
}

/// How long outputs may wait for the broker before the input is paused.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// Statistics in a row with input waiting and no record consumed before `/ready` says so.
const STALLED_INTERVALS: u32 = 2;

impl<P: Processor> RebalanceContext<P> {
    fn sources(&self, list: &TopicPartitionList) -> Vec<SourcePartition> {
        let engine = lock(&self.engine);
        list.elements()
            .iter()
            .map(|e| SourcePartition {
                input: engine.outputs.settings.inputs.iter().position(|t| t == e.topic()).unwrap_or(0) as u16,
                partition: e.partition(),
            })
            .collect()
    }
}

impl<P: Processor> ClientContext for RebalanceContext<P> {
    fn stats(&self, statistics: Statistics) {
        let mut seen = self.progress_seen.lock().unwrap();
        let mut positions = HashMap::with_capacity(seen.partitions.len());
        let mut stalled: Vec<(String, i64)> = Vec::new();
        for (topic, topic_stats) in &statistics.topics {
            for (&partition, partition_stats) in &topic_stats.partitions {
                if partition < 0 || !partition_stats.desired {
                    continue;
                }
                if partition_stats.consumer_lag >= 0 {
                    metrics::LAG.with_label_values(&[self.name, topic, &partition.to_string()]).set(partition_stats.consumer_lag);
                }
                // Where the partition is: one past the last record handed out, or where it was
                // committed before any was, or the log's start (where a group without a commit
                // begins) when neither; unknown before the broker said.
                let position = [partition_stats.app_offset, partition_stats.committed_offset, partition_stats.lo_offset].into_iter().find(|at| *at >= 0).unwrap_or(-1);
                if position < 0 || partition_stats.hi_offset < 0 {
                    continue;
                }
                let key = (topic.clone(), partition);
                let intervals = match seen.partitions.get(&key) {
                    Some(&(before, intervals)) if before == position && partition_stats.hi_offset > position => intervals + 1,
                    _ => 0,
                };
                if intervals >= STALLED_INTERVALS {
                    stalled.push((format!("{topic} partition {partition} at offset {position}"), partition_stats.hi_offset - position));
                }
                positions.insert(key, (position, intervals));
            }
        }
        seen.partitions = positions;
        // Brokers by their node id; the bootstrap entries (node id -1) are only how they were found.
        let brokers: Vec<(&str, &str)> = statistics.brokers.values().filter(|b| b.nodeid >= 0).map(|b| (b.name.as_str(), b.state.as_str())).collect();
        let connected = brokers.iter().any(|(_, state)| *state == "UP");
        seen.connected_once |= connected;
        seen.not_ready = if !connected {
            let states: Vec<String> = brokers.iter().map(|(name, state)| format!("{name} {state}")).collect();
            Some(if states.is_empty() { "no broker reachable".to_string() } else { format!("no broker reachable ({})", states.join(", ")) })
        } else if !stalled.is_empty() {
            stalled.sort();
            let waiting: i64 = stalled.iter().map(|(_, waiting)| waiting).sum();
            let names: Vec<&str> = stalled.iter().map(|(name, _)| name.as_str()).collect();
            Some(format!("{waiting} input records waiting and none consumed for {STALLED_INTERVALS} statistics intervals: {}", names.join(", ")))
        } else {
            None
        };
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let says_why = match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", processor = self.name, "librdkafka: {facility} {message}");
                true
            }
            RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", processor = self.name, "librdkafka: {facility} {message}");
                true
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", processor = self.name, "librdkafka: {facility} {message}");
                false
            }
            RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", processor = self.name, "librdkafka: {facility} {message}");
                false
            }
        };
        if says_why {
            *self.last_error_log.lock().unwrap() = Some(format!("{facility}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error!(target: "librdkafka", processor = self.name, %error, "librdkafka: {reason}");
        *self.last_error_log.lock().unwrap() = Some(reason.to_string());
    }
}

/// Pauses (or resumes) every assigned partition. librdkafka drops what it had fetched for a
/// paused partition and fetches again from the application's position (one past the last record
/// handed out) when it is resumed, so nothing is skipped; against Tansu 0.6.0 that refetch starts
/// mid-batch, which its fetch fault turns into skipped records (see the test harness).
fn pause<C: ConsumerContext>(consumer: &BaseConsumer<C>, name: &str, paused: bool) {
    let outcome = consumer.assignment().and_then(|assignment| if paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) });
    match outcome {
        Ok(()) if paused => info!(processor = name, "input paused: outputs are waiting for the broker or the store"),
        Ok(()) => info!(processor = name, "input resumed"),
        Err(error) => warn!(processor = name, %error, paused, "cannot pause or resume the input"),
    }
}

/// How long a record that cannot be read may hold its partition before the pipeline stops.
const UNREADABLE_GRACE: Duration = Duration::from_secs(30);
/// How often one kind of transient consumer error is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Consumer errors over time: what is transient (logged, at most every [`WARN_EVERY`] per
/// kind), what refuses the pipeline for good (stops it with the reason), and what keeps a
/// partition from moving (a record that cannot be read stops the pipeline, naming the partitions
/// and positions, once it has held them for [`UNREADABLE_GRACE`]).
#[derive(Default)]
struct ConsumerTroubles {
    warned: Vec<(RDKafkaErrorCode, Instant)>,
    /// Since when records could not be read, the error, and each assigned partition's position then.
    unreadable: Option<(Instant, RDKafkaErrorCode, Vec<(String, i32, Offset)>)>,
    unreadable_last: Option<Instant>,
}

fn positions<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Vec<(String, i32, Offset)> {
    consumer.position().map(|list| list.elements().iter().map(|e| (e.topic().to_string(), e.partition(), e.offset())).collect()).unwrap_or_default()
}

impl ConsumerTroubles {
    fn observe<P: Processor>(&mut self, consumer: &BaseConsumer<RebalanceContext<P>>, name: &'static str, error: &KafkaError) -> Result<(), RuntimeError> {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let detail = || consumer.context().last_error_log.lock().unwrap().clone().unwrap_or_else(|| error.to_string());
        let now = Instant::now();
        match code {
            // A TLS peer that refuses the handshake (no client certificate, one it does not
            // trust) shows as a transport failure whose reason is the TLS alert.
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure
                if !consumer.context().progress_seen.lock().unwrap().connected_once
                    && (code != RDKafkaErrorCode::BrokerTransportFailure || detail().contains("SSL routines")) =>
            {
                return Err(RuntimeError::Refused { what: "the connection to Kafka (TLS or SASL)", code, detail: detail() });
            }
            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                return Err(RuntimeError::Refused { what: "access to the input topics or the consumer group (ACLs)", code, detail: detail() });
            }
            RDKafkaErrorCode::BadMessage
            | RDKafkaErrorCode::BadCompression
            | RDKafkaErrorCode::NotImplemented
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedCompressionType => {
                if self.unreadable_last.is_some_and(|last| now.duration_since(last) > UNREADABLE_GRACE) {
                    self.unreadable = None;
                }
                self.unreadable_last = Some(now);
                match &self.unreadable {
                    None => {
                        warn!(processor = name, %error, detail = %detail(), "a record cannot be read; if its partition does not move within {UNREADABLE_GRACE:?} the pipeline stops");
                        self.unreadable = Some((now, code, positions(consumer)));
                    }
                    Some((since, first, before)) if now.duration_since(*since) >= UNREADABLE_GRACE => {
                        let now_at = positions(consumer);
                        // A partition is stuck where it has not moved since the first error and
                        // records wait after its position: the next record to hand out, or, where
                        // none was handed out yet, the committed offset (the log's start without one).
                        let committed = consumer.committed(Duration::from_secs(5)).ok();
                        let seen = consumer.context().progress_seen.lock().unwrap().partitions.clone();
                        let stuck: Vec<String> = before
                            .iter()
                            .filter(|p| now_at.contains(p))
                            .filter_map(|(topic, partition, offset)| {
                                let (low, high) = consumer.client().fetch_watermarks(topic, *partition, Duration::from_secs(2)).ok()?;
                                // Where the statistics last saw the partition, else its
                                // position, its committed offset, its log's start.
                                let at = match (seen.get(&(topic.clone(), *partition)), offset) {
                                    (Some(&(at, _)), _) => at,
                                    (None, Offset::Offset(at)) => *at,
                                    (None, _) => committed
                                        .as_ref()
                                        .and_then(|list| list.find_partition(topic, *partition))
                                        .and_then(|element| element.offset().to_raw())
                                        .filter(|at| *at >= 0)
                                        .unwrap_or(low),
                                };
                                (at < high).then(|| format!("{topic} partition {partition} at offset {at}"))
                            })
                            .collect();
                        if stuck.is_empty() {
                            // Every partition moved since: whatever it was, it passed.
                            self.unreadable = None;
                            return Ok(());
                        }
                        return Err(RuntimeError::Unreadable { code: *first, partitions: stuck, detail: detail() });
                    }
                    Some(_) => {}
                }
            }
            _ => {
                let due = match self.warned.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, last)) if now.duration_since(*last) < WARN_EVERY => false,
                    Some((_, last)) => {
                        *last = now;
                        true
                    }
                    None => {
                        self.warned.push((code, now));
                        true
                    }
                };
                if due {
                    warn!(processor = name, %error, detail = %detail(), "consumer error; librdkafka retries (logged at most every {WARN_EVERY:?})");
                }
            }
        }
        Ok(())
    }
}

impl<P: Processor> ConsumerContext for RebalanceContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let sources = self.sources(list);
            info!(processor = self.name, partitions = ?partition_numbers(&sources), "partitions revoked");
            metrics::REBALANCED.with_label_values(&[self.name, "revoke"]).inc();
            lock(&self.engine).revoke(consumer, &sources);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let sources = self.sources(list);
                info!(processor = self.name, partitions = ?partition_numbers(&sources), "partitions assigned");
                metrics::REBALANCED.with_label_values(&[self.name, "assign"]).inc();
                // The group coordinator answered: authentication and TLS work.
                self.progress_seen.lock().unwrap().connected_once = true;
                let mut engine = lock(&self.engine);
                for source in sources {
                    engine.outputs.progress.assign(source);
                }
                self.assignment_changed.store(true, Ordering::Relaxed);
            }
            Rebalance::Error(error) => warn!(processor = self.name, %error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::COMMITTED.with_label_values(&[self.name, outcome]).inc();
        // Each partition has its own outcome; one refused does not undo the others.
        let mut accepted = self.accepted_commits.lock().unwrap();
        for element in offsets.elements() {
            if let (Ok(()), Offset::Offset(position)) = (element.error(), element.offset()) {
                accepted.push((element.topic().to_string(), element.partition(), position));
            }
        }
    }
}
