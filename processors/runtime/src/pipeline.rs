//! Runs one processor against Kafka on a dedicated thread (see the crate docs for the offset
//! protocol).
//!
//! The thread owns a `BaseConsumer` and a `BaseProducer`. Delivery reports are queued by the
//! producer context and applied before new input is taken, so acknowledgements always advance
//! first. Rebalance callbacks run inside `consumer.poll` on the same thread; they reach the engine
//! through a mutex that is never held across a poll of the consumer.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin::Health;
use crate::dlq;
use crate::error::RuntimeError;
use crate::metrics;
use tracepipe_processor::{EmittedRecord, Emitter, InputRecord, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use crate::progress::Progress;
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
                let result = self.run(&shutdown, &health);
                health.set_ready(name, false);
                if let Err(error) = &result {
                    error!(processor = name, %error, "pipeline stopped");
                }
                result
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
        let consumed = settings
            .inputs
            .iter()
            .map(|topic| (metrics::CONSUMED.with_label_values(&[name, topic]), metrics::CONSUMED_SIZE.with_label_values(&[name, topic])))
            .collect();
        let engine = Arc::new(Mutex::new(Engine {
            name,
            processor: self.processor,
            emitter: Emitter::default(),
            consumed,
            outputs: OutputSender::new(name, producer, settings.clone()),
        }));
        let consumer: BaseConsumer<RebalanceContext<P>> = settings
            .kafka
            .consumer_config(&settings.group, &client_id)
            .create_with_context(RebalanceContext { engine: engine.clone(), name })
            .map_err(RuntimeError::Config)?;
        let topics: Vec<&str> = settings.inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| RuntimeError::Subscribe { topics: settings.inputs.clone(), source })?;
        health.set_ready(name, true);
        info!(processor = name, group = %settings.group, inputs = ?settings.inputs, "pipeline started");

        let mut next_commit = Instant::now() + settings.commit_interval;
        let mut next_tick = tick_interval.map(|interval| Instant::now() + interval);
        while !shutdown.is_cancelled() {
            {
                let mut engine = engine.lock().unwrap();
                engine.outputs.serve_deliveries(Duration::ZERO)?;
                let now = Instant::now();
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
                if engine.outputs.progress.in_flight() >= settings.max_in_flight {
                    // Backpressure: serve acknowledgements until there is room.
                    engine.outputs.serve_deliveries(Duration::from_millis(10))?;
                    continue;
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => engine.lock().unwrap().handle(&message)?,
                Some(Err(error)) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(RuntimeError::Fatal(KafkaError::MessageConsumption(code)))
                            .inspect_err(|_| error!(processor = name, %reason, "fatal consumer error"));
                    }
                    warn!(processor = name, %error, "consumer error, retrying");
                }
            }
        }

        info!(processor = name, "draining");
        let result = engine.lock().unwrap().drain(&consumer, settings.drain_deadline);
        // Closing the consumer revokes its partitions; the engine lock must be free for that.
        drop(consumer);
        result.map(|()| PipelineExit::Drained)
    }
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

        let parent = message
            .headers()
            .and_then(|headers| headers.iter().find(|h| h.key == TRACEPARENT))
            .and_then(|h| TraceContext::parse(h.value?));
        self.emitter.clear();
        // What this input's outputs (and its dead letter) hold until the broker has them: its
        // offset, or the processor's low watermark of the partition if that is older. A processor
        // that can rebuild its state only from some positions (the analyzer's segment starts)
        // names the latest of them as its low watermark; holding no later offset keeps a commit
        // from landing between two of them, whatever order acknowledgements come back in.
        let low = self.processor.low_watermark(at.source).map_or(at.offset, |low| low.min(at.offset));
        let hold = SourceOffset { source: at.source, offset: low };
        self.emitter.begin_input(hold, TraceContext::child_of(parent.as_ref()));
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
        if let Err(rejected) = self.outputs.send(&mut self.emitter) {
            dead_letter = Some(rejected);
        }
        if let Some(poison) = dead_letter {
            warn!(processor = self.name, topic, partition = at.source.partition, offset = at.offset, kind = poison.kind, reason = %poison.reason, "input sent to dlq");
            self.outputs.send_dead_letter(message, at, hold, &poison, self.emitter.context())?;
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

    /// Commits positions that moved (of `only` partitions, or all).
    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, only: Option<&[SourcePartition]>, mode: CommitMode) {
        let processor = &self.processor;
        let advanced = self.outputs.progress.advance_commits(only, |source| processor.low_watermark(source));
        for (source, uncommitted) in self.outputs.progress.uncommitted() {
            let topic = &self.outputs.settings.inputs[source.input as usize];
            metrics::UNCOMMITTED_MESSAGES.with_label_values(&[self.name, topic, &source.partition.to_string()]).set(uncommitted);
        }
        if advanced.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (source, position) in &advanced {
            let topic = &self.outputs.settings.inputs[source.input as usize];
            if let Err(error) = list.add_partition_offset(topic, source.partition, Offset::Offset(*position)) {
                warn!(processor = self.name, %error, "cannot build commit list");
            }
        }
        match consumer.commit(&list, mode) {
            Ok(()) => debug!(processor = self.name, positions = ?advanced.iter().map(|(s, p)| (s.partition, *p)).collect::<Vec<_>>(), "committed"),
            Err(error) => {
                metrics::COMMITTED.with_label_values(&[self.name, "error"]).inc();
                warn!(processor = self.name, %error, "commit failed; the next commit retries");
            }
        }
    }

    /// Partitions are being revoked: flush them, wait for their outputs, commit, forget.
    fn revoke<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, sources: &[SourcePartition]) {
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
        self.commit(consumer, Some(sources), CommitMode::Sync);
        self.processor.release_partitions(sources);
        for source in sources {
            self.outputs.progress.revoke(*source);
        }
    }

    fn drain<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, deadline: Duration) -> Result<(), RuntimeError> {
        self.emitter.clear();
        self.processor.drain(unix_nanos(), &mut self.emitter);
        self.send_without_input()?;
        let until = Instant::now() + deadline;
        while self.outputs.progress.in_flight() > 0 && Instant::now() < until {
            self.outputs.serve_deliveries(Duration::from_millis(20))?;
        }
        self.commit(consumer, None, CommitMode::Sync);
        if self.outputs.progress.in_flight() > 0 {
            return Err(RuntimeError::DrainDeadline(deadline));
        }
        info!(processor = self.name, "drained and committed");
        Ok(())
    }
}

/// An output in flight, found again by the slot number passed as delivery opaque.
struct Slot {
    hold: Option<SourceOffset>,
    /// Empty (and unallocated) but for windowed aggregates.
    more_holds: Vec<SourceOffset>,
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
    progress: Progress,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
}

impl OutputSender {
    fn new(name: &'static str, producer: BaseProducer<DeliveryContext>, settings: PipelineSettings) -> Self {
        let targets = settings.outputs.iter().chain([&settings.dlq_topic]).map(|topic| Target::new(name, topic)).collect();
        OutputSender {
            name,
            producer,
            targets,
            in_flight: metrics::IN_FLIGHT_OUTPUTS.with_label_values(&[name]),
            settings,
            progress: Progress::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
        }
    }

    fn dlq_target(&self) -> usize {
        self.targets.len() - 1
    }

    fn allocate(&mut self, slot: Slot) -> usize {
        for &hold in slot.hold.iter().chain(&slot.more_holds) {
            self.progress.hold(hold);
        }
        self.in_flight.inc();
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
        Some(slot)
    }

    /// Sends everything in the emitter. A full queue is backpressure: serve acknowledgements and
    /// retry. An output the producer refuses outright (e.g. larger than message.max.bytes) is
    /// returned as poison so the input it came from can be dead-lettered.
    fn send(&mut self, emitter: &mut Emitter) -> Result<(), Poison> {
        let mut refused = None;
        for record in emitter.emitted() {
            if let Err(poison) = self.send_record(emitter, record) {
                refused = Some(poison);
            }
        }
        emitter.clear();
        refused.map_or(Ok(()), Err)
    }

    fn send_record(&mut self, emitter: &Emitter, record: &EmittedRecord) -> Result<(), Poison> {
        let value = emitter.value(record);
        let target = record.output.0 as usize;
        assert!(target < self.dlq_target(), "processor emitted to output {target}, which the pipeline does not declare");
        let slot = self.allocate(Slot { hold: record.hold, more_holds: emitter.more_holds(record).to_vec(), target, attempts: 1, bytes: value.len() });
        let headers = OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: TRACEPARENT, value: Some(&record.context.to_header()) });
        let topic = self.targets[target].topic.clone();
        let base = BaseRecord::with_opaque_to(&topic, slot).key(emitter.key(record)).payload(value).headers(headers);
        self.enqueue(base, slot).map_err(|error| {
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
        let slot = self.allocate(Slot { hold: Some(hold), more_holds: Vec::new(), target, attempts: 1, bytes: payload.len() });
        let topic = self.targets[target].topic.clone();
        let mut base = BaseRecord::with_opaque_to(&topic, slot).payload(payload).headers(headers);
        if let Some(key) = message.key() {
            base = base.key(key);
        }
        if let Err(error) = self.enqueue(base, slot) {
            // Not even the DLQ takes it (larger than message.max.bytes): nothing else can be done.
            self.targets[target].dropped.inc();
            error!(processor = self.name, topic = message.topic(), partition = at.source.partition, offset = at.offset, %error, "dlq refused the record; it is dropped");
        }
        Ok(())
    }

    fn enqueue(&mut self, mut record: BaseRecord<'_, [u8], [u8], usize>, slot: usize) -> Result<(), KafkaError> {
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
                    self.free(slot);
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

    fn retry(&mut self, index: usize, error: KafkaError, message: OwnedMessage) -> Result<(), RuntimeError> {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Ok(()) };
        let target = &self.targets[slot.target];
        let topic = target.topic.clone();
        target.delivery_failed.inc();
        slot.attempts += 1;
        if slot.attempts > self.settings.delivery_attempts {
            return Err(RuntimeError::Delivery { topic: topic.to_string(), attempts: slot.attempts - 1, source: error });
        }
        warn!(processor = self.name, %topic, attempt = slot.attempts, %error, "delivery failed, retrying");
        std::thread::sleep(Duration::from_millis(100 * u64::from(slot.attempts)));
        let mut record = BaseRecord::with_opaque_to(&topic, index).payload(message.payload().unwrap_or(&[]));
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.clone());
        }
        self.enqueue(record, index).map_err(|source| RuntimeError::Delivery { topic: topic.to_string(), attempts: 1, source })
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
}

impl<P: Processor> RebalanceContext<P> {
    fn sources(&self, list: &TopicPartitionList) -> Vec<SourcePartition> {
        let engine = self.engine.lock().unwrap();
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
        for (topic, topic_stats) in &statistics.topics {
            for (partition, partition_stats) in &topic_stats.partitions {
                if *partition >= 0 && partition_stats.desired && partition_stats.consumer_lag >= 0 {
                    metrics::LAG
                        .with_label_values(&[self.name, topic, &partition.to_string()])
                        .set(partition_stats.consumer_lag);
                }
            }
        }
    }
}

impl<P: Processor> ConsumerContext for RebalanceContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let sources = self.sources(list);
            info!(processor = self.name, partitions = ?partition_numbers(&sources), "partitions revoked");
            metrics::REBALANCED.with_label_values(&[self.name, "revoke"]).inc();
            self.engine.lock().unwrap().revoke(consumer, &sources);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let sources = self.sources(list);
                info!(processor = self.name, partitions = ?partition_numbers(&sources), "partitions assigned");
                metrics::REBALANCED.with_label_values(&[self.name, "assign"]).inc();
                let mut engine = self.engine.lock().unwrap();
                for source in sources {
                    engine.outputs.progress.assign(source);
                }
            }
            Rebalance::Error(error) => warn!(processor = self.name, %error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::COMMITTED.with_label_values(&[self.name, outcome]).inc();
    }
}
