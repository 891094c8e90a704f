//! Two samples of one operation compared, as a canary judge compares them: a baseline (the
//! incumbent version, a control cohort, the time before a deploy) and a candidate.
//!
//! Latency is compared by the Mann-Whitney U test (normal approximation with the tie correction
//! and a continuity correction, as SciPy's `mannwhitneyu(method="asymptotic")` computes it) and
//! the Hodges-Lehmann shift (the median of all candidate − baseline differences) with its
//! distribution-free interval, the method Kayenta's judge uses. Error ratios are compared by a
//! two-proportion z-test. Quantiles come with order-statistic intervals.
//!
//! The samples are the stored HDR histograms (two significant digits): values in one bucket are
//! ties at the bucket's value, which the tie correction accounts for. Everything is computed from
//! the buckets, so a comparison of millions of requests costs a few thousand bucket visits.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::latency::MergedHistogram;

/// What a difference must reach to be called one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareSettings {
    /// The verdict's false-positive rate: latency and errors are each tested at `alpha` / 2
    /// (Bonferroni), so an A/A split is called different at most this often; the intervals are at
    /// 1 − `alpha` / 2.
    pub alpha: f64,
    /// The smallest latency shift (Hodges-Lehmann, relative to the baseline's median) that counts
    /// as better or worse: a significant 1% shift over a million requests is not a regression.
    pub min_effect: f64,
    /// The smallest difference of error ratios that counts (0.005 is half a percentage point).
    pub min_error_delta: f64,
    /// Fewer requests than this on either side: not enough data for a verdict.
    pub min_samples: u64,
}

impl Default for CompareSettings {
    fn default() -> Self {
        CompareSettings { alpha: 0.01, min_effect: 0.05, min_error_delta: 0.005, min_samples: 50 }
    }
}

/// One side: latencies in µs and how many of its requests failed.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub latency_us: &'a MergedHistogram,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    NoSignificantDifference,
    NotEnoughData,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoSignificantDifference => "no significant difference",
            Verdict::NotEnoughData => "not enough data",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideSummary {
    pub count: u64,
    pub errors: u64,
    pub error_ratio: f64,
    /// Quantiles in ms with their order-statistic intervals.
    pub p50_ms: Option<Interval>,
    pub p90_ms: Option<Interval>,
    pub p99_ms: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyTest {
    /// U of the candidate: how often a candidate request was slower than a baseline one (ties half).
    pub u: f64,
    pub z: f64,
    pub p_value: f64,
    /// Hodges-Lehmann shift, candidate − baseline, in ms, with its interval.
    pub shift_ms: Interval,
    /// The shift relative to the baseline's median.
    pub relative_shift: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorTest {
    pub z: f64,
    pub p_value: f64,
    /// Candidate's error ratio − baseline's.
    pub delta: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub confidence: f64,
    pub baseline: SideSummary,
    pub candidate: SideSummary,
    pub latency: Option<LatencyTest>,
    pub errors: Option<ErrorTest>,
    /// Worse if either latency or errors is worse; better if one is better and none worse.
    pub verdict: Verdict,
    /// What the verdict rests on, in words.
    pub evidence: Vec<String>,
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal")
}

/// Two-sided p-value of a standard normal statistic.
fn two_sided(z: f64) -> f64 {
    if !z.is_finite() {
        return if z.is_nan() { 1.0 } else { 0.0 };
    }
    (2.0 * standard_normal().sf(z.abs())).min(1.0)
}

pub fn compare(baseline: Sample<'_>, candidate: Sample<'_>, settings: &CompareSettings) -> Comparison {
    let per_test = settings.alpha / 2.0;
    let z_crit = standard_normal().inverse_cdf(1.0 - per_test / 2.0);
    let summary = |s: Sample<'_>| {
        let count = s.latency_us.count();
        let errors = s.errors.min(count);
        SideSummary {
            count,
            errors,
            error_ratio: if count == 0 { 0.0 } else { errors as f64 / count as f64 },
            p50_ms: quantile_interval(s.latency_us, 0.5, z_crit),
            p90_ms: quantile_interval(s.latency_us, 0.9, z_crit),
            p99_ms: quantile_interval(s.latency_us, 0.99, z_crit),
        }
    };
    let (base, cand) = (summary(baseline), summary(candidate));
    let enough = base.count >= settings.min_samples && cand.count >= settings.min_samples;
    let mut evidence = Vec::new();
    if !enough {
        evidence.push(format!("{} baseline and {} candidate requests; a verdict needs {} on each side", base.count, cand.count, settings.min_samples));
        return Comparison { confidence: 1.0 - per_test, baseline: base, candidate: cand, latency: None, errors: None, verdict: Verdict::NotEnoughData, evidence };
    }

    let latency = latency_test(baseline.latency_us, candidate.latency_us, z_crit, per_test, settings.min_effect);
    let errors = error_test(&base, &cand, per_test, settings.min_error_delta);
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    match latency.verdict {
        Verdict::Worse | Verdict::Better => evidence.push(format!(
            "latency {} by {:.2} ms ({} of the baseline median; {:.2}% interval {:.2} to {:.2} ms), Mann-Whitney p = {:.2e}",
            if latency.verdict == Verdict::Worse { "rose" } else { "fell" },
            latency.shift_ms.estimate.abs(),
            pct(latency.relative_shift),
            (1.0 - per_test) * 100.0,
            latency.shift_ms.low,
            latency.shift_ms.high,
            latency.p_value
        )),
        _ if latency.p_value < per_test => evidence.push(format!(
            "latency shift of {} is significant (p = {:.2e}) but below the minimum effect of {}",
            pct(latency.relative_shift),
            latency.p_value,
            pct(settings.min_effect)
        )),
        _ => evidence.push(format!("latency shift {} (p = {}, not below {})", pct(latency.relative_shift), p_text(latency.p_value), p_text(per_test))),
    }
    match errors.verdict {
        Verdict::Worse | Verdict::Better => evidence.push(format!(
            "error ratio {:.2}% against {:.2}% (two-proportion p = {:.2e})",
            cand.error_ratio * 100.0,
            base.error_ratio * 100.0,
            errors.p_value
        )),
        _ => evidence.push(format!("error ratio {:.2}% against {:.2}% (p = {})", cand.error_ratio * 100.0, base.error_ratio * 100.0, p_text(errors.p_value))),
    }
    let verdicts = [latency.verdict, errors.verdict];
    let verdict = if verdicts.contains(&Verdict::Worse) {
        Verdict::Worse
    } else if verdicts.contains(&Verdict::Better) {
        Verdict::Better
    } else {
        Verdict::NoSignificantDifference
    };
    Comparison { confidence: 1.0 - per_test, baseline: base, candidate: cand, latency: Some(latency), errors: Some(errors), verdict, evidence }
}

/// A p-value as people read them: three decimals, or two significant digits below 0.001.
fn p_text(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// The quantile with the distribution-free interval between order statistics
/// n·q ∓ z·√(n·q·(1−q)), in ms.
fn quantile_interval(h: &MergedHistogram, q: f64, z: f64) -> Option<Interval> {
    let n = h.count() as f64;
    let estimate = h.quantile(q)?;
    let spread = z * (n * q * (1.0 - q)).sqrt();
    let low = h.value_at_rank((n * q - spread).floor() as u64)?;
    let high = h.value_at_rank((n * q + spread).ceil() as u64 + 1)?;
    Some(Interval { estimate: estimate as f64 / 1e3, low: low as f64 / 1e3, high: high as f64 / 1e3 })
}

/// U of `b` against `a`, its tie-corrected standard deviation and the mean under no difference.
pub fn mann_whitney(a: &MergedHistogram, b: &MergedHistogram) -> (f64, f64, f64) {
    let (na, nb) = (a.count() as f64, b.count() as f64);
    let n = na + nb;
    let mut ranks_b = 0.0;
    let mut ties = 0.0;
    let mut below = 0.0;
    let mut a_iter = a.buckets().peekable();
    let mut b_iter = b.buckets().peekable();
    loop {
        let next_a = a_iter.peek().map(|&(v, _)| v);
        let next_b = b_iter.peek().map(|&(v, _)| v);
        let value = match (next_a, next_b) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) => x,
            (None, Some(y)) => y,
            (None, None) => break,
        };
        let ca = if next_a == Some(value) { a_iter.next().map_or(0, |(_, c)| c) } else { 0 } as f64;
        let cb = if next_b == Some(value) { b_iter.next().map_or(0, |(_, c)| c) } else { 0 } as f64;
        let t = ca + cb;
        ranks_b += cb * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
    }
    let u = ranks_b - nb * (nb + 1.0) / 2.0;
    let mean = na * nb / 2.0;
    let variance = na * nb / 12.0 * ((n + 1.0) - if n > 1.0 { ties / (n * (n - 1.0)) } else { 0.0 });
    (u, variance.max(0.0).sqrt(), mean)
}

/// How many (a, b) pairs have b − a ≤ `d`, weighted by their counts.
fn pairs_at_most(a: &[(u64, u64)], a_at_least: &[u64], b: &[(u64, u64)], d: i64) -> u128 {
    let mut i = 0;
    let mut total = 0u128;
    for &(vb, cb) in b {
        // b − a ≤ d ⇔ a ≥ b − d; the threshold grows with b.
        let threshold = vb as i128 - d as i128;
        while i < a.len() && (a[i].0 as i128) < threshold {
            i += 1;
        }
        total += u128::from(cb) * u128::from(a_at_least[i]);
    }
    total
}

/// The `k`-th smallest difference b − a (1-based) over all pairs, by bisection on the difference.
fn kth_difference(a: &[(u64, u64)], a_at_least: &[u64], b: &[(u64, u64)], k: u128) -> i64 {
    let (mut low, mut high) = (b[0].0 as i64 - a[a.len() - 1].0 as i64, b[b.len() - 1].0 as i64 - a[0].0 as i64);
    while low < high {
        let mid = low + (high - low).div_euclid(2);
        if pairs_at_most(a, a_at_least, b, mid) >= k {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// The Hodges-Lehmann shift of `b` from `a` with its interval: the median pairwise difference, and
/// the differences at ranks C and mn − C + 1 with C = mn/2 − z·σ_U.
pub fn hodges_lehmann(a: &MergedHistogram, b: &MergedHistogram, z: f64, sd_u: f64) -> Option<Interval> {
    let a_buckets: Vec<(u64, u64)> = a.buckets().collect();
    let b_buckets: Vec<(u64, u64)> = b.buckets().collect();
    if a_buckets.is_empty() || b_buckets.is_empty() {
        return None;
    }
    let mut a_at_least = vec![0u64; a_buckets.len() + 1];
    for i in (0..a_buckets.len()).rev() {
        a_at_least[i] = a_at_least[i + 1] + a_buckets[i].1;
    }
    let pairs = u128::from(a.count()) * u128::from(b.count());
    let kth = |k: u128| kth_difference(&a_buckets, &a_at_least, &b_buckets, k.clamp(1, pairs)) as f64;
    let estimate = if pairs % 2 == 1 { kth(pairs / 2 + 1) } else { (kth(pairs / 2) + kth(pairs / 2 + 1)) / 2.0 };
    let c = (pairs as f64 / 2.0 - z * sd_u).floor().max(1.0) as u128;
    Some(Interval { estimate, low: kth(c), high: kth(pairs + 1 - c.min(pairs)) })
}

fn latency_test(a: &MergedHistogram, b: &MergedHistogram, z_crit: f64, alpha: f64, min_effect: f64) -> LatencyTest {
    let (u, sd, mean) = mann_whitney(a, b);
    let z = if sd > 0.0 { ((u - mean).abs() - 0.5).max(0.0) / sd * (u - mean).signum() } else { 0.0 };
    let p_value = if sd > 0.0 { two_sided(z) } else { 1.0 };
    let shift_us = hodges_lehmann(a, b, z_crit, sd).unwrap_or(Interval { estimate: 0.0, low: 0.0, high: 0.0 });
    let median_us = a.quantile(0.5).unwrap_or(0) as f64;
    let relative_shift = if median_us > 0.0 { shift_us.estimate / median_us } else { 0.0 };
    let significant = p_value < alpha && relative_shift.abs() >= min_effect;
    let verdict = match significant {
        true if relative_shift > 0.0 => Verdict::Worse,
        true => Verdict::Better,
        false => Verdict::NoSignificantDifference,
    };
    let shift_ms = Interval { estimate: shift_us.estimate / 1e3, low: shift_us.low / 1e3, high: shift_us.high / 1e3 };
    LatencyTest { u, z, p_value, shift_ms, relative_shift, verdict }
}

fn error_test(a: &SideSummary, b: &SideSummary, alpha: f64, min_delta: f64) -> ErrorTest {
    let (na, nb) = (a.count as f64, b.count as f64);
    let pooled = (a.errors + b.errors) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    let delta = b.error_ratio - a.error_ratio;
    let (z, p_value) = if se > 0.0 { (delta / se, two_sided(delta / se)) } else { (0.0, 1.0) };
    let verdict = match p_value < alpha && delta.abs() >= min_delta {
        true if delta > 0.0 => Verdict::Worse,
        true => Verdict::Better,
        false => Verdict::NoSignificantDifference,
    };
    ErrorTest { z, p_value, delta, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, record_nanos, sparse};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn histogram(values_us: impl IntoIterator<Item = u64>) -> MergedHistogram {
        let mut merged = MergedHistogram::default();
        merged.add(&values_us.into_iter().map(|v| (v, 1)).collect::<Vec<_>>());
        merged
    }

    /// A latency of a lognormal shape, in µs, rounded to the HDR bucket it lands in.
    fn lognormal_sample(rng: &mut SmallRng, n: usize, median_us: f64, scale: f64) -> MergedHistogram {
        let mut h = new_histogram();
        for _ in 0..n {
            // Box-Muller: a normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            record_nanos(&mut h, (median_us * (0.5 * normal).exp() * scale * 1000.0) as u64);
        }
        let mut merged = MergedHistogram::default();
        merged.add(&sparse(&h));
        merged
    }

    #[test]
    fn u_and_the_shift_on_small_samples_match_their_definitions() {
        let a = histogram([10, 20, 30, 40]);
        let b = histogram([25, 35, 45, 55, 65]);
        let (u, _, mean) = mann_whitney(&a, &b);
        // Pairs with b > a: 25>10,20; 35>10,20,30; 45,55,65 > all four.
        assert_eq!(u, 2.0 + 3.0 + 4.0 * 3.0);
        assert_eq!(mean, 10.0);
        // All 20 differences b − a; their median is the mean of the 10th and 11th.
        let mut diffs: Vec<i64> = [25, 35, 45, 55, 65].iter().flat_map(|b| [10, 20, 30, 40].iter().map(move |a| b - a)).collect();
        diffs.sort();
        let hl = hodges_lehmann(&a, &b, 1.96, 1.0).unwrap();
        assert_eq!(hl.estimate, (diffs[9] + diffs[10]) as f64 / 2.0);
    }

    #[test]
    fn identical_samples_are_no_significant_difference() {
        let mut rng = SmallRng::seed_from_u64(1);
        let a = lognormal_sample(&mut rng, 5_000, 20_000.0, 1.0);
        let c = compare(Sample { latency_us: &a, errors: 10 }, Sample { latency_us: &a, errors: 10 }, &CompareSettings::default());
        assert_eq!(c.verdict, Verdict::NoSignificantDifference, "{c:?}");
        assert_eq!(c.latency.unwrap().shift_ms.estimate, 0.0);
    }

    #[test]
    fn a_thirty_percent_slower_candidate_is_worse_and_a_faster_one_better() {
        let mut rng = SmallRng::seed_from_u64(2);
        let baseline = lognormal_sample(&mut rng, 4_000, 20_000.0, 1.0);
        let slower = lognormal_sample(&mut rng, 400, 20_000.0, 1.3);
        let c = compare(Sample { latency_us: &baseline, errors: 0 }, Sample { latency_us: &slower, errors: 0 }, &CompareSettings::default());
        assert_eq!(c.verdict, Verdict::Worse, "{c:?}");
        let latency = c.latency.unwrap();
        assert!(latency.p_value < 0.01 && (0.2..0.4).contains(&latency.relative_shift), "{latency:?}");
        assert!(latency.shift_ms.low > 0.0 && latency.shift_ms.low < latency.shift_ms.estimate && latency.shift_ms.estimate < latency.shift_ms.high);
        let c = compare(Sample { latency_us: &slower, errors: 0 }, Sample { latency_us: &baseline, errors: 0 }, &CompareSettings::default());
        assert_eq!(c.verdict, Verdict::Better, "{c:?}");
    }

    #[test]
    fn more_errors_are_worse_and_few_requests_are_not_enough() {
        let mut rng = SmallRng::seed_from_u64(3);
        let a = lognormal_sample(&mut rng, 10_000, 20_000.0, 1.0);
        let b = lognormal_sample(&mut rng, 10_000, 20_000.0, 1.0);
        let c = compare(Sample { latency_us: &a, errors: 100 }, Sample { latency_us: &b, errors: 300 }, &CompareSettings::default());
        assert_eq!(c.verdict, Verdict::Worse, "{c:?}");
        assert!(c.errors.unwrap().p_value < 1e-6);
        let few = lognormal_sample(&mut rng, 10, 20_000.0, 2.0);
        assert_eq!(compare(Sample { latency_us: &a, errors: 0 }, Sample { latency_us: &few, errors: 0 }, &CompareSettings::default()).verdict, Verdict::NotEnoughData);
    }

    /// A/A: both sides drawn from one distribution, over many seeds; how often a verdict other
    /// than "no significant difference" comes out is the false-positive rate.
    #[test]
    fn a_a_splits_rarely_differ() {
        let settings = CompareSettings::default();
        let runs = 400;
        let mut latency_significant = 0;
        let mut verdicts = 0;
        for seed in 0..runs {
            let mut rng = SmallRng::seed_from_u64(1000 + seed);
            let a = lognormal_sample(&mut rng, 2_000, 30_000.0, 1.0);
            let b = lognormal_sample(&mut rng, 500, 30_000.0, 1.0);
            let errors_a = (0..2_000).filter(|_| rng.random::<f64>() < 0.02).count() as u64;
            let errors_b = (0..500).filter(|_| rng.random::<f64>() < 0.02).count() as u64;
            let c = compare(Sample { latency_us: &a, errors: errors_a }, Sample { latency_us: &b, errors: errors_b }, &settings);
            latency_significant += u32::from(c.latency.as_ref().unwrap().p_value < settings.alpha / 2.0);
            verdicts += u32::from(c.verdict != Verdict::NoSignificantDifference);
        }
        let rate = f64::from(latency_significant) / runs as f64;
        let verdict_rate = f64::from(verdicts) / runs as f64;
        println!("A/A over {runs} seeds: Mann-Whitney p < {} in {:.2}% of runs; a verdict other than no difference in {:.2}% (alpha {})", settings.alpha / 2.0, rate * 100.0, verdict_rate * 100.0, settings.alpha);
        // At alpha 0.01 at most 4 of 400 are expected; 11 would be beyond 3.5 binomial sds.
        assert!(verdicts <= 11, "{verdicts} of {runs}");
    }
}
