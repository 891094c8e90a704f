//! Business transactions (topology.yaml's `transactions:`): per transaction, value of its split
//! attribute and window, the entries, their failures and latency, the value metrics and counts by
//! value, each named step's latency and failures, and how many entries had every step (coverage),
//! published as [`TransactionRollup`]s and counted in Prometheus as they are seen. Every trace is
//! counted before sampling, so the figures are exact; with several analyzer instances they are
//! partial and add up in the store.
//!
//! Split and counted values are capped per transaction and attribute: past `max_values`
//! distinct values, new ones count under [`OVERFLOW`].

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::{Histogram, IntCounter};
use rustc_hash::{FxHashMap, FxHashSet};
use tracepipe_analytics::latency::{new_histogram, record_nanos, sparse, LatencyHistogram};
use tracepipe_analytics::transactions::{entry_attribute, number, text, AttributeSplit, TransactionSpec};
use tracepipe_analytics::{bounded_name, OVERFLOW};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{Rollup, StepStats, TransactionRollup, ValueCounts, ValueStats, ROLLUP_SCHEMA, VALUE_HISTOGRAM_SCALE};

use crate::analysis::{Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::metrics;

/// The largest value a value histogram tells apart, in hundredths: larger ones count there.
const MAX_RECORDED_VALUE: u64 = 1_000_000_000_000;

struct ValueWindow {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    histogram: LatencyHistogram,
}

struct StepWindow {
    count: u64,
    errors: u64,
    sum_nanos: u64,
    histogram_us: LatencyHistogram,
}

struct TransactionWindow {
    count: u64,
    errors: u64,
    complete: u64,
    sum_nanos: u64,
    max_nanos: u64,
    histogram_us: LatencyHistogram,
    metrics: Vec<ValueWindow>,
    counts_by: Vec<BTreeMap<String, u64>>,
    steps: Vec<StepWindow>,
}

impl TransactionWindow {
    fn new(spec: &TransactionSpec) -> Self {
        TransactionWindow {
            count: 0,
            errors: 0,
            complete: 0,
            sum_nanos: 0,
            max_nanos: 0,
            histogram_us: new_histogram(),
            metrics: spec.metrics.iter().map(|_| ValueWindow { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, histogram: new_histogram() }).collect(),
            counts_by: spec.count_by.iter().map(|_| BTreeMap::new()).collect(),
            steps: spec.steps.iter().map(|_| StepWindow { count: 0, errors: 0, sum_nanos: 0, histogram_us: new_histogram() }).collect(),
        }
    }
}

/// Distinct values of one attribute, capped: the values seen first keep their name.
#[derive(Default)]
struct CappedValues {
    seen: FxHashSet<String>,
}

impl CappedValues {
    fn label(&mut self, value: String, split: &AttributeSplit) -> String {
        let value = bounded_name(&value).to_string();
        if self.seen.contains(&value) {
            return value;
        }
        if self.seen.len() < split.max_values {
            self.seen.insert(value.clone());
            return value;
        }
        OVERFLOW.to_string()
    }
}

/// The Prometheus series of one (transaction, split value), resolved once.
struct SplitSeries {
    ok: IntCounter,
    error: IntCounter,
    complete: IntCounter,
    duration: Histogram,
}

/// The Prometheus series of one transaction's metrics and steps, resolved once.
struct TransactionSeries {
    values: Vec<Histogram>,
    steps: Vec<(IntCounter, IntCounter, Histogram)>,
    splits: FxHashMap<String, SplitSeries>,
    /// Per count_by attribute, per value.
    counted: Vec<FxHashMap<String, IntCounter>>,
}

impl TransactionSeries {
    fn new(spec: &TransactionSpec) -> Self {
        TransactionSeries {
            values: spec.metrics.iter().map(|m| metrics::TRANSACTION_VALUE.with_label_values(&[&spec.name, &m.name])).collect(),
            steps: spec
                .steps
                .iter()
                .map(|step| {
                    let (t, s) = (spec.name.as_str(), step.name.as_str());
                    (metrics::TRANSACTION_STEPS.with_label_values(&[t, s, "ok"]), metrics::TRANSACTION_STEPS.with_label_values(&[t, s, "error"]), metrics::TRANSACTION_STEP_DURATION.with_label_values(&[t, s]))
                })
                .collect(),
            splits: FxHashMap::default(),
            counted: spec.count_by.iter().map(|_| FxHashMap::default()).collect(),
        }
    }

    fn split(&mut self, transaction: &str, split: &str) -> &SplitSeries {
        if !self.splits.contains_key(split) {
            let series = SplitSeries {
                ok: metrics::TRANSACTIONS.with_label_values(&[transaction, split, "ok"]),
                error: metrics::TRANSACTIONS.with_label_values(&[transaction, split, "error"]),
                complete: metrics::TRANSACTIONS_COMPLETE.with_label_values(&[transaction, split]),
                duration: metrics::TRANSACTION_DURATION.with_label_values(&[transaction, split]),
            };
            self.splits.insert(split.to_string(), series);
        }
        &self.splits[split]
    }

    fn counted(&mut self, transaction: &str, index: usize, attribute: &str, value: &str) -> &IntCounter {
        let values = &mut self.counted[index];
        if !values.contains_key(value) {
            values.insert(value.to_string(), metrics::TRANSACTION_VALUES.with_label_values(&[transaction, attribute, value]));
        }
        &values[value]
    }
}

pub struct Transactions {
    specs: Arc<[TransactionSpec]>,
    series: Vec<TransactionSeries>,
    /// Per window: (transaction index, split value) → what was counted.
    windows: SegmentWindows<BTreeMap<(usize, String), TransactionWindow>>,
    /// Per transaction: its split's values, and each count_by attribute's.
    splits: Vec<CappedValues>,
    counted: Vec<Vec<CappedValues>>,
    /// Scratch: the entry's descendants.
    below: Vec<usize>,
    stack: Vec<u32>,
}

impl Transactions {
    pub fn new(specs: Arc<[TransactionSpec]>) -> Self {
        let splits = specs.iter().map(|_| CappedValues::default()).collect();
        let counted = specs.iter().map(|spec| spec.count_by.iter().map(|_| CappedValues::default()).collect()).collect();
        let series = specs.iter().map(TransactionSeries::new).collect();
        Transactions { specs, series, windows: SegmentWindows::default(), splits, counted, below: Vec::new(), stack: Vec::new() }
    }
}

impl Analysis for Transactions {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, _names: &Names<'_>, _out: &mut Publisher<'_>) {
        let view = trace.view;
        let root = view.root();
        for entry_index in 0..view.spans.len() {
            for (t, spec) in self.specs.iter().enumerate() {
                if !spec.entry.matches(view, entry_index, root) {
                    continue;
                }
                // The entry's subtree, in depth-first order: where its attributes and steps are.
                self.below.clear();
                self.stack.clear();
                self.stack.extend(trace.tree.children(entry_index as u32).iter().rev());
                while let Some(span) = self.stack.pop() {
                    self.below.push(span as usize);
                    self.stack.extend(trace.tree.children(span).iter().rev());
                }
                let entry = &view.spans[entry_index];
                let split = match &spec.split_by {
                    None => String::new(),
                    Some(split) => match entry_attribute(view, entry, self.below.iter().copied(), &split.attribute).and_then(text) {
                        Some(value) => self.splits[t].label(value, split),
                        None => String::new(),
                    },
                };
                let duration = entry.duration_nanos();
                let failed = entry.is_error();
                let state = self.windows.window(window).entry((t, split.clone())).or_insert_with(|| TransactionWindow::new(spec));
                state.count += 1;
                state.errors += u64::from(failed);
                state.sum_nanos = state.sum_nanos.saturating_add(duration);
                state.max_nanos = state.max_nanos.max(duration);
                record_nanos(&mut state.histogram_us, duration);
                let series = &mut self.series[t];
                let split_series = series.split(&spec.name, &split);
                if failed { &split_series.error } else { &split_series.ok }.inc();
                split_series.duration.observe(duration as f64 / 1e9);
                for (m, metric) in spec.metrics.iter().enumerate() {
                    let Some(value) = entry_attribute(view, entry, self.below.iter().copied(), &metric.attribute).and_then(number) else { continue };
                    let stats = &mut state.metrics[m];
                    stats.count += 1;
                    stats.sum += value;
                    stats.min = stats.min.min(value);
                    stats.max = stats.max.max(value);
                    if value >= 0.0 {
                        let _ = stats.histogram.record(((value * VALUE_HISTOGRAM_SCALE).round() as u64).clamp(1, MAX_RECORDED_VALUE));
                    }
                    series.values[m].observe(value);
                }
                for (c, split) in spec.count_by.iter().enumerate() {
                    let Some(value) = entry_attribute(view, entry, self.below.iter().copied(), &split.attribute).and_then(text) else { continue };
                    let value = self.counted[t][c].label(value, split);
                    series.counted(&spec.name, c, &split.attribute, &value).inc();
                    *state.counts_by[c].entry(value).or_default() += 1;
                }
                let mut complete = true;
                for (s, step) in spec.steps.iter().enumerate() {
                    // The step's first span (by start time) in the entry's subtree, the entry included.
                    let found = std::iter::once(entry_index).chain(self.below.iter().copied()).filter(|&i| step.rule.matches(view, i, root)).min_by_key(|&i| view.spans[i].start_unix_nano);
                    let Some(found) = found else {
                        complete = false;
                        continue;
                    };
                    let span = &view.spans[found];
                    let (duration, failed) = (span.duration_nanos(), span.is_error());
                    let stats = &mut state.steps[s];
                    stats.count += 1;
                    stats.errors += u64::from(failed);
                    stats.sum_nanos = stats.sum_nanos.saturating_add(duration);
                    record_nanos(&mut stats.histogram_us, duration);
                    let (ok, error, step_duration) = &series.steps[s];
                    if failed { error } else { ok }.inc();
                    step_duration.observe(duration as f64 / 1e9);
                }
                state.complete += u64::from(complete);
                if complete {
                    series.split(&spec.name, &split).complete.inc();
                }
            }
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, _names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, transactions) in state.windows() {
            for ((t, split), counted) in transactions.iter() {
                let spec = &self.specs[*t];
                let record = Rollup::Transaction(TransactionRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    transaction: spec.name.clone(),
                    split: split.clone(),
                    count: counted.count,
                    errors: counted.errors,
                    complete: counted.complete,
                    sum_ms: counted.sum_nanos as f64 / 1e6,
                    max_ms: counted.max_nanos as f64 / 1e6,
                    histogram_us: sparse(&counted.histogram_us),
                    metrics: spec
                        .metrics
                        .iter()
                        .zip(&counted.metrics)
                        .filter(|(_, stats)| stats.count > 0)
                        .map(|(metric, stats)| ValueStats {
                            name: metric.name.clone(),
                            attribute: metric.attribute.clone(),
                            count: stats.count,
                            sum: stats.sum,
                            min: stats.min,
                            max: stats.max,
                            histogram: sparse(&stats.histogram),
                        })
                        .collect(),
                    counts_by: spec
                        .count_by
                        .iter()
                        .zip(&counted.counts_by)
                        .map(|(split, values)| ValueCounts { attribute: split.attribute.clone(), values: values.iter().map(|(v, n)| (v.clone(), *n)).collect() })
                        .collect(),
                    steps: spec
                        .steps
                        .iter()
                        .zip(&counted.steps)
                        .map(|(step, stats)| StepStats { name: step.name.clone(), count: stats.count, errors: stats.errors, sum_ms: stats.sum_nanos as f64 / 1e6, histogram_us: sparse(&stats.histogram_us) })
                        .collect(),
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&spec.name, &record, "transaction");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}
