//! `processors.trends` in topology.yaml: where the trends evaluator writes its alerts, how often it
//! evaluates, and the canary schedule.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_analytics::compare::CompareSettings;
use tracepipe_health::canary::CanarySettings;
use tracepipe_health::changepoints::RegressionSettings;
use tracepipe_health::forecast::ForecastRule;
use tracepipe_processor::config::{positive, within, Problems, Section, SectionConfig};

#[derive(Debug, Clone)]
pub struct TrendsSpec {
    pub alerts: String,
    pub interval: Duration,
    pub canary: CanarySettings,
    pub regression: RegressionSettings,
    /// How often regressions, forecasts and budgets are looked at.
    pub regression_every: Duration,
    pub forecasts: Vec<ForecastRule>,
    /// An SLO whose error budget runs out within this, at the last hour's burn rate, is alerted.
    pub budget_horizon: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrends {
    alerts: Option<String>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default)]
    canary: RawCanary,
    #[serde(default)]
    regression: RawRegression,
    #[serde(default)]
    forecasts: Vec<RawForecast>,
    #[serde(default, with = "humantime_serde")]
    budget_horizon: Option<Duration>,
}

/// `{service: checkout, operation: POST /orders, metric: p99, above: 500, horizon: 30m, history: 6h}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForecast {
    service: Option<String>,
    operation: Option<String>,
    metric: Option<String>,
    above: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    horizon: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    history: Option<Duration>,
}

/// `regression: {every: 1m, lookback: 3h, recent: 30m, min_latency_rise: 0.2, min_error_rise: 0.01,
/// min_requests: 20}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegression {
    #[serde(default, with = "humantime_serde")]
    every: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lookback: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    recent: Option<Duration>,
    min_latency_rise: Option<f64>,
    min_error_rise: Option<f64>,
    min_requests: Option<i64>,
}

/// `canary: {attribute: service.version, every: 1m, evaluations: 30, settle: 2m, lookback: 6h,
/// alpha: 0.01, min_effect: 0.05, min_error_delta: 0.005, min_requests: 50}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    attribute: Option<String>,
    #[serde(default, with = "humantime_serde")]
    every: Option<Duration>,
    evaluations: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    settle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lookback: Option<Duration>,
    alpha: Option<f64>,
    min_effect: Option<f64>,
    min_error_delta: Option<f64>,
    min_requests: Option<i64>,
}

impl SectionConfig for TrendsSpec {
    type Raw = RawTrends;

    fn validate(raw: RawTrends, section: &Section<'_>, problems: &mut Problems) -> Option<TrendsSpec> {
        let alerts = section.topic("alerts", &raw.alerts, problems);
        let interval = positive(section.at("interval"), raw.interval, Duration::from_secs(15), problems);
        let at = |field: &str| format!("{}.{field}", section.at("canary"));
        let (d, c) = (CanarySettings::default(), CompareSettings::default());
        let r = raw.canary;
        let attribute = r.attribute.unwrap_or(d.attribute);
        if attribute.trim().is_empty() {
            problems.add(at("attribute"), "must not be empty");
        }
        let canary = CanarySettings {
            attribute,
            every: positive(at("every"), r.every, d.every, problems),
            evaluations: within(at("evaluations"), r.evaluations, i64::from(d.evaluations), 1..=1000, problems) as u32,
            settle: positive(at("settle"), r.settle, d.settle, problems),
            lookback: positive(at("lookback"), r.lookback, d.lookback, problems),
            compare: CompareSettings {
                alpha: within(at("alpha"), r.alpha, c.alpha, 1e-6..=0.5, problems),
                min_effect: within(at("min_effect"), r.min_effect, c.min_effect, 0.0..=10.0, problems),
                min_error_delta: within(at("min_error_delta"), r.min_error_delta, c.min_error_delta, 0.0..=1.0, problems),
                min_samples: within(at("min_requests"), r.min_requests, c.min_samples as i64, 1..=1_000_000, problems) as u64,
            },
        };
        if canary.lookback < canary.every * canary.evaluations {
            problems.add(at("lookback"), format!("must cover the whole schedule ({} × {})", canary.evaluations, humantime::format_duration(canary.every)));
        }
        let at = |field: &str| format!("{}.{field}", section.at("regression"));
        let (d, r) = (RegressionSettings::default(), raw.regression);
        let regression = RegressionSettings {
            lookback: positive(at("lookback"), r.lookback, d.lookback, problems),
            recent: positive(at("recent"), r.recent, d.recent, problems),
            min_latency_rise: within(at("min_latency_rise"), r.min_latency_rise, d.min_latency_rise, 0.0..=100.0, problems),
            min_error_rise: within(at("min_error_rise"), r.min_error_rise, d.min_error_rise, 0.0..=1.0, problems),
            min_requests: within(at("min_requests"), r.min_requests, d.min_requests as i64, 1..=1_000_000, problems) as u64,
            ..d
        };
        if regression.recent > regression.lookback {
            problems.add(at("recent"), "must not exceed lookback");
        }
        let regression_every = positive(at("every"), r.every, Duration::from_secs(60), problems);
        let mut forecasts = Vec::new();
        for (i, f) in raw.forecasts.into_iter().enumerate() {
            let at = |field: &str| format!("{}[{i}].{field}", section.at("forecasts"));
            let metric = f.metric.unwrap_or_else(|| "p99".into());
            if !["p50", "p90", "p99", "error_ratio"].contains(&metric.as_str()) {
                problems.add(at("metric"), format!("must be p50, p90, p99 or error_ratio, got `{metric}`"));
            }
            let (Some(service), Some(operation), Some(above)) = (f.service, f.operation, f.above) else {
                problems.add(section.at(&format!("forecasts[{i}]")), "needs service, operation and above");
                continue;
            };
            if !above.is_finite() || above < 0.0 {
                problems.add(at("above"), "must be a number of zero or more");
            }
            let horizon = positive(at("horizon"), f.horizon, Duration::from_secs(3600), problems);
            let history = positive(at("history"), f.history, Duration::from_secs(6 * 3600), problems);
            if history < horizon {
                problems.add(at("history"), "must be at least the horizon");
            }
            forecasts.push(ForecastRule { service, operation, metric, above, horizon, history });
        }
        let budget_horizon = raw.budget_horizon.map(|h| positive(section.at("budget_horizon"), Some(h), h, problems));
        Some(TrendsSpec { alerts: alerts?, interval, canary, regression, regression_every, forecasts, budget_horizon })
    }
}
