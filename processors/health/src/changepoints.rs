//! Change points of a series (an operation's p99 or error ratio per bucket), each attributed to
//! what changed at that time where the cohorts show it: a `service.version`, a
//! `deployment.environment.name` or a feature-flag variant that first appeared then.
//!
//! Detection is binary segmentation with Pettitt's test, a rank-based test for one change in
//! location: the series is split where the test is most significant, as long as it is below
//! `alpha`, both sides keep `min_segment` points and the medians differ by at least `min_change`;
//! then each side is searched again. Rank-based, so a few outlying buckets (a p99 of a quiet minute)
//! move nothing by themselves.

use serde::Serialize;
use tracepipe_analytics::median;

/// How change points are found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePointSettings {
    pub alpha: f64,
    /// Points each side of a change keeps at least.
    pub min_segment: usize,
    /// The smallest relative change of the median (0.1 is 10%) that counts.
    pub min_change: f64,
    /// Change points at most, strongest first.
    pub max_changes: usize,
}

impl Default for ChangePointSettings {
    fn default() -> Self {
        ChangePointSettings { alpha: 0.001, min_segment: 5, min_change: 0.1, max_changes: 8 }
    }
}

/// One change: at the first point of the new level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangePoint {
    /// Index of the first point after the change.
    pub index: usize,
    pub t_ms: i64,
    pub before: f64,
    pub after: f64,
    /// (after − before) / before; infinite from zero.
    pub change: f64,
    pub p_value: f64,
}


/// Pettitt's statistic over `values`: the split (first index of the second part) where
/// |U| is largest, and the approximate p-value 2·exp(−6K² / (n³ + n²)).
fn pettitt(values: &[f64]) -> Option<(usize, f64)> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    // U_t = Σ_{i≤t} Σ_{j>t} sign(x_j − x_i), updated in O(n) per step from the ranks.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let (mut u, mut best, mut at) = (0.0f64, 0.0f64, 0);
    for (t, rank) in ranks.iter().enumerate().take(n - 1) {
        // U_t = 2·Σ_{i≤t} r_i − (t+1)(n+1).
        u += 2.0 * rank - (n as f64 + 1.0);
        if u.abs() > best {
            best = u.abs();
            at = t + 1;
        }
    }
    let n = n as f64;
    let p = (2.0 * (-6.0 * best * best / (n * n * n + n * n)).exp()).min(1.0);
    Some((at, p))
}

/// The change points of `points` ((t_ms, value), in time order), in time order.
pub fn change_points(points: &[(i64, f64)], settings: &ChangePointSettings) -> Vec<ChangePoint> {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let mut found = Vec::new();
    let mut segments = vec![(0usize, values.len())];
    while let Some((start, end)) = segments.pop() {
        if found.len() >= settings.max_changes || end - start < 2 * settings.min_segment {
            continue;
        }
        let Some((split, p_value)) = pettitt(&values[start..end]) else { continue };
        let at = start + split;
        if p_value >= settings.alpha || at - start < settings.min_segment || end - at < settings.min_segment {
            continue;
        }
        let before = median(&mut values[start..at].to_vec());
        let after = median(&mut values[at..end].to_vec());
        let change = if before == 0.0 { if after == 0.0 { 0.0 } else { f64::INFINITY } } else { (after - before) / before };
        if change.abs() < settings.min_change {
            continue;
        }
        found.push(ChangePoint { index: at, t_ms: points[at].0, before, after, change, p_value });
        segments.push((start, at));
        segments.push((at, end));
    }
    found.sort_by_key(|c| c.index);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(n: usize, level: f64, seed: u64) -> Vec<f64> {
        // A small deterministic noise of ±5%.
        (0..n).map(|i| level * (1.0 + 0.05 * (((i as u64 * 2_654_435_761 + seed * 97) % 1000) as f64 / 500.0 - 1.0))).collect()
    }

    #[test]
    fn a_step_is_found_where_it_happened_and_a_flat_series_has_none() {
        let mut values = noisy(30, 100.0, 1);
        values.extend(noisy(30, 138.0, 2));
        let points: Vec<(i64, f64)> = values.iter().enumerate().map(|(i, v)| (i as i64 * 60_000, *v)).collect();
        let found = change_points(&points, &ChangePointSettings::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].index, 30);
        assert!((found[0].change - 0.38).abs() < 0.06, "{found:?}");
        let flat: Vec<(i64, f64)> = noisy(60, 100.0, 3).into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
        assert!(change_points(&flat, &ChangePointSettings::default()).is_empty());
        // One wild bucket is not a change.
        let mut spike = flat.clone();
        spike[40].1 = 10_000.0;
        assert!(change_points(&spike, &ChangePointSettings::default()).is_empty());
    }

    #[test]
    fn two_steps_are_both_found() {
        let mut values = noisy(20, 50.0, 4);
        values.extend(noisy(20, 80.0, 5));
        values.extend(noisy(20, 40.0, 6));
        let points: Vec<(i64, f64)> = values.iter().enumerate().map(|(i, v)| (i as i64, *v)).collect();
        let found: Vec<usize> = change_points(&points, &ChangePointSettings::default()).iter().map(|c| c.index).collect();
        assert_eq!(found, vec![20, 40]);
    }
}

/// A cohort value that changed at a change point: it first appeared then, or its share of the
/// requests rose by at least [`SHARE_RISE`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    pub attribute: String,
    pub value: String,
    /// Its share of the attribute's requests in the three buckets before and after the change.
    pub share_before: f64,
    pub share_after: f64,
    /// It first appeared within two buckets before the change and one after.
    pub appeared: bool,
}

impl Changed {
    pub fn describe(&self) -> String {
        if self.appeared {
            format!("{} {} appeared", self.attribute, self.value)
        } else {
            format!("{} {} went from {:.0}% to {:.0}% of requests", self.attribute, self.value, self.share_before * 100.0, self.share_after * 100.0)
        }
    }
}

/// A share rise that counts as a change of what serves the requests (20 points).
pub const SHARE_RISE: f64 = 0.2;

/// What changed at `change_ms` among `counts` ((attribute, value) → requests per bucket, from
/// [`crate::series::cohort_counts`]): values that first appeared near it (not at the range's
/// start, where they were there all along) or whose share rose by [`SHARE_RISE`] across it.
pub fn what_changed(change_ms: i64, bucket_ms: i64, range_start_ms: i64, counts: &std::collections::BTreeMap<(String, String), std::collections::BTreeMap<i64, u64>>) -> Vec<Changed> {
    let span = |from: i64, to: i64, buckets: &std::collections::BTreeMap<i64, u64>| buckets.range(from..to).map(|(_, n)| *n).sum::<u64>();
    let (before, after) = ((change_ms - 3 * bucket_ms, change_ms), (change_ms, change_ms + 3 * bucket_ms));
    let mut totals: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
    for ((attribute, _), buckets) in counts {
        let total = totals.entry(attribute).or_default();
        total.0 += span(before.0, before.1, buckets);
        total.1 += span(after.0, after.1, buckets);
    }
    let mut found = Vec::new();
    for ((attribute, value), buckets) in counts {
        let (all_before, all_after) = totals[attribute.as_str()];
        let share = |n: u64, all: u64| if all == 0 { 0.0 } else { n as f64 / all as f64 };
        let (share_before, share_after) = (share(span(before.0, before.1, buckets), all_before), share(span(after.0, after.1, buckets), all_after));
        let first = buckets.keys().next().copied().unwrap_or(i64::MAX);
        let appeared = first >= change_ms - 2 * bucket_ms && first <= change_ms + bucket_ms && first >= range_start_ms + bucket_ms;
        if appeared || share_after - share_before >= SHARE_RISE {
            found.push(Changed { attribute: attribute.clone(), value: value.clone(), share_before, share_after, appeared });
        }
    }
    found
}

/// How recent level changes of each operation are found ([`regressions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionSettings {
    /// The history searched, at `bucket`.
    pub lookback: std::time::Duration,
    pub bucket: std::time::Duration,
    /// A change counts while it is this recent.
    pub recent: std::time::Duration,
    /// The smallest rise of the p99 (0.2 is 20%) and of the error ratio (absolute, 0.01 is one
    /// percentage point) that is a regression.
    pub min_latency_rise: f64,
    pub min_error_rise: f64,
    /// Buckets with fewer requests are left out (their p99 is a handful of requests).
    pub min_requests: u64,
    pub detection: ChangePointSettings,
}

impl Default for RegressionSettings {
    fn default() -> Self {
        RegressionSettings {
            lookback: std::time::Duration::from_secs(3 * 3600),
            bucket: std::time::Duration::from_secs(60),
            recent: std::time::Duration::from_secs(30 * 60),
            min_latency_rise: 0.2,
            min_error_rise: 0.01,
            min_requests: 20,
            detection: ChangePointSettings::default(),
        }
    }
}

/// A recent rise of an operation's p99 or error ratio.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub service: String,
    pub operation: String,
    /// `p99` or `error_ratio`.
    pub metric: &'static str,
    pub change: ChangePoint,
    pub changed: Vec<Changed>,
}

impl Regression {
    pub fn summary(&self) -> String {
        let amount = match self.metric {
            "p99" => format!("rose {:.0}% ({:.1} ms to {:.1} ms)", self.change.change * 100.0, self.change.before, self.change.after),
            _ => format!("rose from {:.2}% to {:.2}%", self.change.before * 100.0, self.change.after * 100.0),
        };
        let when = self.changed.iter().map(Changed::describe).collect::<Vec<_>>().join(" and ");
        format!("{} of {} {} {amount}{}", self.metric, self.service, self.operation, if when.is_empty() { String::new() } else { format!(", when {when}") })
    }
}

/// Every server or consumer operation's most recent regression, if one is within `recent`.
pub fn regressions(store: &mut tracepipe_store::Store, settings: &RegressionSettings, now_ms: u64) -> Result<Vec<Regression>, tracepipe_store::StoreError> {
    use std::collections::BTreeMap;
    use tracepipe_schemas::analytics::Rollup;
    let bucket = settings.bucket.as_millis().max(1) as i64;
    let start_ms = (now_ms.saturating_sub(settings.lookback.as_millis() as u64) as i64).div_euclid(bucket) * bucket;
    let bodies = tracepipe_store::reads::rollups(store, "operation", start_ms, now_ms as i64, None)?;
    let mut series: BTreeMap<(String, String), BTreeMap<i64, crate::series::Merged>> = BTreeMap::new();
    for body in &bodies {
        let Ok(Rollup::Operation(r)) = serde_json::from_str(body) else { continue };
        if r.span_kind != "SPAN_KIND_SERVER" && r.span_kind != "SPAN_KIND_CONSUMER" {
            continue;
        }
        let at = (r.window_start_unix_ms as i64).div_euclid(bucket) * bucket;
        let merged = series.entry((r.service, r.operation)).or_default().entry(at).or_default();
        merged.count += r.count;
        merged.errors += r.errors;
        merged.latency_us.add(&r.histogram_us);
    }
    let recent_from = now_ms as i64 - settings.recent.as_millis() as i64;
    let mut found = Vec::new();
    for ((service, operation), buckets) in series {
        let kept: Vec<(&i64, &crate::series::Merged)> = buckets.iter().filter(|(_, m)| m.count >= settings.min_requests).collect();
        let latency: Vec<(i64, f64)> = kept.iter().filter_map(|(t, m)| m.latency_us.quantile_ms(0.99).map(|v| (**t, v))).collect();
        let errors: Vec<(i64, f64)> = kept.iter().map(|(t, m)| (**t, m.error_ratio())).collect();
        let mut counts = None;
        for (metric, points) in [("p99", latency), ("error_ratio", errors)] {
            let Some(last) = change_points(&points, &settings.detection).into_iter().filter(|c| c.t_ms >= recent_from).next_back() else { continue };
            let rise = if metric == "p99" { last.change >= settings.min_latency_rise } else { last.after - last.before >= settings.min_error_rise };
            if !rise {
                continue;
            }
            if counts.is_none() {
                counts = Some(crate::series::cohort_counts(store, &service, &operation, start_ms, now_ms as i64, bucket)?);
            }
            let changed = what_changed(last.t_ms, bucket, start_ms, counts.as_ref().expect("read"));
            found.push(Regression { service: service.clone(), operation: operation.clone(), metric, change: last, changed });
        }
    }
    Ok(found)
}
