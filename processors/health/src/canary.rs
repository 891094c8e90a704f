//! Canary verdicts: when a new value of the canary attribute (a new `service.version`) appears
//! beside the incumbent for one operation, the two cohorts are compared on a fixed schedule, with
//! the data of whole slots only, and the first significant comparison decides.
//!
//! Looking again and again at a comparison that is not yet significant and stopping the first time
//! it is inflates the false-positive rate (peeking). The schedule guards against it: at most
//! `evaluations` comparisons, slot k using the requests of the first k slots after the candidate
//! appeared, each at `alpha` / `evaluations` (Bonferroni), so over the whole schedule a candidate
//! no different from the baseline is called better or worse at most `alpha` of the time. A slot is
//! evaluated once its windows are in the store (`settle` after its end), so every evaluation sees
//! the same data whenever it runs, and an evaluator that restarts reaches the same verdicts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tracepipe_analytics::compare::{compare, CompareSettings, Comparison, Sample, Verdict};
use tracepipe_store::{Store, StoreError};

use crate::series::{self, Merged, Subject};

#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    /// The cohort attribute whose new values are canaries.
    pub attribute: String,
    /// Length of a slot: the schedule's step.
    pub every: Duration,
    /// Slots evaluated at most; the verdict after the last is final.
    pub evaluations: u32,
    /// How long after a slot's end its windows are all in the store: a trace is assembled up to a
    /// minute after it starts, the analyzer closes its window a window and a lateness later (1m and
    /// 30s by default), and the sink flushes within seconds. A slot judged before all of its
    /// windows arrived would be judged again with more: another look.
    pub settle: Duration,
    /// How far back a candidate may have appeared and still be judged: a canary that began longer
    /// ago is over.
    pub lookback: Duration,
    /// The overall false-positive rate and minimum effects.
    pub compare: CompareSettings,
}

impl Default for CanarySettings {
    fn default() -> Self {
        CanarySettings {
            attribute: "service.version".into(),
            every: Duration::from_secs(60),
            evaluations: 30,
            settle: Duration::from_secs(300),
            lookback: Duration::from_secs(6 * 3600),
            compare: CompareSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CanaryVerdict {
    pub service: String,
    pub operation: String,
    pub span_kind: String,
    pub attribute: String,
    pub baseline: String,
    pub candidate: String,
    /// The start of the first window the candidate served in.
    pub candidate_since_ms: u64,
    /// Slots evaluated so far (the deciding one, once decided), of `evaluations`.
    pub evaluation: u32,
    pub evaluations: u32,
    /// Each comparison's significance level.
    pub alpha_per_evaluation: f64,
    /// When the latest evaluated slot ended: its data reach this far.
    pub evaluated_until_ms: u64,
    /// Better or worse (decided), no significant difference (after the last slot), or
    /// not enough data / no significant difference yet while the schedule runs.
    pub verdict: Verdict,
    pub decided: bool,
    pub comparison: Comparison,
}

/// The canaries of `settings.attribute` as of `now_ms`: for every operation with two or more
/// values of it, the newest value (by first window) against the value with the most requests.
pub fn canaries(store: &mut Store, settings: &CanarySettings, now_ms: u64) -> Result<Vec<CanaryVerdict>, StoreError> {
    let start_ms = now_ms.saturating_sub(settings.lookback.as_millis() as u64) as i64;
    let cohorts = series::cohorts(store, None, None, start_ms, now_ms as i64)?;
    let mut by_operation: BTreeMap<(String, String, String), Vec<series::Cohort>> = BTreeMap::new();
    for cohort in cohorts.into_iter().filter(|c| c.attribute == settings.attribute && c.value != tracepipe_analytics::OVERFLOW) {
        by_operation.entry((cohort.service.clone(), cohort.operation.clone(), cohort.span_kind.clone())).or_default().push(cohort);
    }
    let mut verdicts = Vec::new();
    for values in by_operation.into_values() {
        if values.len() < 2 {
            continue;
        }
        let newest = values.iter().max_by_key(|c| (c.merged.first_window_ms, std::cmp::Reverse(c.merged.count))).expect("two or more");
        let Some(incumbent) = values.iter().filter(|c| c.value != newest.value).max_by_key(|c| c.merged.count) else { continue };
        if incumbent.merged.first_window_ms >= newest.merged.first_window_ms || newest.merged.first_window_ms < Some(start_ms as u64 + settings.every.as_millis() as u64) {
            // Both were there from the start of the look-back (a canary that began longer ago
            // than the look-back is over): no new version to judge.
            continue;
        }
        // Judged while both serve: once either has had no window for two slots past settling,
        // the candidate was rolled back or has replaced the incumbent.
        let serving_since = now_ms.saturating_sub((settings.settle + 2 * settings.every).as_millis() as u64);
        if [incumbent, newest].iter().any(|c| c.merged.last_window_ms.unwrap_or(0) < serving_since) {
            continue;
        }
        if let Some(verdict) = judge(store, settings, incumbent, newest, now_ms)? {
            verdicts.push(verdict);
        }
    }
    Ok(verdicts)
}

fn judge(store: &mut Store, settings: &CanarySettings, baseline: &series::Cohort, candidate: &series::Cohort, now_ms: u64) -> Result<Option<CanaryVerdict>, StoreError> {
    let every = settings.every.as_millis().max(1) as i64;
    let since = candidate.merged.first_window_ms.unwrap_or(now_ms) as i64;
    let first_slot = since.div_euclid(every) * every;
    // Slots whose windows have all reached the store.
    let settled_until = now_ms as i64 - settings.settle.as_millis() as i64;
    let ready = ((settled_until - first_slot).div_euclid(every)).clamp(0, i64::from(settings.evaluations));
    if ready == 0 {
        return Ok(None);
    }
    let end = first_slot + ready * every;
    let per_slot = |subject: Subject, store: &mut Store| series::merged(store, &subject, first_slot, end, Some(every));
    let (a_slots, b_slots) = (per_slot(baseline.subject(), store)?, per_slot(candidate.subject(), store)?);
    let slots: Vec<(Merged, Merged)> = (0..ready)
        .map(|k| {
            let slot = first_slot + k * every;
            (a_slots.get(&slot).cloned().unwrap_or_default(), b_slots.get(&slot).cloned().unwrap_or_default())
        })
        .collect();
    let evaluations = settings.evaluations.max(1);
    let alpha = settings.compare.alpha / f64::from(evaluations);
    let last = decide(&slots, settings);
    let Some((k, comparison, decided)) = last else { return Ok(None) };
    Ok(Some(CanaryVerdict {
        service: candidate.service.clone(),
        operation: candidate.operation.clone(),
        span_kind: candidate.span_kind.clone(),
        attribute: candidate.attribute.clone(),
        baseline: baseline.value.clone(),
        candidate: candidate.value.clone(),
        candidate_since_ms: since as u64,
        evaluation: k,
        evaluations,
        alpha_per_evaluation: alpha,
        evaluated_until_ms: (first_slot + i64::from(k) * every) as u64,
        verdict: comparison.verdict,
        decided,
        comparison,
    }))
}

/// The schedule over the slots evaluated so far, each (baseline, candidate) of one slot: slot k
/// compares the first k slots' requests at `alpha` / `evaluations`; the first better or worse
/// decides, as does the last slot of the schedule. The deciding (or latest) evaluation, its
/// comparison, and whether it decided.
pub fn decide(slots: &[(Merged, Merged)], settings: &CanarySettings) -> Option<(u32, Comparison, bool)> {
    let evaluations = settings.evaluations.max(1);
    let slot_settings = CompareSettings { alpha: settings.compare.alpha / f64::from(evaluations), ..settings.compare };
    let (mut a, mut b) = (Merged::default(), Merged::default());
    let mut last = None;
    for (k, (slot_a, slot_b)) in (1..=evaluations).zip(slots) {
        for (total, slot) in [(&mut a, slot_a), (&mut b, slot_b)] {
            total.count += slot.count;
            total.errors += slot.errors;
            total.latency_us.merge(&slot.latency_us);
        }
        let comparison = compare(Sample { latency_us: &a.latency_us, errors: a.errors }, Sample { latency_us: &b.latency_us, errors: b.errors }, &slot_settings);
        let decided = matches!(comparison.verdict, Verdict::Better | Verdict::Worse) || k == evaluations;
        last = Some((k, comparison, decided));
        if decided {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    use tracepipe_analytics::latency::{new_histogram, record_nanos, sparse, MergedHistogram};

    fn slot(rng: &mut SmallRng, n: usize, scale: f64) -> Merged {
        let mut h = new_histogram();
        let mut errors = 0;
        for _ in 0..n {
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            record_nanos(&mut h, (40e6 * (0.6 * normal).exp() * scale) as u64);
            errors += u64::from(rng.random::<f64>() < 0.01);
        }
        let mut latency_us = MergedHistogram::default();
        latency_us.add(&sparse(&h));
        Merged { count: n as u64, errors, latency_us, ..Default::default() }
    }

    fn schedule(seed: u64, scale: f64, settings: &CanarySettings) -> (u32, Verdict) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let slots: Vec<(Merged, Merged)> = (0..settings.evaluations).map(|_| (slot(&mut rng, 300, 1.0), slot(&mut rng, 30, scale))).collect();
        let (k, comparison, decided) = decide(&slots, settings).unwrap();
        assert!(decided);
        (k, comparison.verdict)
    }

    /// Peeking at every slot with the corrected level keeps an A/A canary's false positives
    /// within alpha over the whole schedule; a 30% slower one is caught within a few slots.
    #[test]
    fn the_schedule_holds_the_false_positive_rate_and_catches_a_slower_version() {
        let settings = CanarySettings { evaluations: 20, ..Default::default() };
        let runs = 200;
        let false_positives = (0..runs).filter(|&seed| schedule(seed, 1.0, &settings).1 != Verdict::NoSignificantDifference).count();
        let caught: Vec<u32> = (0..20).map(|seed| schedule(10_000 + seed, 1.3, &settings)).filter(|(_, v)| *v == Verdict::Worse).map(|(k, _)| k).collect();
        let mean_slots = caught.iter().sum::<u32>() as f64 / caught.len().max(1) as f64;
        println!(
            "A/A: {false_positives} of {runs} schedules of {} slots ended other than no significant difference; 30% slower: {} of 20 caught, after {mean_slots:.1} slots on average",
            settings.evaluations,
            caught.len()
        );
        // alpha 0.01 over 200 schedules expects at most 2; 8 would be beyond 4 binomial sds.
        assert!(false_positives <= 8, "{false_positives}");
        assert!(caught.len() >= 18, "{caught:?}");
    }
}
