//! Service health as the store holds it. The analyzer counts every trace before sampling and
//! the store holds each instance's partial counts once, so sums over the store are exact; this
//! crate turns them into what operators read: an SLO's burn rates, budget and status
//! ([`slo`], [`slo_status`]), and each service's rate, errors, latency, Apdex and status
//! ([`services`]), and each business transaction and funnel ([`transactions`]). The SLO evaluator publishes them as metrics and alerts, the query server as
//! its API and UI, from the same code.

pub mod services;
pub mod slo;
pub mod slo_status;
pub mod transactions;
