//! The SLO evaluator. The analyzer counts each SLO's events per window before sampling
//! (`tracepipe_analyzer::slos`); with several analyzer instances each publishes its partial counts,
//! and the store, which upserts each by what it describes, holds every one once. Summing them
//! there is therefore exact whatever the number of instances, so the evaluator reads the sums from
//! the store every `interval` and derives from them ([`status`]):
//!
//! - Sloth's series (`slo:sli_error:ratio_rate5m` … , `slo:objective:ratio`,
//!   `slo:error_budget:ratio`, `slo:current_burn_rate:ratio`, `slo:period_burn_rate:ratio`,
//!   `slo:period_error_budget_remaining:ratio`, labels `sloth_id`, `sloth_service`, `sloth_slo`);
//! - multiwindow burn-rate alerts on the alerts topic (`slo_burn_rate`, one per SLO and severity,
//!   page or ticket), firing while any of the severity's window pairs burns too fast and resolved
//!   when none does, with the burn rates, the budget left, when it runs out and traces of bad events.
//!
//! Each round also reads every service's health ([`tracepipe_health::services`]) and publishes it as
//! `tracepipe_service_*` gauges, with the status its SLOs give it.
//!
//! Counts reach the store when the analyzer closes a window's segment (its window plus its
//! lateness), so the most recent minute or two is not in the figures yet. One evaluator is
//! enough; a second one computes the same state from the same store and repeats the events.

pub mod config;
mod metrics;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracepipe_analytics::alerts::AlertBook;
use tracepipe_analytics::slo::{AlertSeverity, SloSpec};
use tracepipe_runtime::publish::Publisher;
use tracepipe_runtime::{ComponentState, Health};
use tracepipe_schemas::analytics::{Alert, AlertDetails, AlertKind, AlertSubject, Severity, SloBurnDetails};
use tracepipe_store::{Store, StoreError};

use tracepipe_health::services::{self, Overview};
use tracepipe_health::slo::{evaluate_from_store, window_label, Evaluated};
use tracepipe_health::slo_status::SloStatus;

pub struct SloEvaluator {
    slos: Arc<[SloSpec]>,
    store: Option<Store>,
    publisher: Publisher,
    book: AlertBook,
    interval: Duration,
}

impl SloEvaluator {
    /// An evaluator that continues `open_alerts` (the latest firing events of source `slo`).
    pub fn new(slos: Arc<[SloSpec]>, store: Store, publisher: Publisher, interval: Duration, open_alerts: Vec<Alert>, now_ms: u64) -> Self {
        let mut book = AlertBook::new("slo");
        book.restore(open_alerts, now_ms);
        SloEvaluator { slos, store: Some(store), publisher, book, interval }
    }

    /// Evaluates every `interval` until `shutdown`, reporting under `slo` in `health`: ready after
    /// a round that read the store, not ready while the store cannot be read, failed if a round
    /// panicked (which ends the evaluator, so an orchestrator restarts it).
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
            let slos = self.slos.clone();
            let round = move |store: &mut Store| -> Result<(Vec<Evaluated>, Overview), StoreError> {
                let evaluated: Vec<Evaluated> = slos.iter().map(|slo| evaluate_from_store(store, slo, now_ms)).collect::<Result<_, _>>()?;
                let statuses: Vec<_> = slos.iter().zip(evaluated.iter().map(|e| &e.status)).collect();
                let overview = services::overview(store, &statuses, now_ms, SERVICE_WINDOW)?;
                Ok((evaluated, overview))
            };
            let Some((store, result)) = health.blocking_round("slo", "the SLO evaluation", store, round).await else { break };
            self.store = Some(store);
            match result {
                Ok((evaluated_slos, overview)) => {
                    metrics::EVALUATIONS.with_label_values(&["ok"]).inc();
                    record_service_metrics(&overview);
                    let slos = self.slos.clone();
                    for (slo, found) in slos.iter().zip(&evaluated_slos) {
                        record_metrics(slo, &found.status);
                        self.alert(slo, found, now_ms);
                    }
                    self.book.expire_unconfirmed(now_ms, 2 * self.interval.as_millis() as u64);
                    health.set_ready("slo", true);
                }
                Err(error) => {
                    metrics::EVALUATIONS.with_label_values(&["store_error"]).inc();
                    tracing::warn!(%error, "the SLO evaluation could not read the store; trying again next round");
                    health.set("slo", ComponentState::NotReady(format!("the store cannot be read: {error}")));
                }
            }
            self.publish().await;
        }
        self.publish().await;
    }

    fn alert(&mut self, slo: &SloSpec, found: &Evaluated, now_ms: u64) {
        let status = &found.status;
        for (severity, windows) in &status.alerts {
            let subject = AlertSubject::Slo { slo: slo.name.clone(), service: slo.service.clone() };
            let key = format!("{}:{}", AlertBook::key(AlertKind::SloBurnRate, &subject), severity.as_str());
            let details = AlertDetails::Slo(SloBurnDetails {
                slo_severity: severity.as_str().to_string(),
                objective: slo.objective,
                burn_windows: windows.clone(),
                error_budget_remaining: status.budget_remaining,
                budget_exhausted_unix_ms: status.budget_exhausted_unix_ms,
                exemplar_trace_ids: found.exemplars.clone(),
            });
            let fastest = windows.iter().filter(|w| w.exceeded).map(|w| w.short_burn_rate.min(w.long_burn_rate)).fold(0.0, f64::max);
            if status.firing(*severity) {
                let summary = format!(
                    "{} ({}) burns its error budget {fastest:.1}× as fast as its {:.3}% objective allows; {:.1}% of the budget left",
                    slo.name,
                    slo.service,
                    slo.objective * 100.0,
                    status.budget_remaining * 100.0
                );
                let alert_severity = match severity {
                    AlertSeverity::Page => Severity::Critical,
                    AlertSeverity::Ticket => Severity::Warning,
                };
                self.book.fire(key, AlertKind::SloBurnRate, alert_severity, subject, summary, details, now_ms);
            } else if let Some(open) = self.book.get(&key) {
                // The exemplars of the bad events that opened it, when the last round saw none.
                let mut details = details;
                if let (AlertDetails::Slo(now), AlertDetails::Slo(then)) = (&mut details, &open.details) {
                    if now.exemplar_trace_ids.is_empty() {
                        now.exemplar_trace_ids = then.exemplar_trace_ids.clone();
                    }
                }
                let summary = format!("{} ({}) burns its error budget no faster than its {} alert allows; {:.1}% left", slo.name, slo.service, severity.as_str(), status.budget_remaining * 100.0);
                self.book.resolve(&key, summary, Some(details), now_ms);
            }
        }
    }

    /// Publishes the alert events of the round; those the broker did not take are kept for the next.
    async fn publish(&mut self) {
        let pending = self.book.take_pending();
        if pending.is_empty() {
            return;
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = pending.iter().map(|a| (a.key.as_bytes().to_vec(), serde_json::to_vec(a).expect("serializable"))).collect();
        if let Err(error) = self.publisher.publish_all(None, encoded.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).await {
            tracing::warn!(%error, alerts = pending.len(), "SLO alert events not published; trying again next round");
            self.book.requeue(pending);
        }
    }
}

/// The span of the latest stored windows the service metrics cover.
const SERVICE_WINDOW: Duration = Duration::from_secs(300);

fn record_service_metrics(overview: &Overview) {
    for service in &overview.services {
        let labels = [service.service.as_str()];
        match service.status {
            Some(status) => metrics::SERVICE_STATUS.with_label_values(&labels).set(f64::from(status.level())),
            None => {
                let _ = metrics::SERVICE_STATUS.remove_label_values(&labels);
            }
        }
        metrics::SERVICE_RATE.with_label_values(&labels).set(service.requests_per_second);
        metrics::SERVICE_ERROR_RATIO.with_label_values(&labels).set(service.error_ratio);
        if let Some(apdex) = service.apdex {
            metrics::SERVICE_APDEX.with_label_values(&labels).set(apdex);
        }
        for (quantile, value) in [("0.5", service.p50_ms), ("0.9", service.p90_ms), ("0.99", service.p99_ms)] {
            if let Some(value) = value {
                metrics::SERVICE_LATENCY.with_label_values(&[labels[0], quantile]).set(value);
            }
        }
    }
}

fn record_metrics(slo: &SloSpec, status: &SloStatus) {
    let id = format!("{}-{}", slo.service, slo.name);
    let labels = [id.as_str(), slo.service.as_str(), slo.name.as_str()];
    let last = status.error_ratios.len().saturating_sub(1);
    for (index, (window, ratio)) in status.error_ratios.iter().enumerate() {
        // A calendar month's length changes every month; its series keeps one name.
        let label = if index == last && slo.window == tracepipe_analytics::slo::SloWindow::CalendarMonth { "_month".to_string() } else { window_label(*window) };
        metrics::error_ratio(&label).with_label_values(&labels).set(*ratio);
    }
    metrics::OBJECTIVE.with_label_values(&labels).set(slo.objective);
    metrics::ERROR_BUDGET.with_label_values(&labels).set(slo.error_budget());
    metrics::CURRENT_BURN_RATE.with_label_values(&labels).set(status.current_burn_rate);
    metrics::PERIOD_BURN_RATE.with_label_values(&labels).set(status.period_burn_rate);
    metrics::PERIOD_BUDGET_REMAINING.with_label_values(&labels).set(status.budget_remaining);
    metrics::EVENTS.with_label_values(&[labels[0], labels[1], labels[2], "true"]).set(status.period.good as f64);
    metrics::EVENTS.with_label_values(&[labels[0], labels[1], labels[2], "false"]).set(status.period.bad() as f64);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
