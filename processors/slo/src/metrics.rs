//! Sloth's series, so SLO dashboards and alerts written for Sloth read tracepipe's figures, and
//! the evaluator's own health.

use std::sync::LazyLock;

use prometheus::{register_gauge_vec, register_int_counter_vec, GaugeVec, IntCounterVec};

/// `sloth_id` is `{service}-{slo}`, as Sloth names it.
pub const LABELS: &[&str] = &["sloth_id", "sloth_service", "sloth_slo"];

fn gauge(name: &str, help: &str) -> GaugeVec {
    register_gauge_vec!(name, help, LABELS).unwrap()
}

/// `slo:sli_error:ratio_rate{window}` for each window, registered on first use.
pub fn error_ratio(window: &str) -> GaugeVec {
    static BY_WINDOW: LazyLock<std::sync::Mutex<Vec<(String, GaugeVec)>>> = LazyLock::new(Default::default);
    let mut known = BY_WINDOW.lock().unwrap();
    if let Some((_, gauge)) = known.iter().find(|(w, _)| w == window) {
        return gauge.clone();
    }
    let created = gauge(&format!("slo:sli_error:ratio_rate{window}"), &format!("Bad events over all events of the SLO over the last {window}"));
    known.push((window.to_string(), created.clone()));
    created
}

pub static OBJECTIVE: LazyLock<GaugeVec> = LazyLock::new(|| gauge("slo:objective:ratio", "The fraction of good events the SLO aims for"));
pub static ERROR_BUDGET: LazyLock<GaugeVec> = LazyLock::new(|| gauge("slo:error_budget:ratio", "The fraction of bad events the SLO allows"));
pub static CURRENT_BURN_RATE: LazyLock<GaugeVec> = LazyLock::new(|| gauge("slo:current_burn_rate:ratio", "The error ratio over the last 5m over the error budget"));
pub static PERIOD_BURN_RATE: LazyLock<GaugeVec> = LazyLock::new(|| gauge("slo:period_burn_rate:ratio", "The error ratio over the SLO window so far over the error budget"));
pub static PERIOD_BUDGET_REMAINING: LazyLock<GaugeVec> =
    LazyLock::new(|| gauge("slo:period_error_budget_remaining:ratio", "The fraction of the SLO window's error budget not yet spent"));
pub static EVENTS: LazyLock<GaugeVec> =
    LazyLock::new(|| register_gauge_vec!("tracepipe_slo_period_events", "Events of the SLO over its window so far, by whether they were good", &["sloth_id", "sloth_service", "sloth_slo", "good"]).unwrap());
pub static EVALUATIONS: LazyLock<IntCounterVec> =
    LazyLock::new(|| register_int_counter_vec!("tracepipe_slo_evaluations_total", "SLO evaluation rounds, by outcome", &["outcome"]).unwrap());

fn service_gauge(name: &str, help: &str) -> GaugeVec {
    register_gauge_vec!(name, help, &["service"]).unwrap()
}

pub static SERVICE_STATUS: LazyLock<GaugeVec> = LazyLock::new(|| {
    service_gauge("tracepipe_service_health_status", "The worst status of the service's SLOs: 0 healthy, 1 degraded, 2 failing (absent without an SLO)")
});
pub static SERVICE_RATE: LazyLock<GaugeVec> =
    LazyLock::new(|| service_gauge("tracepipe_service_requests_per_second", "Requests the service served (server and consumer spans) over the latest 5 minutes stored"));
pub static SERVICE_ERROR_RATIO: LazyLock<GaugeVec> = LazyLock::new(|| service_gauge("tracepipe_service_error_ratio", "Failed requests over all requests over the latest 5 minutes stored"));
pub static SERVICE_APDEX: LazyLock<GaugeVec> =
    LazyLock::new(|| service_gauge("tracepipe_service_apdex", "Apdex of the service's requests against its threshold over the latest 5 minutes stored"));
pub static SERVICE_LATENCY: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!("tracepipe_service_latency_milliseconds", "Request latency quantiles over the latest 5 minutes stored", &["service", "quantile"]).unwrap()
});
