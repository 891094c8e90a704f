//! `/api/v1/slos`, `/api/v1/services` and `/api/v1/transactions`: SLO status, budgets, burn rates
//! and burn-down, each service's health, and business transactions and funnels, computed from the
//! store by the same code the SLO evaluator runs.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{json, Value};
use tracepipe_analytics::slo::{AlertSeverity, SloSpec, SloWindow};
use tracepipe_health::slo::{burn_down, evaluate_from_store, window_label, Evaluated, HealthStatus};
use tracepipe_health::{services, slo_status};

use crate::api::{envelope, read, ApiError, ApiResult, ApiState};
use crate::params::{BadParameter, Params};

/// Points of a burn-down unless `points` asks for another number.
const BURN_DOWN_POINTS: i64 = 96;
const MAX_BURN_DOWN_POINTS: i64 = 2_000;
/// The span of the latest stored windows a service's figures cover unless `window` says.
const SERVICE_WINDOW_US: i64 = 5 * 60 * 1_000_000;
/// The span of the latest stored windows transactions and funnels cover unless `window` says.
const TRANSACTION_WINDOW_US: i64 = 60 * 60 * 1_000_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The `window` parameter, longer than zero, `default_us` when absent.
fn window(params: &Params, default_us: i64) -> Result<Duration, BadParameter> {
    let window_us = params.duration_us("window")?.unwrap_or(default_us);
    if window_us <= 0 {
        return Err(BadParameter(format!("parameter 'window' must be longer than zero, got {window_us} µs")));
    }
    Ok(Duration::from_micros(window_us as u64))
}

fn points(params: &Params) -> Result<u64, BadParameter> {
    match params.integer("points")? {
        None => Ok(BURN_DOWN_POINTS as u64),
        Some(n) if (1..=MAX_BURN_DOWN_POINTS).contains(&n) => Ok(n as u64),
        Some(n) => Err(BadParameter(format!("parameter 'points' must be between 1 and {MAX_BURN_DOWN_POINTS}, got {n}"))),
    }
}

/// Every SLO of topology.yaml with its status, budget, burn rates and burn-down.
pub async fn slos(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let points = points(&Params::new(pairs))?;
    let slos = state.slos.clone();
    let now = now_ms();
    let data = read(&state, move |store| {
        slos.iter()
            .map(|slo| {
                let evaluated = evaluate_from_store(store, slo, now)?;
                let history = burn_down(store, slo, now, points)?;
                Ok(slo_json(slo, &evaluated, &history, now))
            })
            .collect::<Result<Vec<Value>, _>>()
    })
    .await?;
    Ok(envelope(Value::Array(data)))
}

/// One SLO by name.
pub async fn slo(State(state): State<ApiState>, Path(name): Path<String>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let points = points(&Params::new(pairs))?;
    let Some(slo) = state.slos.iter().find(|s| s.name == name).cloned() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no SLO named '{name}' in topology.yaml")));
    };
    let now = now_ms();
    let data = read(&state, move |store| {
        let evaluated = evaluate_from_store(store, &slo, now)?;
        let history = burn_down(store, &slo, now, points)?;
        Ok(slo_json(&slo, &evaluated, &history, now))
    })
    .await?;
    Ok(envelope(data))
}

fn slo_json(slo: &SloSpec, evaluated: &Evaluated, history: &[tracepipe_health::slo::BurnDownPoint], now_ms: u64) -> Value {
    let status = &evaluated.status;
    let window = match slo.window {
        SloWindow::Rolling(length) => json!({"rolling": window_label(length), "seconds": length.as_secs()}),
        SloWindow::CalendarMonth => json!({"calendar": "month", "seconds": status.period_length.as_secs()}),
    };
    let (period_start, _) = slo_status::period(slo.window, now_ms);
    let alerts: Vec<Value> = status
        .alerts
        .iter()
        .map(|(severity, windows)| {
            json!({
                "severity": severity.as_str(),
                "firing": status.firing(*severity),
                "windows": windows.iter().map(|w| json!({
                    "long": window_label(Duration::from_secs(w.long_seconds)),
                    "short": window_label(Duration::from_secs(w.short_seconds)),
                    "burn_rate_threshold": w.burn_rate_threshold,
                    "long_burn_rate": w.long_burn_rate,
                    "short_burn_rate": w.short_burn_rate,
                    "exceeded": w.exceeded,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let last = status.error_ratios.len().saturating_sub(1);
    json!({
        "name": slo.name,
        "service": slo.service,
        "description": slo.description,
        "objective": slo.objective,
        "sli": {
            "availability": slo.sli.availability,
            "latency_ms": slo.sli.latency.map(|l| l.as_secs_f64() * 1000.0),
            "bad_when": slo.sli.bad_when.len(),
        },
        "window": window,
        "period_start_unix_ms": period_start,
        "status": HealthStatus::of(status).as_str(),
        "events": {"total": status.period.total, "good": status.period.good, "bad": status.period.bad()},
        "attainment": (status.period.total > 0).then(|| status.period.good as f64 / status.period.total as f64),
        "error_budget": slo.error_budget(),
        "budget_remaining": status.budget_remaining,
        "budget_exhausted_unix_ms": status.budget_exhausted_unix_ms,
        "current_burn_rate": status.current_burn_rate,
        "period_burn_rate": status.period_burn_rate,
        "error_ratios": status.error_ratios.iter().enumerate().map(|(i, (w, ratio))| json!({
            "window": if i == last { "slo".to_string() } else { window_label(*w) },
            "seconds": w.as_secs(),
            "error_ratio": ratio,
            "burn_rate": ratio / slo.error_budget(),
        })).collect::<Vec<_>>(),
        "alerts": alerts,
        "page_firing": status.firing(AlertSeverity::Page),
        "ticket_firing": status.firing(AlertSeverity::Ticket),
        "exemplar_trace_ids": evaluated.exemplars,
        "burn_down": history,
    })
}

/// Every service that serves requests or has an SLO: rate, error ratio, p50/p90/p99, Apdex and
/// status over the latest `window` (5 minutes) of stored windows.
pub async fn services(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let over = window(&Params::new(pairs), SERVICE_WINDOW_US)?;
    let slos = state.slos.clone();
    let now = now_ms();
    let overview = read(&state, move |store| {
        let statuses = slos.iter().map(|slo| evaluate_from_store(store, slo, now).map(|e| e.status)).collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<_> = slos.iter().zip(&statuses).collect();
        services::overview(store, &pairs, now, over)
    })
    .await?;
    let services = serde_json::to_value(&overview.services).unwrap_or_default();
    let mut body = envelope(services);
    body.0["from_unix_ms"] = json!(overview.from_unix_ms);
    body.0["to_unix_ms"] = json!(overview.to_unix_ms);
    Ok(body)
}

/// Every business transaction and funnel of topology.yaml over the latest `window` (1 hour) of
/// stored windows: volume, failures, latency, coverage, value metrics, counts by value, splits,
/// steps; each funnel's journeys, conversion per step and time between steps.
pub async fn transactions(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let over = window(&Params::new(pairs), TRANSACTION_WINDOW_US)?;
    let (transactions, funnels) = (state.transactions.clone(), state.funnels.clone());
    let now = now_ms();
    let overview = read(&state, move |store| tracepipe_health::transactions::overview(store, &transactions, &funnels, now, over)).await?;
    let mut body = envelope(serde_json::to_value(&overview.transactions).unwrap_or_default());
    body.0["funnels"] = serde_json::to_value(&overview.funnels).unwrap_or_default();
    body.0["from_unix_ms"] = json!(overview.from_unix_ms);
    body.0["to_unix_ms"] = json!(overview.to_unix_ms);
    Ok(body)
}
