//! The analyzer: runs on every assembled trace of `tracepipe.traces`, before sampling, so its
//! figures are exact whatever the sampling rate. It decodes each trace once, builds its tree once,
//! names its spans' series once, finds its entries with their critical paths and its root-cause
//! error, and hands that to each analysis ([`analysis`]):
//!
//! - span metrics under the OpenTelemetry span-metrics connector's names and labels
//!   (`traces_span_metrics_calls_total`, `traces_span_metrics_duration_milliseconds`), capped in
//!   cardinality ([`span_metrics`], [`series`]);
//! - per (service, operation, kind) and event-time window: an HDR latency histogram, counts and
//!   errors ([`operations`]);
//! - bottlenecks: each endpoint's critical path split by (service, operation) ([`bottlenecks`]);
//! - error correlation: each failed trace's root-cause span, grouped ([`error_groups`]);
//! - latency anomalies and error spikes, raised as alerts ([`detect`]);
//! - the events of each SLO of topology.yaml's `slos:`, good and bad ([`slos`]);
//! - business transactions of `transactions:`, their value metrics and steps ([`transactions`]);
//! - the steps of `funnels:`, keyed by correlation value for the funnels processor ([`funnel_steps`]).
//!
//! # Windows, offsets and exactness
//!
//! Windows are kept per input partition and closed by that partition's own event time
//! ([`tracepipe_analytics::segments`]): a segment of a partition is published when the partition's
//! watermark moves past it, each record keyed by its window, series and segment, and the
//! partition's position is committed no further than the first offset of its oldest segment not
//! yet acknowledged. A crash, a rebalance or a replay therefore publishes the same records under
//! the same keys, and the store, which upserts by key, counts every trace once. Several instances
//! cover different partitions, so their records add up. A revoked partition's open segment is not
//! published: its next owner replays it from the committed position.
//!
//! Detection runs in each instance on its share of traces (a uniform sample, the partitioning
//! being by trace id); its state is not replicated, so after a restart it learns its baseline again.

pub mod analysis;
pub mod bottlenecks;
pub mod cohorts;
pub mod config;
pub mod detect;
pub mod error_groups;
pub mod errors;
pub mod funnel_steps;
mod metrics;
pub mod operations;
pub mod series;
pub mod slos;
pub mod span_metrics;
pub mod transactions;

use std::time::Duration;

use prometheus::IntCounter;
use tracepipe_analytics::segments::{self, InputTopics, SegmentInfo, Segments, Timeliness};
use tracepipe_analytics::tree::{StructureProblems, TraceTree};
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::trace_view::{SpanView, TraceView};

use analysis::{Analysis, Entry, Names, ObservedTrace, Publisher, RootCause, SegmentId, SegmentPublication, WindowRef};
pub use detect::DetectionConfig;
use errors::ErrorGroups;
use series::{OperationId, SeriesId, SeriesTable};

#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzerConfig {
    /// Rollup window length.
    pub window: Duration,
    /// How long a window stays open after its end for traces that arrive late.
    pub lateness: Duration,
    pub max_series: usize,
    pub max_operations_per_service: usize,
    pub max_error_groups: usize,
    /// Publish each failed trace's root cause ([`ErrorTrace`]) to the rollups topic.
    pub error_traces: bool,
    pub detection: DetectionConfig,
    pub apdex: ApdexThresholds,
    /// The attributes that split each operation's requests into cohorts ([`cohorts`]).
    pub cohorts: cohorts::CohortConfig,
}

/// Apdex's threshold T per service: the latency a user is satisfied with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApdexThresholds {
    pub default: Duration,
    pub services: std::collections::BTreeMap<String, Duration>,
}

impl Default for ApdexThresholds {
    fn default() -> Self {
        // New Relic's default T, which most APMs start from.
        ApdexThresholds { default: Duration::from_millis(500), services: Default::default() }
    }
}

impl ApdexThresholds {
    pub fn for_service(&self, service: &str) -> Duration {
        self.services.get(service).copied().unwrap_or(self.default)
    }
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            window: Duration::from_secs(60),
            lateness: Duration::from_secs(30),
            max_series: 5_000,
            max_operations_per_service: 500,
            max_error_groups: 5_000,
            error_traces: true,
            detection: DetectionConfig::default(),
            apdex: ApdexThresholds::default(),
            cohorts: cohorts::CohortConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AnalyzerOutputs {
    pub rollups: OutputId,
    pub alerts: OutputId,
}

/// How long a partition may be quiet before its open segment is published as it stands.
const QUIET_PARTITION: Duration = Duration::from_secs(5);

pub struct Analyzer {
    outputs: AnalyzerOutputs,
    funnel_steps: Option<OutputId>,
    table: SeriesTable,
    groups: ErrorGroups,
    tree: TraceTree,
    segments: Segments<()>,
    analyses: Vec<Box<dyn Analysis>>,
    /// Input topic names, by input index, as records name them.
    topics: InputTopics,
    /// Scratch per trace: (operation, series) of each span, the entries, their contributions.
    span_series: Vec<(OperationId, SeriesId)>,
    entries: Vec<Entry>,
    contributions: Vec<(OperationId, u64)>,
    /// Late and too-late traces already counted in the metrics.
    late_reported: (u64, u64),
    /// Counters of the per-trace path, resolved once rather than by label on every trace.
    first_emissions: IntCounter,
    late_fragments: IntCounter,
}

fn count_problems(problems: &StructureProblems) {
    for (name, n) in [
        ("missing_parent", problems.missing_parents),
        ("cycle", problems.cycles),
        ("duplicate_span_id", problems.duplicate_span_ids),
        ("negative_duration", problems.negative_durations),
        ("clock_skew", problems.skewed_children),
    ] {
        if n > 0 {
            metrics::STRUCTURE_PROBLEMS.with_label_values(&[name]).inc_by(u64::from(n));
        }
    }
}

impl Analyzer {
    pub fn new(config: AnalyzerConfig, outputs: AnalyzerOutputs) -> Self {
        Self::with_open_alerts(config, outputs, Vec::new(), 0)
    }

    /// An analyzer that continues the alerts that were open when the last one stopped (the
    /// latest firing events of the alerts topic from source `analyzer`), restored at `now`.
    pub fn with_open_alerts(config: AnalyzerConfig, outputs: AnalyzerOutputs, open_alerts: Vec<tracepipe_schemas::analytics::Alert>, now: UnixNanos) -> Self {
        let mut detection = detect::Detection::new(config.detection.clone());
        detection.restore(open_alerts, now / 1_000_000);
        let mut analyses: Vec<Box<dyn Analysis>> = vec![
            Box::new(span_metrics::SpanMetrics::default()),
            Box::new(operations::Operations::new(config.apdex.clone())),
            Box::new(bottlenecks::Bottlenecks::default()),
            Box::new(error_groups::ErrorGroupRollups::new(config.error_traces)),
            Box::new(detection),
        ];
        if config.cohorts.is_enabled() {
            analyses.push(Box::new(cohorts::Cohorts::new(config.cohorts.clone())));
        }
        Analyzer {
            table: SeriesTable::new(config.max_series, config.max_operations_per_service),
            groups: ErrorGroups::new(config.max_error_groups),
            tree: TraceTree::default(),
            segments: Segments::new(config.window, config.lateness),
            analyses,
            topics: InputTopics::default(),
            span_series: Vec::new(),
            entries: Vec::new(),
            contributions: Vec::new(),
            late_reported: (0, 0),
            first_emissions: metrics::TRACES.with_label_values(&["trace"]),
            late_fragments: metrics::TRACES.with_label_values(&["fragment"]),
            outputs,
            funnel_steps: None,
        }
    }

    /// Counts the events of these SLOs ([`slos`]) too.
    pub fn with_slos(mut self, slos: std::sync::Arc<[tracepipe_analytics::slo::SloSpec]>) -> Self {
        if !slos.is_empty() {
            self.analyses.push(Box::new(slos::SloEvents::new(slos)));
        }
        self
    }

    /// Counts these business transactions too ([`transactions`]).
    pub fn with_transactions(mut self, transactions: std::sync::Arc<[tracepipe_analytics::transactions::TransactionSpec]>) -> Self {
        if !transactions.is_empty() {
            self.analyses.push(Box::new(transactions::Transactions::new(transactions)));
        }
        self
    }

    /// Publishes the steps of these funnels to `output` ([`funnel_steps`]).
    pub fn with_funnels(mut self, funnels: std::sync::Arc<[tracepipe_analytics::transactions::FunnelSpec]>, output: OutputId) -> Self {
        if !funnels.is_empty() {
            self.analyses.push(Box::new(funnel_steps::FunnelSteps::new(funnels)));
            self.funnel_steps = Some(output);
        }
        self
    }

    /// (service, operation, kind) series tracked: bounded by `max_series` (plus the overflow ones).
    pub fn series_count(&self) -> usize {
        self.table.series.len()
    }

    pub fn error_group_count(&self) -> usize {
        self.groups.groups.len()
    }

    /// Analyzes one trace, read from `at` of `topic`, whose record the broker stamped
    /// `timestamp_ms` (the assembler's clock when it emitted the trace).
    fn analyze(&mut self, view: &TraceView<'_>, topic: &str, at: SourceOffset, timestamp_ms: Option<i64>, now: UnixNanos, out: &mut Emitter) {
        let spans = &view.spans;
        let part = if view.fragment == 0 { &self.first_emissions } else { &self.late_fragments };
        part.inc();
        metrics::SPANS.inc_by(spans.len() as u64);
        if spans.is_empty() {
            return;
        }
        self.topics.note(at.source.input, topic);
        self.tree.build(spans);
        count_problems(&self.tree.problems);
        let root = &spans[view.root().unwrap_or(0)];
        let event_time = segments::event_time(root.start_unix_nano, timestamp_ms);
        // A head sampler decided the whole trace at its root; a trace without `sampler.param` was
        // not head-sampled, or sampled by a ratio the services did not record, and counts once.
        let adjusted_count = match root.head_sampling_probability {
            Some(p) if p > 0.0 && p <= 1.0 => 1.0 / p,
            _ => 1.0,
        };

        self.span_series.clear();
        for span in spans {
            let operation = self.table.operation(view.service(span), span.name);
            let series = self.table.series(operation, span.kind);
            self.span_series.push((operation, series));
        }
        self.find_entries(spans);
        let root_cause = self.tree.root_cause(spans).map(|span| {
            let s = &spans[span as usize];
            let (exception_type, message) = describe_error(s);
            RootCause { span, group: self.groups.group(view.service(s), s.name, &exception_type, message) }
        });

        let (closed, _, timeliness) = self.segments.observe(at, timestamp_ms, event_time, now);
        if let Some(closed) = closed {
            self.publish(&closed.info(), true, out);
        }
        let window_start = event_time - event_time % self.segments.length_nanos();
        let window = WindowRef { segment: SegmentId { source: at.source, first_offset: self.segments.low_watermark(at.source).expect("just observed") }, start: window_start };
        let trace = ObservedTrace {
            view,
            tree: &self.tree,
            span_series: &self.span_series,
            adjusted_count,
            entries: &self.entries,
            contributions: &self.contributions,
            root_cause,
            timeliness,
            event_time,
        };
        if timeliness == Timeliness::TooLate {
            return;
        }
        let names = Names { table: &self.table, groups: &self.groups };
        let mut publisher = Publisher { out, rollups: self.outputs.rollups, alerts: self.outputs.alerts, funnel_steps: self.funnel_steps, hold: None };
        for analysis in &mut self.analyses {
            analysis.observe(&trace, window, &names, &mut publisher);
        }
    }

    /// The trace's entries and each one's critical path, summed per operation.
    fn find_entries(&mut self, spans: &[SpanView<'_>]) {
        self.entries.clear();
        self.contributions.clear();
        for entry in 0..spans.len() as u32 {
            if !self.tree.is_entry(spans, entry) {
                continue;
            }
            let first = self.contributions.len();
            let (span_series, contributions) = (&self.span_series, &mut self.contributions);
            self.tree.critical_path(spans, entry, |span, nanos| contributions.push((span_series[span as usize].0, nanos)));
            self.contributions[first..].sort_unstable_by_key(|(op, _)| *op);
            // One sum per operation: the path may pass an operation more than once.
            let mut write = first;
            for read in first..self.contributions.len() {
                let item = self.contributions[read];
                if write > first && self.contributions[write - 1].0 == item.0 {
                    self.contributions[write - 1].1 = self.contributions[write - 1].1.saturating_add(item.1);
                } else {
                    self.contributions[write] = item;
                    write += 1;
                }
            }
            self.contributions.truncate(write);
            self.entries.push(Entry {
                span: entry,
                endpoint: self.span_series[entry as usize].1,
                duration_nanos: spans[entry as usize].duration_nanos(),
                contributions: first..self.contributions.len(),
            });
        }
    }

    /// Publishes a segment's windows: final (and holding its first offset until the broker has
    /// them) when `closed`, as they stand otherwise.
    fn publish(&mut self, segment: &SegmentInfo, closed: bool, out: &mut Emitter) {
        let id = SegmentId { source: segment.source, first_offset: segment.first_offset };
        let publication = SegmentPublication {
            segment: id,
            first_timestamp_ms: segment.first_timestamp_ms,
            topic: self.topics.name(segment.source.input),
            records: segment.records,
            watermark_start: segment.watermark_start,
            window_seconds: self.segments.length_nanos() / 1_000_000_000,
            closed,
        };
        let hold = closed.then_some(SourceOffset { source: segment.source, offset: segment.first_offset });
        let names = Names { table: &self.table, groups: &self.groups };
        let mut publisher = Publisher { out, rollups: self.outputs.rollups, alerts: self.outputs.alerts, funnel_steps: self.funnel_steps, hold };
        for analysis in &mut self.analyses {
            analysis.publish(&publication, &names, &mut publisher);
        }
    }

    /// Publishes the open segments as they stand: every one, or those of quiet partitions.
    fn publish_open(&mut self, now: UnixNanos, quiet: Option<Duration>, out: &mut Emitter) {
        let open: Vec<SegmentInfo> = match quiet {
            Some(quiet) => self.segments.take_idle(now, quiet).map(|s| s.info()).collect(),
            None => self.segments.take_unpublished().map(|s| s.info()).collect(),
        };
        for segment in open {
            self.publish(&segment, false, out);
        }
    }

    fn report_late(&mut self) {
        let (late, too_late) = (self.segments.late, self.segments.too_late);
        metrics::LATE_TRACES.inc_by(late - self.late_reported.0);
        metrics::TOO_LATE_TRACES.inc_by(too_late - self.late_reported.1);
        self.late_reported = (late, too_late);
    }
}

/// The exception type and message of an error span: its exception event, or else its status
/// message, with the HTTP status code as the type when there is one.
fn describe_error<'a>(span: &SpanView<'a>) -> (std::borrow::Cow<'a, str>, &'a str) {
    if let Some(exception) = span.exception {
        if !exception.exception_type.is_empty() || !exception.message.is_empty() {
            return (exception.exception_type.into(), if exception.message.is_empty() { span.status_message } else { exception.message });
        }
    }
    let exception_type = match span.peer.http_status_code {
        Some(code) if code >= 400 => format!("HTTP {code}").into(),
        _ => "".into(),
    };
    (exception_type, span.status_message)
}

impl Processor for Analyzer {
    fn name(&self) -> &'static str {
        "analyzer"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let view = TraceView::parse(input.payload).map_err(|e| Poison::new("decode", format!("tracepipe.v1.AssembledTrace: {e}")))?;
        let at = SourceOffset { source: input.source, offset: input.offset };
        self.analyze(&view, input.topic, at, input.timestamp_ms, now, out);
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }

    fn on_tick(&mut self, now: UnixNanos, out: &mut Emitter) {
        let names = Names { table: &self.table, groups: &self.groups };
        let mut publisher = Publisher { out, rollups: self.outputs.rollups, alerts: self.outputs.alerts, funnel_steps: self.funnel_steps, hold: None };
        for analysis in &mut self.analyses {
            analysis.tick(now, &names, &mut publisher);
        }
        self.publish_open(now, Some(QUIET_PARTITION), out);
        self.report_late();
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.segments.low_watermark(source)
    }

    /// Nothing is published for revoked partitions: their open segments hold the committed
    /// position, and their next owner replays them from there.
    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        self.segments.release(sources);
        for analysis in &mut self.analyses {
            analysis.release(sources);
        }
    }

    /// Publishes the open segments as they stand, so what was counted is visible; they still
    /// hold their positions, and the next start replays them and publishes them whole.
    fn drain(&mut self, now: UnixNanos, out: &mut Emitter) {
        self.publish_open(now, None, out);
    }
}

#[doc(hidden)]
pub mod testing {
    //! Entry points for tests and benchmarks that drive the analyzer without Kafka: records come
    //! from partition 0 of `tracepipe.traces`, at consecutive offsets.
    use super::*;

    pub fn analyze(analyzer: &mut Analyzer, payload: &[u8], now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let view = TraceView::parse(payload).map_err(|e| Poison::new("decode", e.to_string()))?;
        let offset = analyzer.segments.observed as i64;
        let at = SourceOffset { source: SourcePartition { input: 0, partition: 0 }, offset };
        analyzer.analyze(&view, "tracepipe.traces", at, None, now, out);
        Ok(())
    }
}
