//! Adaptive head sampling, served: per-operation probabilities in Jaeger's remote-sampling format
//! (`GET /api/sampling?service=NAME`), computed from the traffic the analyzer observed, toward a
//! target of sampled traces per second for each root operation, as Jaeger's adaptive sampling does.
//!
//! The computation is stateless. Each bottleneck rollup counts an endpoint's traces and the same
//! traces weighted by 1 / the probability their root was head-sampled with (`sampler.param`), so
//! a window tells both how many traces the service started (the weighted count) and the
//! probability that was in effect (their ratio). Every replica of the query server, restarted or
//! not, answers the same, and a client that refreshed late is measured by what it recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tracepipe_schemas::analytics::BottleneckRollup;

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveSampling {
    /// Sampled traces per second wanted from each root operation of a service.
    pub target_traces_per_second: f64,
    /// How much observed traffic a probability is computed from.
    pub lookback: Duration,
    /// For operations not observed in the lookback (new ones are sampled fully until measured).
    pub default_probability: f64,
    pub min_probability: f64,
    /// A floor on each operation's sampled traces per second, so rare operations stay visible.
    pub min_traces_per_second: f64,
}

impl Default for AdaptiveSampling {
    fn default() -> AdaptiveSampling {
        AdaptiveSampling { target_traces_per_second: 1.0, lookback: Duration::from_secs(300), default_probability: 1.0, min_probability: 1e-5, min_traces_per_second: 1.0 / 60.0 }
    }
}

/// A probability grows at most this much per computation (Jaeger's `PercentageIncreaseCap`): a
/// quiet minute must not open the floodgates for a busy operation.
const MAX_INCREASE: f64 = 0.5;
/// Within this fraction of the target the probability in effect stays (Jaeger's
/// `DeltaTolerance`), so probabilities do not flap with noise.
const TOLERANCE: f64 = 0.3;

/// One operation's traffic over the lookback.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub traces: u64,
    pub adjusted_traces: f64,
}

impl AdaptiveSampling {
    /// The probability that brings `observed` (over `seconds`) to the target.
    pub fn probability(&self, observed: Observed, seconds: f64) -> f64 {
        if observed.traces == 0 || seconds <= 0.0 {
            return self.default_probability;
        }
        let adjusted = observed.adjusted_traces.max(observed.traces as f64);
        let started_per_second = adjusted / seconds;
        let sampled_per_second = observed.traces as f64 / seconds;
        let in_effect = observed.traces as f64 / adjusted;
        let target = self.target_traces_per_second;
        let wanted = if (sampled_per_second - target).abs() <= TOLERANCE * target {
            in_effect
        } else {
            let wanted = (target / started_per_second).max(self.min_traces_per_second / started_per_second);
            if wanted > in_effect {
                wanted.min(in_effect * (1.0 + MAX_INCREASE))
            } else {
                wanted
            }
        };
        wanted.clamp(self.min_probability, 1.0)
    }

    /// Per-operation probabilities from a service's bottleneck rollups: the windows that ended
    /// within the lookback before the newest one (the analyzer emits a window once it closed).
    pub fn probabilities(&self, rollups: &[BottleneckRollup]) -> BTreeMap<String, f64> {
        let Some(newest_end_ms) = rollups.iter().map(|r| r.window_start_unix_ms + r.window_seconds * 1_000).max() else {
            return BTreeMap::new();
        };
        let from_ms = newest_end_ms.saturating_sub(self.lookback.as_millis() as u64);
        let current: Vec<&BottleneckRollup> = rollups.iter().filter(|r| r.window_start_unix_ms >= from_ms).collect();
        // A service seen for less than the lookback is measured over the time it was seen.
        let oldest_start_ms = current.iter().map(|r| r.window_start_unix_ms).min().unwrap_or(from_ms);
        let seconds = newest_end_ms.saturating_sub(oldest_start_ms) as f64 / 1_000.0;
        let mut observed: BTreeMap<&str, Observed> = BTreeMap::new();
        for rollup in current {
            let o = observed.entry(rollup.operation.as_str()).or_default();
            o.traces += rollup.traces;
            o.adjusted_traces += rollup.adjusted_traces.unwrap_or(rollup.traces as f64);
        }
        observed.into_iter().map(|(operation, o)| (operation.to_string(), self.probability(o, seconds))).collect()
    }

    /// Jaeger's `SamplingStrategyResponse`.
    pub fn strategy(&self, per_operation: &BTreeMap<String, f64>) -> Value {
        json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": self.default_probability},
            "operationSampling": {
                "defaultSamplingProbability": self.default_probability,
                "defaultLowerBoundTracesPerSecond": self.min_traces_per_second,
                "perOperationStrategies": per_operation.iter().map(|(operation, p)| json!({
                    "operation": operation,
                    "probabilisticSampling": {"samplingRate": p},
                })).collect::<Vec<_>>(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollup(operation: &str, minute: u64, traces: u64, probability: f64) -> BottleneckRollup {
        BottleneckRollup {
            schema: String::new(),
            window_start_unix_ms: minute * 60_000,
            window_seconds: 60,
            service: "shop".into(),
            operation: operation.into(),
            traces,
            adjusted_traces: Some(traces as f64 / probability),
            total_ms: 0.0,
            contributors: Vec::new(),
            counted_in: None,
            span_kind: None,
        }
    }

    /// Services start `rates` traces/s per operation and sample with what was served; each
    /// minute the rollup records what they kept. Returns the probabilities after `minutes`.
    fn converge(config: &AdaptiveSampling, rates: &[(&str, f64)], minutes: u64) -> BTreeMap<String, f64> {
        let mut served: BTreeMap<String, f64> = BTreeMap::new();
        let mut rollups = Vec::new();
        for minute in 0..minutes {
            for &(operation, rate) in rates {
                let p = served.get(operation).copied().unwrap_or(config.default_probability);
                let kept = (rate * 60.0 * p).round() as u64;
                if kept > 0 {
                    rollups.push(rollup(operation, minute, kept, p));
                }
            }
            served = config.probabilities(&rollups);
        }
        served
    }

    #[test]
    fn busy_operations_converge_on_the_target_and_quiet_ones_keep_everything() {
        let config = AdaptiveSampling::default();
        let served = converge(&config, &[("GET /busy", 500.0), ("GET /medium", 20.0), ("GET /quiet", 0.5)], 30);
        let sampled = |op: &str, rate: f64| rate * served[op];
        assert!((sampled("GET /busy", 500.0) - 1.0).abs() <= TOLERANCE, "busy: {served:?}");
        assert!((sampled("GET /medium", 20.0) - 1.0).abs() <= TOLERANCE, "medium: {served:?}");
        assert_eq!(served["GET /quiet"], 1.0, "below the target everything is kept: {served:?}");
    }

    #[test]
    fn a_traffic_drop_raises_the_probability_gradually() {
        let config = AdaptiveSampling::default();
        let mut rollups: Vec<BottleneckRollup> = (0..5).map(|m| rollup("GET /x", m, 60, 0.01)).collect();
        assert!((config.probabilities(&rollups)["GET /x"] - 0.01).abs() < 1e-9, "on target: keep what is in effect");
        // Traffic falls tenfold: 6 kept a minute at 1% is 0.1/s, a tenth of the target.
        rollups = (0..5).map(|m| rollup("GET /x", m, 6, 0.01)).collect();
        let raised = config.probabilities(&rollups)["GET /x"];
        assert!((raised - 0.015).abs() < 1e-9, "at most +50% per step, got {raised}");
    }

    #[test]
    fn floors_and_old_windows() {
        let config = AdaptiveSampling { target_traces_per_second: 0.001, min_probability: 0.5e-3, ..AdaptiveSampling::default() };
        // 1000 traces/s started; the target alone would give 1e-6, the 1/60 floor 1.7e-5, the
        // minimum probability 5e-4.
        let p = config.probabilities(&[rollup("GET /x", 0, 60, 0.001)])["GET /x"];
        assert_eq!(p, 0.5e-3);
        // Windows older than the lookback before the newest are not counted.
        let config = AdaptiveSampling::default();
        let rollups = vec![rollup("GET /x", 0, 6_000, 1.0), rollup("GET /x", 10, 60, 1.0)];
        assert_eq!(config.probabilities(&rollups)["GET /x"], 1.0);
        // Rollups from before `adjusted_traces` existed count their traces as started ones.
        let mut legacy = rollup("GET /y", 0, 600, 1.0);
        legacy.adjusted_traces = None;
        assert!((config.probabilities(&[legacy])["GET /y"] - 0.1).abs() < 1e-9);
        assert!(config.probabilities(&[]).is_empty());
    }
}
