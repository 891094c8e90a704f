//! Keeps the traces the analyzer names as exemplars of bad SLO events, so that an SLO alert's
//! links open stored traces whatever the sampling rules would have decided.
//!
//! The analyzer names the first [`BAD_EXEMPLARS`] traces with a bad event per SLO, window and
//! segment of an input partition, in offset order. The sampler reads the same partitions in the
//! same order and applies the same rule: it places each trace in its window by the same event
//! time and follows each partition's watermark as the analyzer's segments do (a segment ends when
//! the watermark, event time less the lateness, enters a new window). So when both read a
//! partition from the same offset, it keeps exactly the traces the analyzer names. After either
//! restarts from an earlier offset, the two may start segments at different records; the SLO
//! evaluator then prefers the exemplars that were stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracepipe_analytics::segments::event_time;
use tracepipe_analytics::slo::{SloSpec, BAD_EXEMPLARS};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::trace_view::TraceView;

/// The analyzer's windowing, which the exemplars follow.
#[derive(Debug, Clone, Copy)]
pub struct ExemplarWindows {
    pub window: Duration,
    pub lateness: Duration,
}

struct PartitionState {
    watermark: u64,
    /// Bad traces kept in the current segment, per (SLO, window start).
    kept: HashMap<(usize, u64), usize>,
}

pub struct SloExemplars {
    slos: Arc<[SloSpec]>,
    length: u64,
    lateness: u64,
    partitions: HashMap<SourcePartition, PartitionState>,
}

impl SloExemplars {
    pub fn new(slos: Arc<[SloSpec]>, windows: ExemplarWindows) -> Self {
        let nanos = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        SloExemplars { slos, length: nanos(windows.window).max(1), lateness: nanos(windows.lateness), partitions: HashMap::new() }
    }

    /// The SLO whose exemplar `trace` is, if it is one: it has a bad event and is among the first
    /// of its SLO, window and segment.
    pub fn exemplar_of(&mut self, trace: &TraceView<'_>, source: SourcePartition, timestamp_ms: Option<i64>) -> Option<&str> {
        if self.slos.is_empty() || trace.spans.is_empty() {
            return None;
        }
        let root = trace.root();
        let event = event_time(trace.spans[root.unwrap_or(0)].start_unix_nano, timestamp_ms);
        let watermark = event.saturating_sub(self.lateness) / self.length;
        let partition = self.partitions.entry(source).or_insert_with(|| PartitionState { watermark, kept: HashMap::new() });
        if watermark > partition.watermark {
            // A new segment: the analyzer's counts start again.
            partition.watermark = watermark;
            partition.kept.clear();
        }
        let window = event - event % self.length;
        let mut chosen = None;
        for (index, slo) in self.slos.iter().enumerate() {
            if !slo.has_bad_event(trace, root) {
                continue;
            }
            let kept = partition.kept.entry((index, window)).or_default();
            if *kept < BAD_EXEMPLARS {
                *kept += 1;
                chosen.get_or_insert(index);
            }
        }
        chosen.map(|index| self.slos[index].name.as_str())
    }

    pub fn release(&mut self, source: SourcePartition) {
        self.partitions.remove(&source);
    }
}
