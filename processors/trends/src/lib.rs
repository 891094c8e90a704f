//! The trends evaluator. The analyzer counts each operation's requests per cohort
//! (`service.version`, environment, feature-flag variants) before sampling, and the store holds
//! every instance's partial counts once; every `interval` the evaluator reads them and judges each
//! canary, a new value of the canary attribute serving beside the incumbent
//! ([`tracepipe_health::canary`]), on its fixed schedule.
//!
//! A decided verdict opens a `canary_verdict` alert on the alerts topic, with its evidence:
//! critical when the candidate is worse, info when it is better, no different, or had too few
//! requests by the end of the schedule. The alert resolves when the two no longer serve side by
//! side (the candidate was rolled back, or it replaced the incumbent).
//!
//! Once a `regression.every`, it also searches every operation's p99 and error ratio for a recent
//! change point ([`tracepipe_health::changepoints::regressions`]): a rise past the thresholds opens
//! a `regression` alert (warning) naming what changed then, resolved once no such change is
//! recent. Each of `forecasts` (an operation's p99 or error ratio forecast to cross a threshold
//! within a horizon) and, with `budget_horizon`, each SLO whose error budget runs out within it at
//! the last hour's burn rate opens a `forecast_breach` alert, resolved when no longer forecast.
//! One evaluator is enough.

pub mod config;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracepipe_analytics::alerts::AlertBook;
use tracepipe_analytics::compare::Verdict;
use tracepipe_health::canary::{canaries, CanarySettings, CanaryVerdict};
use tracepipe_health::changepoints::{regressions, Regression, RegressionSettings};
use tracepipe_runtime::publish::Publisher;
use tracepipe_runtime::{ComponentState, Health};
use tracepipe_health::forecast::{breach, Breach, ForecastRule};
use tracepipe_schemas::analytics::{Alert, AlertDetails, AlertKind, AlertSubject, CanaryDetails, ForecastDetails, RegressionDetails, Severity};
use tracepipe_store::{Store, StoreError};

pub struct TrendsEvaluator {
    settings: CanarySettings,
    regression: RegressionSettings,
    /// How often regressions are searched for.
    regression_every: Duration,
    last_regression_ms: u64,
    forecasts: std::sync::Arc<[ForecastRule]>,
    slos: std::sync::Arc<[tracepipe_analytics::slo::SloSpec]>,
    budget_horizon: Option<Duration>,
    store: Option<Store>,
    publisher: Publisher,
    book: CanaryAlerts,
    interval: Duration,
}

impl TrendsEvaluator {
    /// An evaluator that continues `open_alerts` (the latest firing events of source `trends`).
    pub fn new(spec: &config::TrendsSpec, slos: std::sync::Arc<[tracepipe_analytics::slo::SloSpec]>, store: Store, publisher: Publisher, open_alerts: Vec<Alert>, now_ms: u64) -> Self {
        TrendsEvaluator {
            settings: spec.canary.clone(),
            regression: spec.regression.clone(),
            regression_every: spec.regression_every,
            last_regression_ms: 0,
            forecasts: spec.forecasts.clone().into(),
            slos,
            budget_horizon: spec.budget_horizon,
            store: Some(store),
            publisher,
            book: CanaryAlerts::new(open_alerts, now_ms),
            interval: spec.interval,
        }
    }

    /// Evaluates every `interval` until `shutdown`, reporting under `trends` in `health`.
    pub async fn run(mut self, shutdown: CancellationToken, health: Health) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now_ms = unix_ms();
            let Some(store) = self.store.take() else { break };
            let settings = self.settings.clone();
            let slow_round = now_ms >= self.last_regression_ms + self.regression_every.as_millis() as u64;
            let regression = slow_round.then(|| self.regression.clone());
            let (forecasts, slos, budget_horizon) = (self.forecasts.clone(), self.slos.clone(), self.budget_horizon);
            let round = move |store: &mut Store| -> Result<(Vec<CanaryVerdict>, Option<SlowRound>), StoreError> {
                let verdicts = canaries(store, &settings, now_ms)?;
                let slow = match regression {
                    Some(r) => Some(SlowRound {
                        regressions: regressions(store, &r, now_ms)?,
                        breaches: forecasts.iter().map(|rule| Ok((rule.clone(), breach(store, rule, now_ms)?))).collect::<Result<_, StoreError>>()?,
                        budgets: match budget_horizon {
                            Some(h) => slos.iter().map(|slo| Ok((slo.clone(), tracepipe_health::slo::evaluate_from_store(store, slo, now_ms)?.status, h))).collect::<Result<_, StoreError>>()?,
                            None => Vec::new(),
                        },
                    }),
                    None => None,
                };
                Ok((verdicts, slow))
            };
            let Some((store, result)) = health.blocking_round("trends", "the trends evaluation", store, round).await else { break };
            self.store = Some(store);
            match result {
                Ok((verdicts, found)) => {
                    self.book.apply(&verdicts, now_ms);
                    if let Some(slow) = found {
                        self.last_regression_ms = now_ms;
                        self.book.apply_regressions(&slow.regressions, now_ms);
                        self.book.apply_forecasts(&slow.breaches, now_ms);
                        self.book.apply_budgets(&slow.budgets, now_ms);
                    }
                    self.book.book.expire_unconfirmed(now_ms, 2 * self.interval.as_millis() as u64);
                    health.set_ready("trends", true);
                }
                Err(error) => {
                    tracing::warn!(%error, "the trends evaluation could not read the store; trying again next round");
                    health.set("trends", ComponentState::NotReady(format!("the store cannot be read: {error}")));
                }
            }
            self.publish().await;
        }
        self.publish().await;
    }

    async fn publish(&mut self) {
        let pending = self.book.book.take_pending();
        if pending.is_empty() {
            return;
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = pending.iter().map(|a| (a.key.as_bytes().to_vec(), serde_json::to_vec(a).expect("serializable"))).collect();
        if let Err(error) = self.publisher.publish_all(None, encoded.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).await {
            tracing::warn!(%error, alerts = pending.len(), "canary alert events not published; trying again next round");
            self.book.book.requeue(pending);
        }
    }
}

/// The canary alerts: one per (operation, candidate), open while the two serve side by side.
pub struct CanaryAlerts {
    pub book: AlertBook,
    /// The verdicts announced, by key, with when their candidate appeared: a rollback brings the
    /// two side by side again for a moment, and the same verdict is not announced twice.
    announced: std::collections::BTreeMap<String, u64>,
}

impl CanaryAlerts {
    pub fn new(open_alerts: Vec<Alert>, now_ms: u64) -> Self {
        let announced = open_alerts
            .iter()
            .filter_map(|a| match &a.details {
                AlertDetails::Canary(d) => Some((a.key.clone(), d.candidate_since_unix_ms)),
                _ => None,
            })
            .collect();
        let mut book = AlertBook::new("trends");
        book.restore(open_alerts, now_ms);
        CanaryAlerts { book, announced }
    }

    /// Opens an alert for each decided verdict not yet announced, and resolves those whose canary
    /// is no longer judged.
    pub fn apply(&mut self, verdicts: &[CanaryVerdict], now_ms: u64) {
        let mut current = BTreeSet::new();
        for v in verdicts.iter().filter(|v| v.decided) {
            let key = format!("{}:{}:{}:{}={}", AlertKind::CanaryVerdict.as_str(), v.service, v.operation, v.attribute, v.candidate);
            current.insert(key.clone());
            let severity = if v.verdict == Verdict::Worse { Severity::Critical } else { Severity::Info };
            let summary = format!(
                "{} {}: {}={} is {} than {} ({}, evaluation {} of {})",
                v.service,
                v.operation,
                v.attribute,
                v.candidate,
                match v.verdict {
                    Verdict::Worse => "worse",
                    Verdict::Better => "better",
                    Verdict::NoSignificantDifference => "no different",
                    Verdict::NotEnoughData => "not judged, with too few requests,",
                },
                v.baseline,
                v.comparison.evidence.join("; "),
                v.evaluation,
                v.evaluations
            );
            if self.announced.get(&key) == Some(&v.candidate_since_ms) && !self.book.is_open(&key) {
                continue;
            }
            self.announced.insert(key.clone(), v.candidate_since_ms);
            let subject = AlertSubject::Operation { service: v.service.clone(), operation: v.operation.clone() };
            self.book.fire(key, AlertKind::CanaryVerdict, severity, subject, summary, AlertDetails::Canary(details(v)), now_ms);
        }
        let stale: Vec<String> = self.book.open_keys().filter(|k| k.starts_with(AlertKind::CanaryVerdict.as_str()) && !current.contains(*k)).map(str::to_string).collect();
        for key in stale {
            let summary = self.book.get(&key).map(|a| format!("{} — the two no longer serve side by side", a.summary)).unwrap_or_default();
            self.book.resolve(&key, summary, None, now_ms);
        }
    }
}

/// What the evaluator looks at once a `regression.every`.
struct SlowRound {
    regressions: Vec<Regression>,
    breaches: Vec<(ForecastRule, Option<Breach>)>,
    budgets: Vec<(tracepipe_analytics::slo::SloSpec, tracepipe_health::slo_status::SloStatus, Duration)>,
}

impl CanaryAlerts {
    /// Opens a `forecast_breach` alert for each rule whose forecast crosses its threshold, and
    /// resolves those of rules no longer forecast to.
    pub fn apply_forecasts(&mut self, breaches: &[(ForecastRule, Option<Breach>)], now_ms: u64) {
        let kind = AlertKind::ForecastBreach;
        for (rule, found) in breaches {
            let key = format!("{}:{}:{}:{}", kind.as_str(), rule.service, rule.operation, rule.metric);
            match found {
                Some(b) => {
                    let minutes = (b.crossing_ms - now_ms as i64).max(0) / 60_000;
                    let summary = format!(
                        "{} of {} {} is forecast to pass {} in about {minutes} min ({:.2}, 95% interval {:.2} to {:.2}; {})",
                        rule.metric, rule.service, rule.operation, rule.above, b.point, b.lower, b.upper, b.forecast.model
                    );
                    let details = ForecastDetails {
                        metric: rule.metric.clone(),
                        threshold: rule.above,
                        horizon_seconds: rule.horizon.as_secs(),
                        crossing_unix_ms: b.crossing_ms.max(0) as u64,
                        forecast: b.point,
                        forecast_lower: Some(b.lower),
                        forecast_upper: Some(b.upper),
                        model: b.forecast.model.clone(),
                        backtest_smape: b.forecast.backtest.as_ref().map(|t| t.smape),
                    };
                    let subject = AlertSubject::Operation { service: rule.service.clone(), operation: rule.operation.clone() };
                    self.book.fire(key, kind, Severity::Warning, subject, summary, AlertDetails::Forecast(details), now_ms);
                }
                None => {
                    let summary = format!("{} of {} {} is no longer forecast to pass {} within {}", rule.metric, rule.service, rule.operation, rule.above, humantime::format_duration(rule.horizon));
                    self.book.resolve(&key, summary, None, now_ms);
                }
            }
        }
    }

    /// Opens a `forecast_breach` alert for each SLO whose budget runs out within the horizon at the
    /// last hour's burn rate (and is not spent already: the burn-rate alerts cover that).
    pub fn apply_budgets(&mut self, budgets: &[(tracepipe_analytics::slo::SloSpec, tracepipe_health::slo_status::SloStatus, Duration)], now_ms: u64) {
        let kind = AlertKind::ForecastBreach;
        for (slo, status, horizon) in budgets {
            let key = format!("{}:{}:{}:error_budget", kind.as_str(), slo.service, slo.name);
            let runs_out = status.budget_exhausted_unix_ms.filter(|at| status.budget_remaining > 0.0 && *at <= now_ms + horizon.as_millis() as u64);
            match runs_out {
                Some(at) => {
                    let hours = (at.saturating_sub(now_ms)) as f64 / 3_600_000.0;
                    let summary = format!("{} ({}): the error budget runs out in {hours:.1} h at the last hour's burn rate; {:.1}% left", slo.name, slo.service, status.budget_remaining * 100.0);
                    let details = ForecastDetails {
                        metric: "error_budget".into(),
                        threshold: 0.0,
                        horizon_seconds: horizon.as_secs(),
                        crossing_unix_ms: at,
                        forecast: status.budget_remaining,
                        forecast_lower: None,
                        forecast_upper: None,
                        model: "the last hour's burn rate".into(),
                        backtest_smape: None,
                    };
                    let subject = AlertSubject::Slo { slo: slo.name.clone(), service: slo.service.clone() };
                    self.book.fire(key, kind, Severity::Warning, subject, summary, AlertDetails::Forecast(details), now_ms);
                }
                None => {
                    let summary = format!("{} ({}): the error budget no longer runs out within {}", slo.name, slo.service, humantime::format_duration(*horizon));
                    self.book.resolve(&key, summary, None, now_ms);
                }
            }
        }
    }

    /// Opens a `regression` alert for each recent rise, and resolves those no longer recent.
    pub fn apply_regressions(&mut self, found: &[Regression], now_ms: u64) {
        let kind = AlertKind::Regression;
        let mut current = BTreeSet::new();
        for r in found {
            let key = format!("{}:{}:{}:{}", kind.as_str(), r.service, r.operation, r.metric);
            current.insert(key.clone());
            let details = RegressionDetails {
                metric: r.metric.to_string(),
                changed_at_unix_ms: r.change.t_ms.max(0) as u64,
                level_before: r.change.before,
                level_after: r.change.after,
                change: if r.change.change.is_finite() { r.change.change } else { f64::MAX },
                p_value: r.change.p_value,
                what_changed: r.changed.iter().map(|c| c.describe()).collect(),
            };
            let subject = AlertSubject::Operation { service: r.service.clone(), operation: r.operation.clone() };
            self.book.fire(key, kind, Severity::Warning, subject, r.summary(), AlertDetails::Regression(details), now_ms);
        }
        let stale: Vec<String> = self.book.open_keys().filter(|k| k.starts_with(kind.as_str()) && !current.contains(*k)).map(str::to_string).collect();
        for key in stale {
            let summary = self.book.get(&key).map(|a| format!("{} — no longer a recent change", a.summary)).unwrap_or_default();
            self.book.resolve(&key, summary, None, now_ms);
        }
    }
}

fn details(v: &CanaryVerdict) -> CanaryDetails {
    let c = &v.comparison;
    CanaryDetails {
        attribute: v.attribute.clone(),
        baseline_value: v.baseline.clone(),
        candidate_value: v.candidate.clone(),
        verdict: serde_json::to_value(v.verdict).ok().and_then(|s| s.as_str().map(str::to_string)).unwrap_or_default(),
        evaluation: v.evaluation,
        evaluations: v.evaluations,
        alpha_per_evaluation: v.alpha_per_evaluation,
        candidate_since_unix_ms: v.candidate_since_ms,
        evaluated_until_unix_ms: v.evaluated_until_ms,
        baseline_requests: c.baseline.count,
        candidate_requests: c.candidate.count,
        baseline_error_ratio: c.baseline.error_ratio,
        candidate_error_ratio: c.candidate.error_ratio,
        latency_p_value: c.latency.as_ref().map(|l| l.p_value),
        shift_ms: c.latency.as_ref().map(|l| l.shift_ms.estimate),
        shift_low_ms: c.latency.as_ref().map(|l| l.shift_ms.low),
        shift_high_ms: c.latency.as_ref().map(|l| l.shift_ms.high),
        relative_shift: c.latency.as_ref().map(|l| l.relative_shift),
        errors_p_value: c.errors.as_ref().map(|e| e.p_value),
        evidence: c.evidence.clone(),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracepipe_health::slo_status::{Counts, SloStatus};
    use tracepipe_schemas::analytics::AlertState;

    fn slo() -> tracepipe_analytics::slo::SloSpec {
        let mut problems = tracepipe_processor::config::Problems::default();
        let yaml = "[{name: checkout-availability, service: frontend, events: {root: true}, sli: {availability: true}, objective: 99.5, window: 28d}]";
        let slos = tracepipe_analytics::slo::validate_slos("slos", Some(serde_yaml_ng::from_str(yaml).unwrap()), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        slos.into_iter().next().unwrap()
    }

    fn status(budget_remaining: f64, exhausted: Option<u64>) -> SloStatus {
        SloStatus {
            error_ratios: Vec::new(),
            period: Counts::default(),
            period_length: Duration::from_secs(28 * 86_400),
            budget_remaining,
            current_burn_rate: 3.0,
            period_burn_rate: 1.0,
            budget_exhausted_unix_ms: exhausted,
            alerts: Vec::new(),
        }
    }

    #[test]
    fn a_budget_running_out_within_the_horizon_alerts_until_it_no_longer_does() {
        let mut alerts = CanaryAlerts::new(Vec::new(), 0);
        let (hour, now) = (3_600_000u64, 1_800_000_000_000u64);
        let horizon = Duration::from_secs(24 * 3600);
        // Runs out in two days: nothing; in ten hours: an alert; already spent: the burn-rate
        // alerts speak, and this one resolves.
        alerts.apply_budgets(&[(slo(), status(0.6, Some(now + 48 * hour)), horizon)], now);
        assert!(alerts.book.take_pending().is_empty());
        alerts.apply_budgets(&[(slo(), status(0.2, Some(now + 10 * hour)), horizon)], now + hour);
        let fired = alerts.book.take_pending();
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].kind, fired[0].state), (AlertKind::ForecastBreach, AlertState::Firing));
        assert!(fired[0].summary.contains("runs out in 9.0 h"), "{}", fired[0].summary);
        let AlertDetails::Forecast(details) = &fired[0].details else { panic!() };
        assert_eq!((details.metric.as_str(), details.crossing_unix_ms), ("error_budget", now + 10 * hour));
        alerts.apply_budgets(&[(slo(), status(0.15, Some(now + 9 * hour)), horizon)], now + 2 * hour);
        assert!(alerts.book.take_pending().is_empty(), "still open, not repeated");
        alerts.apply_budgets(&[(slo(), status(-0.1, Some(now + 3 * hour)), horizon)], now + 3 * hour);
        let resolved = alerts.book.take_pending();
        assert_eq!(resolved.iter().map(|a| a.state).collect::<Vec<_>>(), vec![AlertState::Resolved]);
    }
}
