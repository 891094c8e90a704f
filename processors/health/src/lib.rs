//! Service health as the store holds it. The analyzer counts every trace before sampling and
//! the store holds each instance's partial counts once, so sums over the store are exact; this
//! crate turns them into what operators read: an SLO's burn rates, budget and status
//! ([`slo`], [`slo_status`]), and each service's rate, errors, latency, Apdex and status
//! ([`services`]), each business transaction and funnel ([`transactions`]), and series over time with their cohorts ([`series`]). The SLO evaluator publishes them as metrics and alerts, the query server as
//! its API and UI, from the same code.

pub mod canary;
pub mod changepoints;
pub mod forecast;
pub mod series;
pub mod services;
pub mod slo;
pub mod slo_status;
pub mod transactions;

/// The span of the latest `over` of stored windows before `now_ms`, from windows given as
/// (start ms, length s): (from, to, seconds). `to` is the end of the latest window (or `now_ms`
/// with none); `from` the earliest window start within `over` of it.
pub(crate) fn latest_span(windows: impl Iterator<Item = (u64, u64)> + Clone, now_ms: u64, over: std::time::Duration) -> (u64, u64, f64) {
    let to = windows.clone().map(|(start, seconds)| start + seconds * 1000).max().unwrap_or(now_ms).min(now_ms.max(1));
    let from_limit = to.saturating_sub(over.as_millis() as u64);
    let from = windows.map(|(start, _)| start).filter(|s| *s >= from_limit).min().unwrap_or(from_limit);
    (from, to, to.saturating_sub(from) as f64 / 1000.0)
}

/// How far back a summary looks for the latest stored window: rollups reach the store when a
/// window closes, a minute or two after its end, and a pipeline that has been down a while still
/// shows where it left off.
pub(crate) const LOOK_BACK: std::time::Duration = std::time::Duration::from_secs(3600);
