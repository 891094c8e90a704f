//! Each service's health over the most recent minutes the store holds: the requests it served
//! (its server and consumer spans), their rate, error ratio, p50/p90/p99 and Apdex, and a status
//! from its SLOs' burn rates.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_analytics::slo::SloSpec;
use tracepipe_schemas::analytics::{ApdexCounts, Rollup};
use tracepipe_store::{reads, Store, StoreError};

use crate::slo::HealthStatus;
use crate::slo_status::SloStatus;


#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overview {
    /// The span of windows the figures cover: the latest `over` the store holds.
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    pub services: Vec<ServiceHealth>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceHealth {
    pub service: String,
    /// Requests served (server and consumer spans) over the overview's span.
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Apdex over the requests, against the threshold the analyzer was configured with.
    pub apdex: Option<f64>,
    pub apdex_threshold_ms: Option<u64>,
    /// The worst status of the service's SLOs; `None` without an SLO.
    pub status: Option<HealthStatus>,
    pub slos: Vec<ServiceSlo>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceSlo {
    pub name: String,
    pub objective: f64,
    pub status: HealthStatus,
    pub budget_remaining: f64,
    pub current_burn_rate: f64,
    /// Good events over all events in the SLO window so far; `None` before any event.
    pub attainment: Option<f64>,
}

#[derive(Default)]
struct Served {
    requests: u64,
    errors: u64,
    histogram: MergedHistogram,
    apdex: Option<ApdexCounts>,
    apdex_requests: u64,
    /// The latest window's threshold, when the configuration changed within the span.
    apdex_threshold_at: u64,
}

/// Every service's health over the latest `over` of windows stored before `now_ms`, with the
/// status of each of `slos`.
pub fn overview(store: &mut Store, slos: &[(&SloSpec, &SloStatus)], now_ms: u64, over: Duration) -> Result<Overview, StoreError> {
    let since = now_ms.saturating_sub((over + crate::LOOK_BACK).as_millis() as u64) as i64;
    let rollups: Vec<_> = reads::rollups(store, "operation", since, now_ms as i64, None)?
        .iter()
        .filter_map(|body| match serde_json::from_str(body) {
            Ok(Rollup::Operation(r)) => Some(r),
            _ => None,
        })
        .collect();
    let (from, to, seconds) = crate::latest_span(rollups.iter().map(|r| (r.window_start_unix_ms, r.window_seconds)), now_ms, over);

    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    for rollup in rollups.iter().filter(|r| r.window_start_unix_ms >= from) {
        let entry = served.entry(rollup.service.clone()).or_default();
        if !matches!(rollup.span_kind.as_str(), "SPAN_KIND_SERVER" | "SPAN_KIND_CONSUMER") {
            continue;
        }
        entry.requests += rollup.count;
        entry.errors += rollup.errors;
        entry.histogram.add(&rollup.histogram_us);
        if let Some(counts) = rollup.apdex {
            let sum = entry.apdex.get_or_insert_with(ApdexCounts::default);
            sum.satisfied += counts.satisfied;
            sum.tolerating += counts.tolerating;
            entry.apdex_requests += rollup.count;
            if rollup.window_start_unix_ms >= entry.apdex_threshold_at {
                entry.apdex_threshold_at = rollup.window_start_unix_ms;
                sum.threshold_ms = counts.threshold_ms;
            }
        }
    }
    // A service with SLOs is listed even while it serves nothing.
    for (slo, _) in slos {
        served.entry(slo.service.clone()).or_default();
    }
    // Services seen only as callers (their spans are all client or internal) serve no requests.
    served.retain(|service, s| s.requests > 0 || slos.iter().any(|(slo, _)| slo.service == *service));

    let services = served
        .into_iter()
        .map(|(service, s)| {
            let service_slos: Vec<ServiceSlo> = slos
                .iter()
                .filter(|(slo, _)| slo.service == service)
                .map(|(slo, status)| ServiceSlo {
                    name: slo.name.clone(),
                    objective: slo.objective,
                    status: HealthStatus::of(status),
                    budget_remaining: status.budget_remaining,
                    current_burn_rate: status.current_burn_rate,
                    attainment: (status.period.total > 0).then(|| status.period.good as f64 / status.period.total as f64),
                })
                .collect();
            ServiceHealth {
                requests_per_second: if seconds > 0.0 { s.requests as f64 / seconds } else { 0.0 },
                error_ratio: if s.requests > 0 { s.errors as f64 / s.requests as f64 } else { 0.0 },
                p50_ms: s.histogram.quantile_ms(0.5),
                p90_ms: s.histogram.quantile_ms(0.9),
                p99_ms: s.histogram.quantile_ms(0.99),
                apdex: s.apdex.and_then(|a| a.score(s.apdex_requests)),
                apdex_threshold_ms: s.apdex.map(|a| a.threshold_ms),
                status: service_slos.iter().map(|slo| slo.status).max(),
                slos: service_slos,
                service,
                requests: s.requests,
                errors: s.errors,
            }
        })
        .collect();
    Ok(Overview { from_unix_ms: from, to_unix_ms: to, services })
}
