//! Business transactions and funnels over the most recent minutes the store holds: each
//! transaction's volume, failures, latency, coverage, value metrics, counts by value, splits and
//! steps, summed from the analyzer's exact rollups; each funnel's journeys, conversion per step
//! and time between steps, from the funnels processor's journeys.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_analytics::transactions::{FunnelSpec, TransactionSpec};
use tracepipe_schemas::analytics::{FunnelJourney, Rollup, TransactionRollup, VALUE_HISTOGRAM_SCALE};
use tracepipe_store::{reads, Store, StoreError};


/// The most journeys one summary reads.
pub const MAX_JOURNEYS: usize = 500_000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransactionsOverview {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    pub transactions: Vec<TransactionSummary>,
    pub funnels: Vec<FunnelSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransactionSummary {
    pub name: String,
    pub description: String,
    pub count: u64,
    pub errors: u64,
    pub per_second: f64,
    pub error_ratio: f64,
    /// Entries with every step present.
    pub complete: u64,
    /// `complete` over `count`: how much of the transaction is traced end to end.
    pub coverage: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub metrics: Vec<MetricSummary>,
    pub counts_by: Vec<CountsSummary>,
    /// By value of the split attribute, when the transaction is split.
    pub splits: Vec<SplitSummary>,
    pub steps: Vec<StepSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricSummary {
    pub name: String,
    pub attribute: String,
    pub count: u64,
    pub sum: f64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CountsSummary {
    pub attribute: String,
    pub values: Vec<ValueCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
    /// Of the entries that carried the attribute.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SplitSummary {
    pub value: String,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepSummary {
    pub name: String,
    /// Entries in which the step was present.
    pub count: u64,
    pub errors: u64,
    /// `count` over the transaction's entries.
    pub presence: Option<f64>,
    pub failure_ratio: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelSummary {
    pub name: String,
    pub description: String,
    pub correlation: String,
    /// A journey that stops short is counted once this has passed since its first step.
    pub join_window_seconds: u64,
    /// The journeys counted began no later than this: every journey that began by then has
    /// closed ([`settled_before`]).
    pub settled_before_unix_ms: u64,
    /// Closed journeys that began in the span, up to `settled_before_unix_ms`.
    pub journeys: u64,
    pub complete: u64,
    pub steps: Vec<FunnelStepSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelStepSummary {
    pub name: String,
    pub reached: u64,
    /// `reached` over the journeys.
    pub conversion: Option<f64>,
    /// `reached` over the step before's.
    pub from_previous: Option<f64>,
    /// Seconds from the step before, over the journeys that reached this one.
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

#[derive(Default)]
struct Sums {
    count: u64,
    errors: u64,
    complete: u64,
    sum_ms: f64,
    max_ms: f64,
    histogram: MergedHistogram,
    metrics: BTreeMap<String, (String, u64, f64, f64, f64, MergedHistogram)>,
    counts_by: BTreeMap<String, BTreeMap<String, u64>>,
    splits: BTreeMap<String, (u64, u64, MergedHistogram)>,
    steps: BTreeMap<String, (u64, u64, f64, MergedHistogram)>,
}

impl Sums {
    fn add(&mut self, r: &TransactionRollup) {
        self.count += r.count;
        self.errors += r.errors;
        self.complete += r.complete;
        self.sum_ms += r.sum_ms;
        self.max_ms = self.max_ms.max(r.max_ms);
        self.histogram.add(&r.histogram_us);
        for m in &r.metrics {
            let entry = self.metrics.entry(m.name.clone()).or_insert_with(|| (m.attribute.clone(), 0, 0.0, f64::INFINITY, f64::NEG_INFINITY, MergedHistogram::default()));
            entry.1 += m.count;
            entry.2 += m.sum;
            entry.3 = entry.3.min(m.min);
            entry.4 = entry.4.max(m.max);
            entry.5.add(&m.histogram);
        }
        for c in &r.counts_by {
            let values = self.counts_by.entry(c.attribute.clone()).or_default();
            for (value, n) in &c.values {
                *values.entry(value.clone()).or_default() += n;
            }
        }
        let split = self.splits.entry(r.split.clone()).or_default();
        split.0 += r.count;
        split.1 += r.errors;
        split.2.add(&r.histogram_us);
        for s in &r.steps {
            let step = self.steps.entry(s.name.clone()).or_default();
            step.0 += s.count;
            step.1 += s.errors;
            step.2 += s.sum_ms;
            step.3.add(&s.histogram_us);
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// A value metric's quantile: its HDR bucket (1% wide), kept within the values seen.
fn value_quantile(histogram: &MergedHistogram, q: f64, min: f64, max: f64) -> Option<f64> {
    histogram.quantile(q).map(|v| (v as f64 / VALUE_HISTOGRAM_SCALE).clamp(min.min(max), max))
}

/// The nearest-rank quantile of sorted values.
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The transactions and funnels over the latest `over` of windows stored before `now_ms`.
pub fn overview(store: &mut Store, transactions: &[TransactionSpec], funnels: &[FunnelSpec], now_ms: u64, over: Duration) -> Result<TransactionsOverview, StoreError> {
    let since = now_ms.saturating_sub((over + crate::LOOK_BACK).as_millis() as u64) as i64;
    let rollups: Vec<TransactionRollup> = reads::rollups(store, "transaction", since, now_ms as i64, None)?
        .iter()
        .filter_map(|body| match serde_json::from_str(body) {
            Ok(Rollup::Transaction(r)) => Some(r),
            _ => None,
        })
        .collect();
    let (from, to, seconds) = crate::latest_span(rollups.iter().map(|r| (r.window_start_unix_ms, r.window_seconds)), now_ms, over);

    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    for rollup in rollups.iter().filter(|r| r.window_start_unix_ms >= from) {
        sums.entry(rollup.transaction.clone()).or_default().add(rollup);
    }
    let summaries = transactions
        .iter()
        .map(|spec| {
            let s = sums.remove(&spec.name).unwrap_or_default();
            TransactionSummary {
                name: spec.name.clone(),
                description: spec.description.clone(),
                count: s.count,
                errors: s.errors,
                per_second: if seconds > 0.0 { s.count as f64 / seconds } else { 0.0 },
                error_ratio: ratio(s.errors, s.count).unwrap_or(0.0),
                complete: s.complete,
                coverage: ratio(s.complete, s.count),
                avg_ms: (s.count > 0).then(|| s.sum_ms / s.count as f64),
                p50_ms: s.histogram.quantile_ms(0.5),
                p90_ms: s.histogram.quantile_ms(0.9),
                p99_ms: s.histogram.quantile_ms(0.99),
                max_ms: (s.count > 0).then_some(s.max_ms),
                metrics: spec
                    .metrics
                    .iter()
                    .map(|metric| {
                        let found = s.metrics.get(&metric.name);
                        let count = found.map_or(0, |m| m.1);
                        MetricSummary {
                            name: metric.name.clone(),
                            attribute: metric.attribute.clone(),
                            count,
                            sum: found.map_or(0.0, |m| m.2),
                            avg: found.filter(|m| m.1 > 0).map(|m| m.2 / m.1 as f64),
                            min: found.filter(|m| m.1 > 0).map(|m| m.3),
                            max: found.filter(|m| m.1 > 0).map(|m| m.4),
                            p50: found.and_then(|m| value_quantile(&m.5, 0.5, m.3, m.4)),
                            p90: found.and_then(|m| value_quantile(&m.5, 0.9, m.3, m.4)),
                            p99: found.and_then(|m| value_quantile(&m.5, 0.99, m.3, m.4)),
                        }
                    })
                    .collect(),
                counts_by: spec
                    .count_by
                    .iter()
                    .map(|split| {
                        let values = s.counts_by.get(&split.attribute).cloned().unwrap_or_default();
                        let total: u64 = values.values().sum();
                        let mut values: Vec<ValueCount> = values.into_iter().map(|(value, count)| ValueCount { value, count, share: ratio(count, total).unwrap_or(0.0) }).collect();
                        values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                        CountsSummary { attribute: split.attribute.clone(), values }
                    })
                    .collect(),
                splits: if spec.split_by.is_some() {
                    let mut splits: Vec<SplitSummary> =
                        s.splits.iter().map(|(value, (count, errors, h))| SplitSummary { value: value.clone(), count: *count, errors: *errors, p50_ms: h.quantile_ms(0.5), p99_ms: h.quantile_ms(0.99) }).collect();
                    splits.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                    splits
                } else {
                    Vec::new()
                },
                steps: spec
                    .steps
                    .iter()
                    .map(|step| {
                        let found = s.steps.get(&step.name);
                        let (count, errors) = found.map_or((0, 0), |f| (f.0, f.1));
                        StepSummary {
                            name: step.name.clone(),
                            count,
                            errors,
                            presence: ratio(count, s.count),
                            failure_ratio: ratio(errors, count),
                            avg_ms: found.filter(|f| f.0 > 0).map(|f| f.2 / f.0 as f64),
                            p50_ms: found.and_then(|f| f.3.quantile_ms(0.5)),
                            p99_ms: found.and_then(|f| f.3.quantile_ms(0.99)),
                        }
                    })
                    .collect(),
            }
        })
        .collect();

    let mut funnel_summaries = Vec::new();
    for spec in funnels {
        let rows = store.query(
            "SELECT body FROM rollups WHERE kind = 'funnel_journey' AND service = $1 AND window_start_ms >= $2 AND window_start_ms < $3 ORDER BY window_start_ms DESC LIMIT $4",
            &[tracepipe_store::Param::Text(&spec.name), tracepipe_store::Param::Int(from as i64), tracepipe_store::Param::Int(to as i64), tracepipe_store::Param::Int(MAX_JOURNEYS as i64)],
        )?;
        let journeys: Vec<FunnelJourney> = rows
            .iter()
            .filter_map(|row| match serde_json::from_str(row[0].text()) {
                Ok(Rollup::FunnelJourney(j)) => Some(j),
                _ => None,
            })
            .collect();
        let settled = settled_before(spec, &journeys, now_ms);
        let journeys: Vec<FunnelJourney> = journeys.into_iter().filter(|j| j.started_unix_nanos <= settled).collect();
        funnel_summaries.push(funnel_summary(spec, &journeys, settled / 1_000_000));
    }
    Ok(TransactionsOverview { from_unix_ms: from, to_unix_ms: to, transactions: summaries, funnels: funnel_summaries })
}

/// How far the funnel's journeys have settled, in Unix nanoseconds. A journey is published as
/// soon as it has every step, but one that stops short only once its join window has passed: among
/// the journeys that began within the last join window, the complete ones are stored and the
/// others not yet, and counting them would overstate conversion. Every journey that began no
/// later than the latest one closed by its window has closed too, and so has every one that began
/// a join window and a minute (more than the funnels processor's lateness) before now.
pub fn settled_before(spec: &FunnelSpec, journeys: &[FunnelJourney], now_ms: u64) -> u64 {
    let by_window = journeys.iter().filter(|j| j.closed == "join_window").map(|j| j.started_unix_nanos).max().unwrap_or(0);
    let by_time = now_ms.saturating_mul(1_000_000).saturating_sub((spec.join_window + Duration::from_secs(60)).as_nanos() as u64);
    by_window.max(by_time)
}

/// A funnel's conversion and step times over `journeys`.
pub fn funnel_summary(spec: &FunnelSpec, journeys: &[FunnelJourney], settled_before_unix_ms: u64) -> FunnelSummary {
    let mut reached = vec![0u64; spec.steps.len()];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); spec.steps.len()];
    for journey in journeys {
        for (index, step) in journey.reached.iter().enumerate().take(spec.steps.len()) {
            reached[index] += 1;
            if index > 0 {
                gaps[index].push(step.at_unix_nanos.saturating_sub(journey.reached[index - 1].at_unix_nanos) as f64 / 1e9);
            }
        }
    }
    let total = journeys.len() as u64;
    let steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let gaps = &mut gaps[index];
            gaps.sort_by(f64::total_cmp);
            FunnelStepSummary {
                name: step.name.clone(),
                reached: reached[index],
                conversion: ratio(reached[index], total),
                from_previous: if index == 0 { None } else { ratio(reached[index], reached[index - 1]) },
                median_seconds: nearest_rank(gaps, 0.5),
                p90_seconds: nearest_rank(gaps, 0.9),
            }
        })
        .collect();
    FunnelSummary {
        name: spec.name.clone(),
        description: spec.description.clone(),
        correlation: spec.correlation.clone(),
        join_window_seconds: spec.join_window.as_secs(),
        settled_before_unix_ms,
        journeys: total,
        complete: journeys.iter().filter(|j| j.reached.len() == spec.steps.len()).count() as u64,
        steps,
    }
}
