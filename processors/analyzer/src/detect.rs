//! Anomaly detection in short slices of event time (5 s by default), so an alert can fire seconds
//! after a change rather than at the end of a rollup window, and a backlog read at any speed is
//! sliced as it happened: catching up on lag raises nothing a live run would not. A slice closes
//! once a trace a slice past its end arrives (the traces this instance reads are a slice out of
//! order at most, or they count as late and are left out of detection); alerts carry the event
//! time of the slice that raised them.
//!
//! Latency, per endpoint: each slice's p90 duration is compared with the learned baseline, the
//! median and MAD of the p90s of the past `baseline_slices` slices that had `min_samples` traces.
//! A slice is anomalous when its p90 exceeds the baseline median by more than all of
//! `sensitivity` robust standard deviations (1.4826 × MAD), `min_ratio` × the median and
//! `min_delta`; `consecutive` anomalous slices open an alert, `resolve_after` normal ones resolve
//! it. The suspected root cause is the (service, operation) whose mean self time on the
//! endpoint's critical path grew most between the baseline slices and the anomalous ones.
//!
//! Errors, per error group: a slice with at least `error_min_count` root-cause errors of the
//! group, `error_ratio` × its baseline mean and `sensitivity` Poisson deviations above it is a
//! spike; a group never seen before spikes from zero once the detector has learned for
//! `min_baseline_slices`.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tracepipe_processor::UnixNanos;
use tracepipe_schemas::analytics::{
    AlertDetails, AlertKind, AlertSubject, ErrorDetails, LatencyDetails, LatencySummary, RootCause, Severity,
};

use tracepipe_analytics::alerts::AlertBook;
use tracepipe_analytics::latency::{new_histogram, record_nanos, LatencyHistogram};
use tracepipe_analytics::median;
use crate::errors::{ErrorGroups, GroupId};
use crate::series::{OperationId, SeriesId, SeriesTable};

#[derive(Debug, Clone, PartialEq)]
pub struct DetectionConfig {
    pub slice: Duration,
    pub baseline_slices: usize,
    pub min_baseline_slices: usize,
    pub min_samples: u64,
    pub sensitivity: f64,
    pub min_ratio: f64,
    pub min_delta: Duration,
    pub consecutive: u32,
    pub resolve_after: u32,
    pub error_min_count: u64,
    pub error_ratio: f64,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            slice: Duration::from_secs(5),
            baseline_slices: 60,
            min_baseline_slices: 6,
            min_samples: 20,
            sensitivity: 6.0,
            min_ratio: 1.5,
            min_delta: Duration::from_millis(20),
            consecutive: 2,
            resolve_after: 6,
            error_min_count: 10,
            error_ratio: 3.0,
        }
    }
}

const EXEMPLARS: usize = 3;

struct SliceSummary {
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    /// Critical-path self time per operation, summed over the slice's traces.
    contributions: Vec<(OperationId, u64)>,
    exemplars: Vec<(u64, [u8; 16])>,
}

struct EndpointState {
    current: LatencyHistogram,
    contributions: FxHashMap<OperationId, u64>,
    /// The slowest traces of the slice: (duration, trace id).
    exemplars: Vec<(u64, [u8; 16])>,
    history: VecDeque<SliceSummary>,
    streak: u32,
    normal: u32,
}

struct GroupState {
    current: u64,
    exemplars: Vec<[u8; 16]>,
    history: VecDeque<u64>,
    normal: u32,
}

pub struct Detector {
    config: DetectionConfig,
    slice_nanos: u64,
    slice_end: UnixNanos,
    slices: usize,
    endpoints: FxHashMap<SeriesId, EndpointState>,
    groups: FxHashMap<GroupId, GroupState>,
}


/// Microseconds to milliseconds, to the microsecond.
fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

impl Detector {
    pub fn new(config: DetectionConfig) -> Self {
        let slice_nanos = config.slice.as_nanos().max(1) as u64;
        Detector { config, slice_nanos, slice_end: 0, slices: 0, endpoints: FxHashMap::default(), groups: FxHashMap::default() }
    }

    pub fn config(&self) -> &DetectionConfig {
        &self.config
    }

    /// Whether a trace at `event_time` belongs to the open slice or a later one; an earlier one's
    /// traces came too late and are left out.
    fn in_time(&self, event_time: UnixNanos) -> bool {
        event_time.saturating_add(self.slice_nanos) >= self.slice_end
    }

    /// One trace's endpoint, its duration and its critical path split by operation.
    pub fn record_endpoint(&mut self, endpoint: SeriesId, duration_nanos: u64, trace_id: [u8; 16], contributions: &[(OperationId, u64)]) {
        let state = self.endpoints.entry(endpoint).or_insert_with(|| EndpointState {
            current: new_histogram(),
            contributions: FxHashMap::default(),
            exemplars: Vec::new(),
            history: VecDeque::new(),
            streak: 0,
            normal: 0,
        });
        record_nanos(&mut state.current, duration_nanos);
        for &(operation, nanos) in contributions {
            let sum = state.contributions.entry(operation).or_default();
            *sum = sum.saturating_add(nanos);
        }
        if state.exemplars.len() < EXEMPLARS {
            state.exemplars.push((duration_nanos, trace_id));
        } else if let Some(min) = state.exemplars.iter_mut().min_by_key(|(d, _)| *d) {
            if min.0 < duration_nanos {
                *min = (duration_nanos, trace_id);
            }
        }
    }

    pub fn record_error(&mut self, group: GroupId, trace_id: [u8; 16]) {
        let state = self.groups.entry(group).or_insert_with(|| GroupState { current: 0, exemplars: Vec::new(), history: VecDeque::new(), normal: 0 });
        state.current += 1;
        if state.exemplars.len() < EXEMPLARS {
            state.exemplars.push(trace_id);
        }
    }

    /// Moves event time to `event_time`: closes the open slice, evaluating every endpoint and
    /// error group, once a trace a slice past its end arrives.
    pub fn advance(&mut self, event_time: UnixNanos, table: &SeriesTable, groups: &ErrorGroups, book: &mut AlertBook) {
        let align = |t: UnixNanos| t - t % self.slice_nanos;
        if self.slice_end == 0 {
            self.slice_end = align(event_time) + self.slice_nanos;
            return;
        }
        if event_time < self.slice_end.saturating_add(self.slice_nanos) {
            return;
        }
        let closed_ms = self.slice_end / 1_000_000;
        self.slice_end = align(event_time - self.slice_nanos) + self.slice_nanos;
        self.slices += 1;
        let mut endpoints: Vec<SeriesId> = self.endpoints.keys().copied().collect();
        endpoints.sort_unstable();
        for endpoint in endpoints {
            self.close_endpoint_slice(endpoint, closed_ms, table, book);
        }
        let mut group_ids: Vec<GroupId> = self.groups.keys().copied().collect();
        group_ids.sort_unstable();
        for group in group_ids {
            self.close_group_slice(group, closed_ms, groups, book);
        }
    }

    fn close_endpoint_slice(&mut self, endpoint: SeriesId, now_ms: u64, table: &SeriesTable, book: &mut AlertBook) {
        let config = &self.config;
        let state = self.endpoints.get_mut(&endpoint).expect("listed");
        let count = state.current.len();
        let mut contributions: Vec<(OperationId, u64)> = state.contributions.drain().collect();
        contributions.sort_unstable();
        let mut exemplars = std::mem::take(&mut state.exemplars);
        exemplars.sort_unstable_by(|a, b| b.cmp(a));
        let summary = SliceSummary {
            count,
            p50_us: state.current.value_at_quantile(0.5),
            p90_us: state.current.value_at_quantile(0.9),
            p99_us: state.current.value_at_quantile(0.99),
            contributions,
            exemplars,
        };
        state.current.reset();

        let (operation, _) = table.names(endpoint);
        let subject = AlertSubject::Operation { service: operation.service.to_string(), operation: operation.name.to_string() };
        let key = AlertBook::key(AlertKind::LatencyAnomaly, &subject);
        // The baseline: past slices with enough traces, not counting the current anomalous streak.
        let baseline: Vec<&SliceSummary> = state.history.iter().rev().skip(state.streak as usize).filter(|s| s.count >= config.min_samples).collect();
        let mut anomalous = false;
        let mut baseline_summary = None;
        if baseline.len() >= config.min_baseline_slices && summary.count >= config.min_samples {
            let mut p90s: Vec<f64> = baseline.iter().map(|s| s.p90_us as f64).collect();
            let median_p90 = median(&mut p90s);
            let mut deviations: Vec<f64> = p90s.iter().map(|p| (p - median_p90).abs()).collect();
            let mad = median(&mut deviations);
            let margin = (config.sensitivity * 1.4826 * mad).max((config.min_ratio - 1.0) * median_p90).max(config.min_delta.as_micros() as f64);
            anomalous = summary.p90_us as f64 > median_p90 + margin;
            let mut p50s: Vec<f64> = baseline.iter().map(|s| s.p50_us as f64).collect();
            let mut p99s: Vec<f64> = baseline.iter().map(|s| s.p99_us as f64).collect();
            baseline_summary = Some(LatencySummary {
                samples: baseline.iter().map(|s| s.count).sum(),
                p50_ms: ms(median(&mut p50s)),
                p90_ms: ms(median_p90),
                p99_ms: ms(median(&mut p99s)),
            });
        }
        let current = LatencySummary { samples: summary.count, p50_ms: ms(summary.p50_us as f64), p90_ms: ms(summary.p90_us as f64), p99_ms: ms(summary.p99_us as f64) };

        if anomalous {
            state.streak += 1;
            state.normal = 0;
            if state.streak >= config.consecutive && !book.is_open(&key) {
                let recent: Vec<&SliceSummary> = state.history.iter().rev().take(state.streak as usize - 1).chain([&summary]).collect();
                let root_cause = root_cause(&baseline, &recent, table);
                let exemplar_trace_ids = recent.iter().flat_map(|s| &s.exemplars).take(EXEMPLARS).map(|(_, id)| hex::encode(id)).collect();
                let baseline_summary = baseline_summary.expect("evaluated");
                let ratio = current.p90_ms / baseline_summary.p90_ms.max(0.001);
                let summary_text = format!(
                    "{} {}: p90 {:.1} ms, baseline {:.1} ms ({ratio:.1}x){}",
                    operation.service,
                    operation.name,
                    current.p90_ms,
                    baseline_summary.p90_ms,
                    root_cause.as_ref().map(|rc| format!("; suspected root cause {} {} ({:.1} -> {:.1} ms on the critical path)", rc.service, rc.operation, rc.baseline_ms, rc.current_ms)).unwrap_or_default()
                );
                let details = AlertDetails::Latency(LatencyDetails { baseline: baseline_summary, current, root_cause, exemplar_trace_ids });
                let severity = if ratio >= 3.0 { Severity::Critical } else { Severity::Warning };
                book.fire(key, AlertKind::LatencyAnomaly, severity, subject, summary_text, details, now_ms);
            }
        } else {
            state.streak = 0;
            if book.is_open(&key) && summary.count >= config.min_samples {
                state.normal += 1;
                if state.normal >= config.resolve_after {
                    state.normal = 0;
                    let text = format!("{} {}: p90 {:.1} ms, back to normal", operation.service, operation.name, current.p90_ms);
                    let details = baseline_summary.map(|baseline| {
                        AlertDetails::Latency(LatencyDetails { baseline, current, root_cause: None, exemplar_trace_ids: Vec::new() })
                    });
                    book.resolve(&key, text, details, now_ms);
                }
            }
        }
        state.history.push_back(summary);
        while state.history.len() > config.baseline_slices + config.consecutive as usize {
            state.history.pop_front();
        }
    }

    fn close_group_slice(&mut self, group_id: GroupId, now_ms: u64, groups: &ErrorGroups, book: &mut AlertBook) {
        let config = &self.config;
        let learned = self.slices.min(config.baseline_slices).max(1);
        let state = self.groups.get_mut(&group_id).expect("listed");
        let count = std::mem::take(&mut state.current);
        let exemplars = std::mem::take(&mut state.exemplars);
        // Slices before the group existed had none of its errors.
        let mean = state.history.iter().sum::<u64>() as f64 / learned as f64;
        let group = &groups.groups[group_id as usize];
        let subject = AlertSubject::Operation { service: group.service.to_string(), operation: group.operation.to_string() };
        // One alert per error group: the key names the group.
        let key = format!("{}:{}", AlertBook::key(AlertKind::ErrorSpike, &subject), group.id);
        let spike = self.slices > config.min_baseline_slices
            && count >= config.error_min_count
            && count as f64 >= config.error_ratio * mean
            && count as f64 > mean + config.sensitivity * mean.max(1.0).sqrt();
        let details = |current| ErrorDetails {
            group: group.id.clone(),
            exception_type: group.exception_type.to_string(),
            message: group.message.to_string(),
            baseline_per_window: (mean * 100.0).round() / 100.0,
            current_per_window: current,
            window_seconds: config.slice.as_secs(),
            exemplar_trace_ids: exemplars.iter().map(hex::encode).collect(),
        };
        if spike {
            state.normal = 0;
            if !book.is_open(&key) {
                let text = format!(
                    "{} {}: {count} {} errors in {} s, baseline {mean:.1} ({})",
                    group.service,
                    group.operation,
                    group.exception_type,
                    config.slice.as_secs(),
                    group.message
                );
                book.fire(key, AlertKind::ErrorSpike, Severity::Warning, subject, text, AlertDetails::Errors(details(count)), now_ms);
            }
        } else if book.is_open(&key) {
            state.normal += 1;
            if state.normal >= config.resolve_after {
                state.normal = 0;
                let text = format!("{} {}: {count} {} errors in {} s, back to normal", group.service, group.operation, group.exception_type, config.slice.as_secs());
                book.resolve(&key, text, Some(AlertDetails::Errors(details(count))), now_ms);
            }
        }
        state.history.push_back(count);
        while state.history.len() > config.baseline_slices {
            state.history.pop_front();
        }
    }
}

/// The operation whose mean critical-path self time per trace grew most from `baseline` to `recent`.
fn root_cause(baseline: &[&SliceSummary], recent: &[&SliceSummary], table: &SeriesTable) -> Option<RootCause> {
    let mean = |slices: &[&SliceSummary]| {
        let traces: u64 = slices.iter().map(|s| s.count).sum();
        let mut sums: FxHashMap<OperationId, u64> = FxHashMap::default();
        for (operation, nanos) in slices.iter().flat_map(|s| &s.contributions) {
            let sum = sums.entry(*operation).or_default();
            *sum = sum.saturating_add(*nanos);
        }
        (sums, traces.max(1) as f64)
    };
    let (before, before_traces) = mean(baseline);
    let (after, after_traces) = mean(recent);
    let (operation, growth) = after
        .iter()
        .map(|(op, nanos)| (*op, *nanos as f64 / after_traces - before.get(op).copied().unwrap_or(0) as f64 / before_traces))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
    if growth <= 0.0 {
        return None;
    }
    let names = &table.operations[operation as usize];
    Some(RootCause {
        service: names.service.to_string(),
        operation: names.name.to_string(),
        baseline_ms: ms(before.get(&operation).copied().unwrap_or(0) as f64 / before_traces / 1000.0),
        current_ms: ms(after[&operation] as f64 / after_traces / 1000.0),
    })
}

/// Latency anomalies and error spikes as an analysis of the analyzer, with the alerts they raise.
pub struct Detection {
    detector: Detector,
    book: AlertBook,
    /// How long a restored alert waits for its condition to be seen again: enough slices to
    /// learn a baseline, see the streak again and see it end.
    confirm_within_ms: u64,
    late: prometheus::IntCounter,
}

impl Detection {
    pub fn new(config: DetectionConfig) -> Self {
        let slices = config.min_baseline_slices as u64 + u64::from(config.resolve_after) + u64::from(config.consecutive);
        let confirm_within_ms = slices.saturating_mul(config.slice.as_millis() as u64);
        Detection { detector: Detector::new(config), book: AlertBook::new("analyzer"), confirm_within_ms, late: crate::metrics::DETECTION_LATE.clone() }
    }

    /// Alerts that were firing when the analyzer stopped (see [`AlertBook::restore`]).
    pub fn restore(&mut self, alerts: Vec<tracepipe_schemas::analytics::Alert>, now_ms: u64) {
        self.book.restore(alerts, now_ms);
    }
}

impl crate::analysis::Analysis for Detection {
    fn observe(&mut self, trace: &crate::analysis::ObservedTrace<'_, '_>, _window: crate::analysis::WindowRef, names: &crate::analysis::Names<'_>, _out: &mut crate::analysis::Publisher<'_>) {
        self.detector.advance(trace.event_time, names.table, names.groups, &mut self.book);
        if !self.detector.in_time(trace.event_time) {
            self.late.inc();
            return;
        }
        for entry in trace.entries {
            self.detector.record_endpoint(entry.endpoint, entry.duration_nanos, trace.view.trace_id.0, trace.entry_contributions(entry));
        }
        if let Some(cause) = trace.root_cause {
            self.detector.record_error(cause.group, trace.view.trace_id.0);
        }
    }

    fn tick(&mut self, now: UnixNanos, _names: &crate::analysis::Names<'_>, out: &mut crate::analysis::Publisher<'_>) {
        self.book.expire_unconfirmed(now / 1_000_000, self.confirm_within_ms);
        out.alerts(&mut self.book);
    }
}
