//! The sink: sampled traces, dependency edge windows, rollups and alerts from their topics into the
//! store (SQLite by default, PostgreSQL by URL), for the query server and the UI.
//!
//! ## Offsets and idempotency
//!
//! Rows are gathered into a batch and written in one transaction when the batch reaches
//! `batch_rows` or its oldest row is `flush_interval` old. Until then every row holds its input
//! offset ([`Processor::low_watermark`]), so the pipeline commits only what the store has
//! committed: a crash replays the uncommitted tail, and since every table is keyed (see
//! [`batch`]) the replay inserts nothing twice.
//!
//! ## Off the consumer's thread
//!
//! Batches are written, and retention deletes run, on a writer thread of their own, so the
//! consumer keeps polling (and stays in its group) however long the store takes. A batch handed to
//! the writer keeps holding its offsets until the writer says it is committed, as an output holds
//! its offset until the broker acknowledges it.
//!
//! ## A store that refuses writes
//!
//! The writer retries a failed batch with backoff (up to 10 s between attempts) for as long as it
//! fails, and reconnects when the connection is gone (a PostgreSQL restart). With two batches
//! waiting for it and a third full, the sink reports itself congested: the pipeline pauses its
//! input and keeps polling, so a store outage becomes consumer lag, not memory growth, not loss and
//! not an eviction from the group. A batch the store refuses for the values it carries (a
//! constraint, a value it cannot hold: [`StoreError::refused_the_values`]) would be refused for
//! ever, so it is split in halves, each written on its own, until the rows it refuses are found:
//! those are skipped, each logged with its table and key and counted
//! (`tracepipe_sink_rows_refused_total`), and every other row is written. At shutdown the sink waits a few seconds for the writer, then
//! leaves what is unwritten to be read again.
//!
pub mod batch;
pub mod config;
pub mod downsample;
pub mod metrics;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracepipe_processor::{Emitter, InputRecord, Poison, Processor, SourcePartition, UnixNanos};

pub use batch::{Batch, Written};
pub use config::SinkSpec;
use tracepipe_store::{Param, Retention, Store, StoreError, StoreUrl};

/// What one input topic of the sink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkInput {
    /// Sampled traces (`AssembledTrace`).
    Traces,
    /// Edge windows (JSON).
    Edges,
    /// Rollups (JSON).
    Rollups,
    /// Alert events (JSON).
    Alerts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub retention: Retention,
    pub retention_check: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { batch_rows: 2_000, flush_interval: Duration::from_secs(1), retention: Retention::default(), retention_check: Duration::from_secs(60) }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Batches handed to the writer and not yet committed, past which the sink takes no more input.
const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// How long a revoke waits for the writer, so the commit that follows covers what it wrote.
const REVOKE_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the writer; below the pipeline's drain deadline.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// What the sink and its writer thread share.
struct Shared {
    store: Mutex<Store>,
    url: StoreUrl,
    /// Set at shutdown or when the sink is dropped: the writer stops retrying.
    stop: Arc<AtomicBool>,
}

/// Stops the writer's retries when the sink is dropped: what it has not committed is read again
/// by the next owner of the partitions.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

enum Job {
    /// `retry`: for as long as it fails (the pipeline), or once (a caller that waits for it).
    Write { id: u64, batch: Batch, retry: bool },
    Retention { id: u64, retention: Retention, now: UnixNanos },
}

enum Done {
    Written { id: u64, result: Result<Written, (StoreError, Batch)> },
    Retention { id: u64, result: Result<Vec<(&'static str, u64)>, StoreError> },
}

pub struct Sink {
    config: SinkConfig,
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    writer: Option<JoinHandle<()>>,
    _stop_on_drop: StopOnDrop,
    /// By input index.
    inputs: Vec<SinkInput>,
    /// Rows not yet handed to the writer.
    batch: Batch,
    /// The first offset each partition has in `batch`.
    holds: BTreeMap<SourcePartition, i64>,
    oldest_pending: Option<UnixNanos>,
    /// Batches with the writer, oldest first: their id, rows and first offset per partition.
    in_flight: VecDeque<(u64, usize, BTreeMap<SourcePartition, i64>)>,
    next_id: u64,
    next_retention: UnixNanos,
    retention_running: bool,
}

impl Sink {
    pub fn new(config: SinkConfig, store: Store, inputs: Vec<SinkInput>) -> Sink {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared { url: store.url().clone(), store: Mutex::new(store), stop: Arc::clone(&stop) });
        let (jobs, job_queue) = std::sync::mpsc::channel();
        let (done_queue, done) = std::sync::mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new().name("sink-writer".into()).spawn(move || write_jobs(&writer_shared, job_queue, done_queue)).expect("spawn the sink's writer thread");
        Sink {
            config,
            shared,
            jobs: Some(jobs),
            done,
            writer: Some(writer),
            _stop_on_drop: StopOnDrop(stop),
            inputs,
            batch: Batch::default(),
            holds: BTreeMap::new(),
            oldest_pending: None,
            in_flight: VecDeque::new(),
            next_id: 0,
            next_retention: 0,
            retention_running: false,
        }
    }

    /// The store, once the writer is done with what it holds now.
    pub fn store(&mut self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the writer (after what it was given, if the store takes it within the drain wait)
    /// and hands the store back.
    pub fn into_store(mut self) -> Store {
        if !self.wait_for_writer(DRAIN_WAIT) {
            tracing::warn!(rows = self.pending_rows(), "the store did not take the pending rows; they are left unwritten");
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        let Sink { shared, jobs, writer, _stop_on_drop: stop_on_drop, .. } = self;
        drop(jobs);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        drop(stop_on_drop);
        match Arc::try_unwrap(shared) {
            Ok(shared) => shared.store.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()),
            Err(_) => unreachable!("the writer thread has ended, and with it its share of the store"),
        }
    }

    /// Rows read and not yet committed to the store.
    pub fn pending_rows(&self) -> usize {
        self.batch.rows() + self.in_flight.iter().map(|(_, rows, _)| rows).sum::<usize>()
    }

    /// Hands the pending rows to the writer; returns the batch's id.
    fn submit(&mut self, retry: bool) -> Option<u64> {
        if self.batch.is_empty() {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let batch = std::mem::take(&mut self.batch);
        self.in_flight.push_back((id, batch.rows(), std::mem::take(&mut self.holds)));
        self.oldest_pending = None;
        self.send(Job::Write { id, batch, retry });
        Some(id)
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The writer ends only when the sink drops its end of the queue.
            let _ = jobs.send(job);
        }
    }

    /// Takes in what the writer finished; returns the outcome of `id` if it is among them.
    fn apply(&mut self, done: Done, waited: Option<u64>) -> Option<Result<Option<Written>, StoreError>> {
        match done {
            Done::Written { id, result } => {
                let position = self.in_flight.iter().position(|(batch, _, _)| *batch == id);
                let outcome = match result {
                    Ok(written) => {
                        if let Some(position) = position {
                            self.in_flight.remove(position);
                        }
                        Ok(Some(written))
                    }
                    Err((error, batch)) => {
                        // A batch written once, for a caller that waits: it is pending again,
                        // with whatever was read since.
                        if let Some((_, _, holds)) = position.and_then(|p| self.in_flight.remove(p)) {
                            self.batch.absorb(batch);
                            for (source, offset) in holds {
                                let held = self.holds.entry(source).or_insert(offset);
                                *held = (*held).min(offset);
                            }
                        }
                        Err(error)
                    }
                };
                metrics::PENDING_ROWS.set(self.pending_rows() as i64);
                (waited == Some(id)).then_some(outcome)
            }
            Done::Retention { id, result } => {
                self.retention_running = false;
                match &result {
                    Ok(deleted) if deleted.iter().any(|(_, n)| *n > 0) => tracing::info!(?deleted, "retention deleted old rows"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "retention could not run; it is tried again at the next check"),
                }
                (waited == Some(id)).then(|| result.map(|_| None))
            }
        }
    }

    /// Takes in whatever the writer has finished, without waiting.
    fn collect(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            self.apply(done, None);
        }
    }

    /// Waits up to `timeout` for the writer to finish every batch it has.
    fn wait_for_writer(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        while !self.in_flight.is_empty() {
            let left = deadline.map_or(Duration::from_secs(3600), |deadline| deadline.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return false;
            }
            match self.done.recv_timeout(left) {
                Ok(done) => {
                    self.apply(done, None);
                }
                Err(_) => return self.in_flight.is_empty(),
            }
        }
        true
    }

    /// Waits for the outcome of job `id`.
    fn wait_for(&mut self, id: u64) -> Result<Option<Written>, StoreError> {
        loop {
            match self.done.recv() {
                Ok(done) => {
                    if let Some(outcome) = self.apply(done, Some(id)) {
                        return outcome;
                    }
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Writes the pending rows now, once, and waits for the outcome; on failure they stay pending.
    pub fn flush(&mut self, _now: UnixNanos) -> Result<Option<Written>, StoreError> {
        match self.submit(false) {
            Some(id) => self.wait_for(id),
            None => Ok(None),
        }
    }

    /// Deletes what is older than its retention, once the writer has written what it was given;
    /// returns the rows deleted per table.
    pub fn enforce_retention(&mut self, now: UnixNanos) -> Result<Vec<(&'static str, u64)>, StoreError> {
        self.wait_for_writer(Duration::MAX);
        let retention = self.config.retention;
        delete_expired(&mut self.store(), retention, now)
    }

    /// Where a record was read: the key of a window record that does not say where it was counted.
    fn source_key(input: &InputRecord<'_>) -> String {
        format!("{}/{}/{}", input.topic, input.source.partition, input.offset)
    }
}

/// The writer thread: runs jobs in order until the sink drops its end of the queue.
fn write_jobs(shared: &Shared, jobs: Receiver<Job>, done: Sender<Done>) {
    for job in jobs {
        let finished = match job {
            Job::Write { id, batch, retry } => match write_until_done(shared, batch, retry) {
                Some(result) => Done::Written { id, result },
                None => return,
            },
            Job::Retention { id, retention, now } => {
                let mut store = shared.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                Done::Retention { id, result: delete_expired(&mut store, retention, now) }
            }
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Writes `batch` in one transaction; with `retry`, again after each failure (reconnecting when
/// the connection is gone) until it is written or the sink stops. `None` when it stopped. A batch
/// refused for its values is split until the refused rows are found, and those are skipped.
fn write_until_done(shared: &Shared, batch: Batch, retry: bool) -> Option<Result<Written, (StoreError, Batch)>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let result = {
            let mut store = shared.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            store.transaction().and_then(|mut tx| {
                let written = batch.write(&mut tx)?;
                tx.commit()?;
                Ok(written)
            })
        };
        match result {
            Ok(written) => {
                metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
                metrics::FLUSHES.inc();
                for (table, (attempted, inserted)) in [("spans", written.spans), ("traces", written.traces), ("edges", written.edges), ("rollups", written.rollups), ("alerts", written.alerts)] {
                    metrics::ROWS_WRITTEN.with_label_values(&[table]).inc_by(inserted);
                    metrics::ROWS_DUPLICATE.with_label_values(&[table]).inc_by(attempted - inserted);
                }
                return Some(Ok(written));
            }
            Err(error) if retry && error.refused_the_values() => return Some(Ok(write_isolating(shared, batch, &error)?)),
            Err(error) => {
                metrics::WRITE_FAILURES.inc();
                if !retry {
                    tracing::warn!(%error, rows = batch.rows(), "store refused a batch; it stays pending");
                    return Some(Err((error, batch)));
                }
                tracing::warn!(%error, rows = batch.rows(), retry_in_ms = backoff.as_millis() as u64, "store refused a batch; retrying until it takes it");
                reconnect_if_gone(shared);
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if shared.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
    }
}

/// Writes the halves of a batch the store refused for its values, each on its own, down to the
/// single rows it refuses, which are skipped. `None` when the sink stopped meanwhile.
fn write_isolating(shared: &Shared, batch: Batch, error: &StoreError) -> Option<Written> {
    if batch.rows() <= 1 {
        let (table, row) = batch.describe();
        metrics::ROWS_REFUSED.with_label_values(&[table]).inc();
        tracing::error!(%error, table, row, "the store refuses this row for its values; it is skipped so that the rest of its batch is written");
        return Some(Written::default());
    }
    let (first, second) = batch.split();
    let mut written = Written::default();
    for half in [first, second] {
        let half_written = match write_until_done(shared, half, true)? {
            Ok(w) => w,
            Err(_) => unreachable!("a write retried until it succeeds returns no error"),
        };
        written.add(half_written);
    }
    Some(written)
}

/// After a failed write: if the store no longer answers (the database restarted, the connection
/// was cut), opens a new connection in place of the old one.
fn reconnect_if_gone(shared: &Shared) {
    let mut store = shared.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if store.query("SELECT 1", &[]).is_ok() {
        return;
    }
    match Store::open(&shared.url) {
        Ok(reopened) => {
            *store = reopened;
            metrics::RECONNECTS.inc();
            tracing::info!(store = shared.url.kind(), "reconnected to the store");
        }
        Err(error) => tracing::warn!(%error, "store still unreachable"),
    }
}

/// How long after a bucket's end its 1-minute rollups are all stored, so it can be downsampled:
/// well past the analyzer's window and lateness (1m and 30s by default) and the sink's flush.
const DOWNSAMPLE_SETTLE_MS: i64 = 10 * 60 * 1000;

/// Downsamples what has settled ([`downsample`]), then deletes what is older than its retention;
/// the rows deleted per table.
fn delete_expired(store: &mut Store, retention: Retention, now: UnixNanos) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let now_ms = (now / 1_000_000) as i64;
    let cutoff_ms = |age: Duration| now_ms.saturating_sub(age.as_millis() as i64);
    let r = retention;
    // Downsampled first, so buckets about to expire at the finer resolution are merged.
    downsample::downsample(store, now_ms, DOWNSAMPLE_SETTLE_MS, cutoff_ms(r.rollups))?;
    let statements: [(&str, &str, i64); 9] = [
        ("spans", "DELETE FROM spans WHERE start_us < $1", cutoff_ms(r.traces) * 1_000),
        ("traces", "DELETE FROM traces WHERE start_us < $1", cutoff_ms(r.traces) * 1_000),
        ("operations", "DELETE FROM operations WHERE last_seen_us < $1", cutoff_ms(r.traces) * 1_000),
        ("edges", "DELETE FROM edges WHERE window_start_ms < $1", cutoff_ms(r.edges)),
        ("rollups", "DELETE FROM rollups WHERE window_start_ms < $1 AND kind NOT LIKE '%@%'", cutoff_ms(r.rollups)),
        ("rollups_5m", "DELETE FROM rollups WHERE window_start_ms < $1 AND kind LIKE '%@5m'", cutoff_ms(r.rollups_5m)),
        ("rollups_1h", "DELETE FROM rollups WHERE window_start_ms < $1 AND kind LIKE '%@1h'", cutoff_ms(r.rollups_1h)),
        ("rollups_1d", "DELETE FROM rollups WHERE window_start_ms < $1 AND kind LIKE '%@1d'", cutoff_ms(r.rollups_1d)),
        ("alerts", "DELETE FROM alerts WHERE event_ms < $1", cutoff_ms(r.alerts)),
    ];
    let mut deleted = Vec::with_capacity(statements.len());
    for (table, sql, cutoff) in statements {
        let rows = store.execute(sql, &[Param::Int(cutoff)])?;
        metrics::RETENTION_DELETED.with_label_values(&[table]).inc_by(rows);
        deleted.push((table, rows));
    }
    Ok(deleted)
}

impl Processor for Sink {
    fn name(&self) -> &'static str {
        "sink"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, _out: &mut Emitter) -> Result<(), Poison> {
        let kind = *self.inputs.get(usize::from(input.source.input)).expect("the pipeline reads only the sink's inputs");
        let added = match kind {
            SinkInput::Traces => self.batch.add_trace(input.payload).map(|skipped| metrics::INVALID_SPANS.inc_by(skipped)),
            SinkInput::Edges => self.batch.add_edge(Self::source_key(input), input.payload),
            SinkInput::Rollups => self.batch.add_rollup(Self::source_key(input), input.payload),
            SinkInput::Alerts => self.batch.add_alert(input.payload),
        };
        added.map_err(|e| Poison::new("decode", e.0))?;
        self.holds.entry(input.source).or_insert(input.offset);
        self.oldest_pending.get_or_insert(now);
        if self.batch.rows() >= self.config.batch_rows && self.in_flight.len() < MAX_BATCHES_IN_FLIGHT {
            self.submit(true);
        }
        metrics::PENDING_ROWS.set(self.pending_rows() as i64);
        Ok(())
    }

    fn on_tick(&mut self, now: UnixNanos, _out: &mut Emitter) {
        self.collect();
        let due = self.oldest_pending.is_some_and(|oldest| now.saturating_sub(oldest) >= self.config.flush_interval.as_nanos() as u64);
        if (due || self.batch.rows() >= self.config.batch_rows) && self.in_flight.len() < MAX_BATCHES_IN_FLIGHT {
            self.submit(true);
        }
        if now >= self.next_retention && !self.retention_running {
            self.next_retention = now + self.config.retention_check.as_nanos() as u64;
            let id = self.next_id;
            self.next_id += 1;
            self.retention_running = true;
            self.send(Job::Retention { id, retention: self.config.retention, now });
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(200).min(self.config.flush_interval))
    }

    /// Two batches wait for the writer and a third is full: the store is slower than the input,
    /// or down.
    fn congested(&self) -> bool {
        self.in_flight.len() >= MAX_BATCHES_IN_FLIGHT && self.batch.rows() >= self.config.batch_rows
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.holds.get(&source).copied().into_iter().chain(self.in_flight.iter().filter_map(|(_, _, holds)| holds.get(&source).copied())).min()
    }

    fn on_revoke(&mut self, _sources: &[SourcePartition], _now: UnixNanos, _out: &mut Emitter) {
        self.submit(true);
        self.wait_for_writer(REVOKE_WAIT);
    }

    /// Rows of revoked partitions not yet written stay with the writer: they are correct data,
    /// and writing them next to the new owner's replay inserts nothing twice.
    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        for source in sources {
            self.holds.remove(source);
            for (_, _, holds) in &mut self.in_flight {
                holds.remove(source);
            }
        }
    }

    fn drain(&mut self, _now: UnixNanos, _out: &mut Emitter) {
        self.submit(true);
        if !self.wait_for_writer(DRAIN_WAIT) {
            tracing::error!(rows = self.pending_rows(), "the store did not take the pending rows before shutdown; their offsets stay uncommitted and are read again");
            self.shared.stop.store(true, Ordering::Relaxed);
        }
    }
}
