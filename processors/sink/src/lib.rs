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
//! ## A store that refuses writes
//!
//! A failed batch stays pending and is retried with backoff on the next ticks; offsets stay held.
//! Once the batch holds four times `batch_rows`, the sink stops reading (it retries in place), so a
//! store outage becomes consumer lag, not memory growth and not loss.
//!
//! ## Retention
//!
//! Every `retention_check`, rows older than their kind's retention are deleted: spans and traces by
//! start time, edge windows and rollups by window start, alert events by event time.

pub mod batch;
pub mod config;
pub mod metrics;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracepipe_processor::{Emitter, InputRecord, Poison, Processor, SourcePartition, UnixNanos};

pub use batch::{Batch, Written};
pub use config::SinkSpec;
use tracepipe_store::{Param, Retention, Store, StoreError};

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

pub struct Sink {
    config: SinkConfig,
    store: Store,
    /// By input index.
    inputs: Vec<SinkInput>,
    batch: Batch,
    /// The first offset each partition has in the pending batch.
    holds: BTreeMap<SourcePartition, i64>,
    oldest_pending: Option<UnixNanos>,
    /// After a failed write: no new attempt before this time.
    retry_at: UnixNanos,
    backoff: Duration,
    next_retention: UnixNanos,
}

impl Sink {
    pub fn new(config: SinkConfig, store: Store, inputs: Vec<SinkInput>) -> Sink {
        Sink { config, store, inputs, batch: Batch::default(), holds: BTreeMap::new(), oldest_pending: None, retry_at: 0, backoff: Duration::from_millis(100), next_retention: 0, }
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn into_store(self) -> Store {
        self.store
    }

    pub fn pending_rows(&self) -> usize {
        self.batch.rows()
    }

    /// Writes the pending batch; on failure it stays pending and the next attempt waits.
    pub fn flush(&mut self, now: UnixNanos) -> Result<Option<Written>, StoreError> {
        if self.batch.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.store.transaction().and_then(|mut tx| {
            let written = self.batch.write(&mut tx)?;
            tx.commit()?;
            Ok(written)
        });
        match result {
            Ok(written) => {
                metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
                metrics::FLUSHES.inc();
                for (table, (attempted, inserted)) in
                    [("spans", written.spans), ("traces", written.traces), ("edges", written.edges), ("rollups", written.rollups), ("alerts", written.alerts)]
                {
                    metrics::ROWS_WRITTEN.with_label_values(&[table]).inc_by(inserted);
                    metrics::ROWS_DUPLICATE.with_label_values(&[table]).inc_by(attempted - inserted);
                }
                self.batch.clear();
                self.holds.clear();
                self.oldest_pending = None;
                self.backoff = Duration::from_millis(100);
                metrics::PENDING_ROWS.set(0);
                Ok(Some(written))
            }
            Err(error) => {
                metrics::WRITE_FAILURES.inc();
                tracing::warn!(%error, rows = self.batch.rows(), retry_in_ms = self.backoff.as_millis() as u64, "store refused a batch; it stays pending");
                self.retry_at = now + self.backoff.as_nanos() as u64;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(error)
            }
        }
    }

    /// Deletes what is older than its retention; returns the rows deleted per table.
    pub fn enforce_retention(&mut self, now: UnixNanos) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let now_ms = (now / 1_000_000) as i64;
        let cutoff_ms = |age: Duration| now_ms.saturating_sub(age.as_millis() as i64);
        let r = self.config.retention;
        let statements: [(&str, &str, i64); 6] = [
            ("spans", "DELETE FROM spans WHERE start_us < $1", cutoff_ms(r.traces) * 1_000),
            ("traces", "DELETE FROM traces WHERE start_us < $1", cutoff_ms(r.traces) * 1_000),
            ("operations", "DELETE FROM operations WHERE last_seen_us < $1", cutoff_ms(r.traces) * 1_000),
            ("edges", "DELETE FROM edges WHERE window_start_ms < $1", cutoff_ms(r.edges)),
            ("rollups", "DELETE FROM rollups WHERE window_start_ms < $1", cutoff_ms(r.rollups)),
            ("alerts", "DELETE FROM alerts WHERE event_ms < $1", cutoff_ms(r.alerts)),
        ];
        let mut deleted = Vec::with_capacity(statements.len());
        for (table, sql, cutoff) in statements {
            let rows = self.store.execute(sql, &[Param::Int(cutoff)])?;
            metrics::RETENTION_DELETED.with_label_values(&[table]).inc_by(rows);
            deleted.push((table, rows));
        }
        Ok(deleted)
    }

    /// Where a record was read: the key of a window record that does not say where it was counted.
    fn source_key(input: &InputRecord<'_>) -> String {
        format!("{}/{}/{}", input.topic, input.source.partition, input.offset)
    }
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
        metrics::PENDING_ROWS.set(self.batch.rows() as i64);
        if self.batch.rows() >= self.config.batch_rows && now >= self.retry_at {
            let _ = self.flush(now);
        }
        // Past four batches pending the store is down: stop reading until it takes them.
        while self.batch.rows() >= self.config.batch_rows * 4 {
            std::thread::sleep(self.backoff);
            let _ = self.flush(now + self.backoff.as_nanos() as u64);
        }
        Ok(())
    }

    fn on_tick(&mut self, now: UnixNanos, _out: &mut Emitter) {
        let due = self.oldest_pending.is_some_and(|oldest| now.saturating_sub(oldest) >= self.config.flush_interval.as_nanos() as u64);
        if due && now >= self.retry_at {
            let _ = self.flush(now);
        }
        if now >= self.next_retention {
            self.next_retention = now + self.config.retention_check.as_nanos() as u64;
            match self.enforce_retention(now) {
                Ok(deleted) => {
                    let total: u64 = deleted.iter().map(|(_, n)| n).sum();
                    if total > 0 {
                        tracing::info!(?deleted, "retention deleted old rows");
                    }
                }
                Err(error) => tracing::warn!(%error, "retention could not run; it is tried again at the next check"),
            }
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(200).min(self.config.flush_interval))
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.holds.get(&source).copied()
    }

    fn on_revoke(&mut self, _sources: &[SourcePartition], now: UnixNanos, _out: &mut Emitter) {
        let _ = self.flush(now);
    }

    /// Rows of revoked partitions that could not be written stay in the batch: they are correct
    /// data, and writing them later next to the new owner's replay inserts nothing twice.
    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        for source in sources {
            self.holds.remove(source);
        }
    }

    fn drain(&mut self, now: UnixNanos, _out: &mut Emitter) {
        if let Err(error) = self.flush(now) {
            tracing::error!(%error, "pending rows not written at shutdown; their offsets stay uncommitted and are read again");
        }
    }
}
