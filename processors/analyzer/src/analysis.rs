//! The contract between the analyzer and each analysis it runs.
//!
//! The analyzer decodes a trace once, builds its tree once, names its spans' series once, finds
//! its entries with their critical paths and its root-cause error, and hands all of that to every
//! analysis as an [`ObservedTrace`]. An analysis keeps what it counts per window of the segment the
//! trace was read in ([`WindowRef`]) and publishes a segment's windows when asked ([`Analysis::publish`]);
//! one that watches over time (detection) does so on [`Analysis::tick`]. A new analysis is a module
//! implementing [`Analysis`] and one line in [`crate::Analyzer::new`].

use std::ops::Range;

use tracepipe_analytics::alerts::AlertBook;
use tracepipe_analytics::segments::Timeliness;
use tracepipe_analytics::tree::TraceTree;
use tracepipe_processor::{Emitter, OutputId, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::analytics::{CountedIn, Rollup};
use tracepipe_schemas::trace_view::TraceView;

use crate::errors::{ErrorGroups, GroupId};
use crate::metrics;
use crate::series::{OperationId, SeriesId, SeriesTable};

/// Where a request, or an asynchronous continuation of it, begins in a trace (a root, or a
/// messaging consumer whose producer is in the trace), with its critical path.
#[derive(Debug, Clone)]
pub struct Entry {
    pub span: u32,
    /// The entry span's series: the endpoint.
    pub endpoint: SeriesId,
    pub duration_nanos: u64,
    /// Its critical-path time per operation, in [`ObservedTrace::contributions`].
    pub contributions: Range<usize>,
}

/// A trace's root-cause error span and its error group.
#[derive(Debug, Clone, Copy)]
pub struct RootCause {
    pub span: u32,
    pub group: GroupId,
}

/// One trace as every analysis sees it.
pub struct ObservedTrace<'t, 'a> {
    pub view: &'t TraceView<'a>,
    pub tree: &'t TraceTree,
    /// (operation, series) of each span, in `view.spans` order.
    pub span_series: &'t [(OperationId, SeriesId)],
    /// Traces this one stands for: 1 / the head-sampling probability its root recorded.
    pub adjusted_count: f64,
    pub entries: &'t [Entry],
    /// (operation, critical-path nanoseconds), sorted by operation within each entry's range.
    pub contributions: &'t [(OperationId, u64)],
    pub root_cause: Option<RootCause>,
    pub timeliness: Timeliness,
    /// When the trace happened: its root's start (or its record's timestamp, if earlier).
    pub event_time: UnixNanos,
}

impl ObservedTrace<'_, '_> {
    pub fn entry_contributions(&self, entry: &Entry) -> &[(OperationId, u64)] {
        &self.contributions[entry.contributions.clone()]
    }
}

/// A segment of one input partition ([`tracepipe_analytics::segments`]): where windows were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub source: SourcePartition,
    pub first_offset: i64,
}

/// One event-time window of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowRef {
    pub segment: SegmentId,
    pub start: UnixNanos,
}

/// The analyzer's interned names, which every analysis reads.
pub struct Names<'a> {
    pub table: &'a SeriesTable,
    pub groups: &'a ErrorGroups,
}

/// How a segment's windows are being published.
pub struct SegmentPublication<'a> {
    pub segment: SegmentId,
    pub first_timestamp_ms: Option<i64>,
    pub topic: &'a str,
    /// Input records the segment covers so far.
    pub records: u64,
    /// The start of the watermark's window when the segment began: windows before it came late.
    pub watermark_start: UnixNanos,
    pub window_seconds: u64,
    /// The segment is closed: its windows are final and their state can go.
    pub closed: bool,
}

impl SegmentPublication<'_> {
    pub fn counted_in(&self, window_start: UnixNanos) -> Option<CountedIn> {
        Some(CountedIn {
            topic: self.topic.to_string(),
            partition: self.segment.source.partition,
            first_offset: self.segment.first_offset,
            first_timestamp_ms: self.first_timestamp_ms,
            records: self.records,
            late: window_start < self.watermark_start,
        })
    }
}

/// Where analyses write: rollups and alerts.
pub struct Publisher<'a> {
    pub out: &'a mut Emitter,
    pub rollups: OutputId,
    pub alerts: OutputId,
    /// Where funnel steps go, when funnels are defined.
    pub funnel_steps: Option<OutputId>,
    /// What a closed segment's records hold until the broker has them: its first offset.
    pub hold: Option<SourceOffset>,
}

impl Publisher<'_> {
    pub fn rollup(&mut self, key: &str, record: &Rollup, kind: &str) {
        self.out.emit_holding(self.rollups, key.as_bytes(), &serde_json::to_vec(record).expect("serializable"), self.hold);
        metrics::ROLLUPS.with_label_values(&[kind]).inc();
    }

    /// A record of the trace being analyzed, holding its input offset.
    pub fn rollup_of_input(&mut self, key: &[u8], record: &Rollup) {
        self.out.emit(self.rollups, key, &serde_json::to_vec(record).expect("serializable"));
    }

    /// A funnel step of the trace being analyzed, holding its input offset.
    pub fn funnel_step(&mut self, key: &str, record: &tracepipe_schemas::analytics::FunnelStep) {
        if let Some(output) = self.funnel_steps {
            self.out.emit(output, key.as_bytes(), &serde_json::to_vec(record).expect("serializable"));
            metrics::FUNNEL_STEPS.with_label_values(&[&record.funnel]).inc();
        }
    }

    pub fn alerts(&mut self, book: &mut AlertBook) {
        book.emit(self.alerts, self.out);
    }
}

pub trait Analysis: Send {
    /// Counts one trace in `window`.
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, names: &Names<'_>, out: &mut Publisher<'_>);

    /// Publishes what this analysis counted in the segment's windows; drops it when the segment
    /// is closed.
    fn publish(&mut self, _segment: &SegmentPublication<'_>, _names: &Names<'_>, _out: &mut Publisher<'_>) {}

    /// Every tick, with the processing time.
    fn tick(&mut self, _now: UnixNanos, _names: &Names<'_>, _out: &mut Publisher<'_>) {}

    /// Drops what was counted in segments of partitions that were revoked and committed: their
    /// next owner counts them again from the committed position.
    fn release(&mut self, _sources: &[SourcePartition]) {}
}

/// Per-window state of an analysis, by segment, so a segment is published and dropped at once.
pub struct SegmentWindows<S> {
    segments: std::collections::BTreeMap<SegmentId, std::collections::BTreeMap<UnixNanos, S>>,
}

impl<S> Default for SegmentWindows<S> {
    fn default() -> Self {
        SegmentWindows { segments: Default::default() }
    }
}

impl<S: Default> SegmentWindows<S> {
    pub fn window(&mut self, window: WindowRef) -> &mut S {
        self.segments.entry(window.segment).or_default().entry(window.start).or_default()
    }

    /// The segment's windows, in window order, to publish; taken out when `closed`.
    pub fn for_publication(&mut self, segment: SegmentId, closed: bool) -> Option<SegmentState<'_, S>> {
        if closed {
            self.segments.remove(&segment).map(SegmentState::Taken)
        } else {
            self.segments.get_mut(&segment).map(SegmentState::Open)
        }
    }

    pub fn release(&mut self, sources: &[SourcePartition]) {
        self.segments.retain(|segment, _| !sources.contains(&segment.source));
    }
}

/// A segment's windows: owned when the segment closed, borrowed while it is open.
pub enum SegmentState<'a, S> {
    Taken(std::collections::BTreeMap<UnixNanos, S>),
    Open(&'a mut std::collections::BTreeMap<UnixNanos, S>),
}

impl<S> SegmentState<'_, S> {
    pub fn windows(&mut self) -> impl Iterator<Item = (UnixNanos, &mut S)> {
        let map = match self {
            SegmentState::Taken(map) => map,
            SegmentState::Open(map) => &mut **map,
        };
        map.iter_mut().map(|(start, state)| (*start, state))
    }
}

/// A window's entries in key order, so that what is published comes in a stable order.
pub fn in_key_order<K: Ord + Copy, V>(map: &rustc_hash::FxHashMap<K, V>) -> Vec<(K, &V)> {
    let mut entries: Vec<(K, &V)> = map.iter().map(|(k, v)| (*k, v)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries
}
