//! The analyzer: runs on every assembled trace of `tracepipe.traces`, before sampling, so its
//! figures are exact whatever the sampling rate.
//!
//! - Span metrics under the OpenTelemetry span-metrics connector's names and labels
//!   (`traces_span_metrics_calls_total`, `traces_span_metrics_duration_milliseconds`), capped in
//!   cardinality ([`series`]).
//! - Per (service, operation, kind) and event-time window (1 minute by default): an HDR latency
//!   histogram, counts and errors, published as [`OperationRollup`]s to `tracepipe.rollups`.
//! - Bottlenecks: the critical path of each endpoint (a root, or a messaging consumer), its time
//!   split by (service, operation) and summed per window: [`BottleneckRollup`], ranked.
//! - Error correlation: each failed trace's root-cause span ([`tracepipe_analytics::tree::TraceTree::root_cause`]),
//!   grouped by (service, operation, exception type, normalized message): [`ErrorTrace`] per
//!   trace and [`ErrorGroupRollup`] per window.
//! - Latency anomalies and error spikes ([`detect`]) → alerts on `tracepipe.alerts`.
//!
//! Offsets: rollups of a window hold the first offset of every partition the window covers until
//! they are acknowledged, so a crash replays into the window what it had not published. With
//! several instances each publishes partial rollups of its share of traces; they add up.
//! Detection runs in each instance on its share (a uniform sample, the partitioning being by
//! trace id); its state is not replicated, so after a restart it learns its baseline again.

pub mod config;
pub mod detect;
pub mod errors;
mod metrics;
pub mod series;

use std::time::Duration;

use prometheus::IntCounter;
use rustc_hash::FxHashMap;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::analytics::{
    BottleneckRollup, Contributor, ErrorGroupRollup, ErrorTrace, OperationRollup, Rollup, ROLLUP_SCHEMA,
};
use tracepipe_schemas::trace_view::{SpanView, TraceView};

pub use detect::DetectionConfig;
use detect::Detector;
use tracepipe_analytics::latency::{new_histogram, quantile_ms, record_nanos, sparse, LatencyHistogram};
use errors::{ErrorGroups, GroupId};
use series::{OperationId, SeriesId, SeriesTable};
use tracepipe_analytics::tree::{StructureProblems, TraceTree};
use tracepipe_analytics::windows::{Window, Windows};

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
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AnalyzerOutputs {
    pub rollups: OutputId,
    pub alerts: OutputId,
}

struct SeriesWindow {
    histogram_us: LatencyHistogram,
    errors: u64,
    sum_nanos: u64,
}

#[derive(Default)]
struct EndpointWindow {
    traces: u64,
    /// Traces weighted by 1 / their head-sampling probability: the traces the services started.
    adjusted_traces: f64,
    total_nanos: u64,
    contributions: FxHashMap<OperationId, u64>,
}

#[derive(Default)]
struct GroupWindow {
    count: u64,
    exemplars: Vec<[u8; 16]>,
}

#[derive(Default)]
struct WindowState {
    series: FxHashMap<SeriesId, SeriesWindow>,
    endpoints: FxHashMap<SeriesId, EndpointWindow>,
    errors: FxHashMap<GroupId, GroupWindow>,
}

const GROUP_EXEMPLARS: usize = 5;

pub struct Analyzer {
    config: AnalyzerConfig,
    outputs: AnalyzerOutputs,
    table: SeriesTable,
    groups: ErrorGroups,
    tree: TraceTree,
    windows: Windows<WindowState>,
    detector: Detector,
    book: tracepipe_analytics::alerts::AlertBook,
    histograms: Vec<LatencyHistogram>,
    /// (operation, series) of each span of the trace being analyzed.
    span_series: Vec<(OperationId, SeriesId)>,
    contributions: Vec<(OperationId, u64)>,
    displaced_reported: u64,
    /// Counters of the per-trace path, resolved once rather than by label on every trace.
    first_emissions: IntCounter,
    late_fragments: IntCounter,
    error_trace_records: IntCounter,
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
        Analyzer {
            table: SeriesTable::new(config.max_series, config.max_operations_per_service),
            groups: ErrorGroups::new(config.max_error_groups),
            tree: TraceTree::default(),
            windows: Windows::new(config.window, config.lateness),
            detector: Detector::new(config.detection.clone()),
            book: tracepipe_analytics::alerts::AlertBook::new("analyzer"),
            histograms: Vec::new(),
            span_series: Vec::new(),
            contributions: Vec::new(),
            displaced_reported: 0,
            first_emissions: metrics::TRACES.with_label_values(&["trace"]),
            late_fragments: metrics::TRACES.with_label_values(&["fragment"]),
            error_trace_records: metrics::ROLLUPS.with_label_values(&["error_trace"]),
            config,
            outputs,
        }
    }

    /// (service, operation, kind) series tracked: bounded by `max_series` (plus the overflow ones).
    pub fn series_count(&self) -> usize {
        self.table.series.len()
    }

    pub fn error_group_count(&self) -> usize {
        self.groups.groups.len()
    }

    /// Analyzes one trace.
    fn analyze(&mut self, view: &TraceView<'_>, now: UnixNanos, at: Option<SourceOffset>, out: &mut Emitter) {
        let spans = &view.spans;
        let part = if view.fragment == 0 { &self.first_emissions } else { &self.late_fragments };
        part.inc();
        metrics::SPANS.inc_by(spans.len() as u64);
        if spans.is_empty() {
            return;
        }
        self.tree.build(spans);
        count_problems(&self.tree.problems);
        let root = &spans[view.root().unwrap_or(0)];
        let trace_time = root.start_unix_nano;
        // A head sampler decided the whole trace at its root; a trace without `sampler.param` was
        // not head-sampled, or sampled by a ratio the services did not record, and counts once.
        let adjusted_count = match root.head_sampling_probability {
            Some(p) if p > 0.0 && p <= 1.0 => 1.0 / p,
            _ => 1.0,
        };
        let window = self.windows.window_for(trace_time, now, at);

        self.span_series.clear();
        for span in spans {
            let operation = self.table.operation(view.service(span), span.name);
            let series = self.table.series(operation, span.kind);
            self.span_series.push((operation, series));
            let duration = span.duration_nanos();
            self.table.observe(series, span.status_code, duration);
            let histograms = &mut self.histograms;
            let sw = window.state.series.entry(series).or_insert_with(|| SeriesWindow {
                histogram_us: histograms.pop().unwrap_or_else(new_histogram),
                errors: 0,
                sum_nanos: 0,
            });
            record_nanos(&mut sw.histogram_us, duration);
            sw.sum_nanos += duration;
            sw.errors += u64::from(span.is_error());
        }

        for entry in 0..spans.len() as u32 {
            if !self.tree.is_entry(spans, entry) {
                continue;
            }
            self.contributions.clear();
            let (span_series, contributions) = (&self.span_series, &mut self.contributions);
            self.tree.critical_path(spans, entry, |span, nanos| contributions.push((span_series[span as usize].0, nanos)));
            self.contributions.sort_unstable_by_key(|(op, _)| *op);
            self.contributions.dedup_by(|next, kept| {
                let same = next.0 == kept.0;
                if same {
                    kept.1 += next.1;
                }
                same
            });
            let endpoint = self.span_series[entry as usize].1;
            let duration = spans[entry as usize].duration_nanos();
            let ew = window.state.endpoints.entry(endpoint).or_default();
            ew.traces += 1;
            ew.adjusted_traces += adjusted_count;
            ew.total_nanos += duration;
            for &(operation, nanos) in &self.contributions {
                *ew.contributions.entry(operation).or_default() += nanos;
            }
            self.detector.record_endpoint(endpoint, duration, view.trace_id.0, &self.contributions);
        }

        if let Some(cause) = self.tree.root_cause(spans) {
            let span = &spans[cause as usize];
            let service = view.service(span);
            let (exception_type, message) = describe_error(span);
            let group = self.groups.group(service, span.name, &exception_type, message);
            let gw = window.state.errors.entry(group).or_default();
            gw.count += 1;
            if gw.exemplars.len() < GROUP_EXEMPLARS {
                gw.exemplars.push(view.trace_id.0);
            }
            self.detector.record_error(group, view.trace_id.0);
            metrics::ERROR_TRACES.inc();
            if self.config.error_traces {
                let record = Rollup::ErrorTrace(ErrorTrace {
                    schema: ROLLUP_SCHEMA.into(),
                    trace_id: view.trace_id.to_string(),
                    root_cause_span_id: hex::encode(span.span_id),
                    service: service.into(),
                    operation: span.name.into(),
                    group: self.groups.groups[group as usize].id.clone(),
                    end_unix_ms: span.end_unix_nano / 1_000_000,
                });
                out.emit(self.outputs.rollups, &view.trace_id.0, &serde_json::to_vec(&record).expect("serializable"));
                self.error_trace_records.inc();
            }
        }
    }

    fn emit_window(&mut self, window: Window<WindowState>, out: &mut Emitter) {
        let window_start_unix_ms = window.start / 1_000_000;
        let window_seconds = self.windows.length_nanos() / 1_000_000_000;
        let holds = &window.first_offsets;
        let output = self.outputs.rollups;
        let mut emit = |key: String, record: Rollup, kind: &str| {
            out.emit_holding_all(output, key.as_bytes(), &serde_json::to_vec(&record).expect("serializable"), holds);
            metrics::ROLLUPS.with_label_values(&[kind]).inc();
        };
        let mut series: Vec<_> = window.state.series.into_iter().collect();
        series.sort_unstable_by_key(|(id, _)| *id);
        for (id, mut sw) in series {
            let (operation, kind) = self.table.names(id);
            let h = &sw.histogram_us;
            let record = Rollup::Operation(OperationRollup {
                schema: ROLLUP_SCHEMA.into(),
                window_start_unix_ms,
                window_seconds,
                service: operation.service.to_string(),
                operation: operation.name.to_string(),
                span_kind: series::kind_label(kind).into(),
                count: h.len(),
                errors: sw.errors,
                sum_ms: sw.sum_nanos as f64 / 1e6,
                p50_ms: quantile_ms(h, 0.5),
                p90_ms: quantile_ms(h, 0.9),
                p99_ms: quantile_ms(h, 0.99),
                max_ms: h.max() as f64 / 1000.0,
                histogram_us: sparse(h),
            });
            emit(format!("{}/{}", operation.service, operation.name), record, "operation");
            sw.histogram_us.reset();
            self.histograms.push(sw.histogram_us);
        }
        let mut endpoints: Vec<_> = window.state.endpoints.into_iter().collect();
        endpoints.sort_unstable_by_key(|(id, _)| *id);
        for (id, ew) in endpoints {
            let (operation, _) = self.table.names(id);
            let total_ms = ew.total_nanos as f64 / 1e6;
            let mut contributors: Vec<Contributor> = ew
                .contributions
                .iter()
                .map(|(op, nanos)| {
                    let names = &self.table.operations[*op as usize];
                    let critical_path_ms = *nanos as f64 / 1e6;
                    Contributor {
                        service: names.service.to_string(),
                        operation: names.name.to_string(),
                        critical_path_ms,
                        share: if total_ms > 0.0 { critical_path_ms / total_ms } else { 0.0 },
                    }
                })
                .collect();
            contributors.sort_by(|a, b| b.critical_path_ms.total_cmp(&a.critical_path_ms).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation))));
            let record = Rollup::Bottlenecks(BottleneckRollup {
                schema: ROLLUP_SCHEMA.into(),
                window_start_unix_ms,
                window_seconds,
                service: operation.service.to_string(),
                operation: operation.name.to_string(),
                traces: ew.traces,
                adjusted_traces: Some(ew.adjusted_traces),
                total_ms,
                contributors,
            });
            emit(format!("{}/{}", operation.service, operation.name), record, "bottlenecks");
        }
        let mut groups: Vec<_> = window.state.errors.into_iter().collect();
        groups.sort_unstable_by_key(|(id, _)| *id);
        for (id, gw) in groups {
            let group = &self.groups.groups[id as usize];
            let record = Rollup::ErrorGroup(ErrorGroupRollup {
                schema: ROLLUP_SCHEMA.into(),
                window_start_unix_ms,
                window_seconds,
                group: group.id.clone(),
                service: group.service.to_string(),
                operation: group.operation.to_string(),
                exception_type: group.exception_type.to_string(),
                message: group.message.to_string(),
                count: gw.count,
                exemplar_trace_ids: gw.exemplars.iter().map(hex::encode).collect(),
            });
            emit(format!("{}/{}", group.service, group.operation), record, "error_group");
        }
    }

    fn report_displaced(&mut self) {
        let displaced = self.windows.displaced;
        metrics::DISPLACED.inc_by(displaced - self.displaced_reported);
        self.displaced_reported = displaced;
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
        self.analyze(&view, now, Some(at), out);
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }

    fn on_tick(&mut self, now: UnixNanos, out: &mut Emitter) {
        self.detector.tick(now, &self.table, &self.groups, &mut self.book);
        self.book.emit(self.outputs.alerts, out);
        for window in self.windows.take_closed(now) {
            self.emit_window(window, out);
        }
        self.report_displaced();
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.windows.low_watermark(source)
    }

    /// Windows hold offsets of every partition; publishing them as partial windows lets the
    /// revoked partitions commit. Partial windows add up downstream.
    fn on_revoke(&mut self, _sources: &[SourcePartition], _now: UnixNanos, out: &mut Emitter) {
        for window in self.windows.take_all() {
            self.emit_window(window, out);
        }
    }

    fn drain(&mut self, now: UnixNanos, out: &mut Emitter) {
        self.on_revoke(&[], now, out);
    }
}

#[doc(hidden)]
pub mod testing {
    //! Entry points for tests and benchmarks that drive the analyzer without Kafka.
    use super::*;

    pub fn analyze(analyzer: &mut Analyzer, payload: &[u8], now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let view = TraceView::parse(payload).map_err(|e| Poison::new("decode", e.to_string()))?;
        analyzer.analyze(&view, now, None, out);
        Ok(())
    }
}
