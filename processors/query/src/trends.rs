//! `/api/v1/series`, `/api/v1/cohorts` and `/api/v1/compare`: an operation's (or a cohort's, or a
//! business transaction's) rate, errors and latency percentiles over time, merged from the stored
//! HDR histograms of every window and instance at the resolution asked for; the cohorts an
//! operation's requests fall into; and two cohorts or two time ranges compared with
//! significance ([`tracepipe_analytics::compare`]).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use serde_json::{json, Value};
use tracepipe_analytics::compare::{compare as compare_samples, CompareSettings, Sample};
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_health::series::{self, Merged, Subject};

use crate::api::{envelope, read, ApiError, ApiResult, ApiState};
use crate::params::{BadParameter, Params};

const HOUR_US: i64 = 3_600_000_000;
/// Points a series may have: a day at one minute is 1440.
const MAX_POINTS: i64 = 5_000;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn subject(params: &Params, cohort_value: Option<&str>) -> Result<Subject, BadParameter> {
    if let Some(name) = params.text("transaction") {
        return Ok(Subject::Transaction { transaction: name.to_string() });
    }
    if let Some(name) = params.text("slo") {
        return Ok(Subject::Slo { slo: name.to_string() });
    }
    let service = params.required("service")?.to_string();
    let operation = params.required("operation")?.to_string();
    let span_kind = params.text("span_kind").map(str::to_string);
    match (params.text("attribute"), cohort_value.or_else(|| params.text("value"))) {
        (Some(attribute), Some(value)) => Ok(Subject::Cohort { service, operation, span_kind, attribute: attribute.to_string(), value: value.to_string() }),
        (Some(_), None) => Err(BadParameter("parameter 'value' is required with 'attribute'".into())),
        _ => Ok(Subject::Operation { service, operation, span_kind }),
    }
}

async fn merged(state: &ApiState, subject: &Subject, start_ms: i64, end_ms: i64, bucket_ms: Option<i64>) -> Result<BTreeMap<i64, Merged>, ApiError> {
    let subject = subject.clone();
    read(state, move |store| series::merged(store, &subject, start_ms, end_ms, bucket_ms)).await
}

fn resolution_ms(params: &Params) -> Result<i64, BadParameter> {
    match params.text("resolution").unwrap_or("1m") {
        "1m" => Ok(60_000),
        "5m" => Ok(300_000),
        "1h" => Ok(3_600_000),
        "1d" => Ok(86_400_000),
        other => Err(BadParameter(format!("parameter 'resolution' must be 1m, 5m, 1h or 1d, got `{other}`"))),
    }
}

/// `/api/v1/series?service=&operation=[&span_kind=][&attribute=&value=]|transaction=`,
/// `resolution` (1m, 5m, 1h, 1d), `start`/`end` (µs) or `lookback`: one point per bucket with
/// requests, errors, rate per second, error ratio and p50/p90/p99 in ms.
pub async fn series(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let subject = subject(&params, None)?;
    let resolution = resolution_ms(&params)?;
    let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
    let (start_ms, end_ms) = ((start_us / 1000).div_euclid(resolution) * resolution, end_us / 1000);
    if (end_ms - start_ms) / resolution > MAX_POINTS {
        return Err(BadParameter(format!("{} points at this resolution; at most {MAX_POINTS} (choose a coarser resolution or a shorter range)", (end_ms - start_ms) / resolution)).into());
    }
    let buckets = merged(&state, &subject, start_ms, end_ms, Some(resolution)).await?;
    let seconds = resolution as f64 / 1000.0;
    let points: Vec<Value> = buckets
        .iter()
        .map(|(at, m)| {
            json!({
                "t_ms": at,
                "count": m.count,
                "errors": m.errors,
                "rate_per_s": m.count as f64 / seconds,
                "error_ratio": if m.count == 0 { 0.0 } else { m.errors as f64 / m.count as f64 },
                "p50_ms": m.latency_us.quantile_ms(0.5),
                "p90_ms": m.latency_us.quantile_ms(0.9),
                "p99_ms": m.latency_us.quantile_ms(0.99),
            })
        })
        .collect();
    Ok(envelope(json!({"subject": subject, "resolution_ms": resolution, "start_ms": start_ms, "end_ms": end_ms, "points": points})))
}

/// `/api/v1/cohorts?service=&operation=[&span_kind=]` and a time range: each cohort attribute
/// and value its requests carried, with their counts, errors and p50/p99.
pub async fn cohorts(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let service = params.required("service")?.to_string();
    let operation = params.text("operation").map(str::to_string);
    let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
    let cohorts = read(&state, move |store| series::cohorts(store, Some(&service), operation.as_deref(), start_us / 1000, end_us / 1000)).await?;
    let data: Vec<Value> = cohorts
        .into_iter()
        .map(|c| {
            json!({
                "service": c.service, "operation": c.operation, "span_kind": c.span_kind, "attribute": c.attribute, "value": c.value,
                "count": c.merged.count, "errors": c.merged.errors, "p50_ms": c.merged.latency_us.quantile_ms(0.5), "p99_ms": c.merged.latency_us.quantile_ms(0.99),
                "first_window_ms": c.merged.first_window_ms,
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

fn number(params: &Params, name: &str, default: f64, range: std::ops::RangeInclusive<f64>) -> Result<f64, BadParameter> {
    let Some(text) = params.text(name) else { return Ok(default) };
    match text.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(BadParameter(format!("parameter '{name}' must be a number from {} to {}, got `{text}`", range.start(), range.end()))),
    }
}

/// The distribution of a side for the chart: (bucket upper value in ms, share of requests).
fn distribution(h: &MergedHistogram) -> Vec<(f64, f64)> {
    let n = h.count().max(1) as f64;
    h.buckets().map(|(us, count)| (us as f64 / 1000.0, count as f64 / n)).collect()
}

/// `/api/v1/compare`: a baseline and a candidate of one operation or transaction, either two
/// cohorts (`attribute`, `baseline`, `candidate` values, over `start`/`end`/`lookback`) or two time
/// ranges (`baseline_start`, `baseline_end`, `candidate_start`, `candidate_end`, µs). `alpha`,
/// `min_effect` and `min_error_delta` tune the verdict.
pub async fn compare(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let settings = CompareSettings {
        alpha: number(&params, "alpha", CompareSettings::default().alpha, 1e-6..=0.5)?,
        min_effect: number(&params, "min_effect", CompareSettings::default().min_effect, 0.0..=10.0)?,
        min_error_delta: number(&params, "min_error_delta", CompareSettings::default().min_error_delta, 0.0..=1.0)?,
        ..Default::default()
    };
    let ranges = ["baseline_start", "baseline_end", "candidate_start", "candidate_end"].map(|name| params.integer(name));
    if params.text("attribute").is_some() && params.text("transaction").is_some() {
        return Err(BadParameter("a transaction has no cohorts: compare two time ranges of it (baseline_start, baseline_end, candidate_start, candidate_end)".into()).into());
    }
    let (baseline, candidate, sides) = if params.text("attribute").is_some() {
        let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
        let baseline = subject(&params, Some(params.required("baseline")?))?;
        let candidate = subject(&params, Some(params.required("candidate")?))?;
        let a = merged(&state, &baseline, start_us / 1000, end_us / 1000, None).await?;
        let b = merged(&state, &candidate, start_us / 1000, end_us / 1000, None).await?;
        let sides = json!({"baseline": baseline, "candidate": candidate, "start_ms": start_us / 1000, "end_ms": end_us / 1000});
        (a, b, sides)
    } else if ranges.iter().any(|r| matches!(r, Ok(Some(_)))) {
        let [bs, be, cs, ce] = ranges;
        let required = |value: Result<Option<i64>, BadParameter>, name: &str| value?.ok_or_else(|| BadParameter(format!("parameter '{name}' is required to compare two time ranges")));
        let (bs, be, cs, ce) = (required(bs, "baseline_start")?, required(be, "baseline_end")?, required(cs, "candidate_start")?, required(ce, "candidate_end")?);
        if bs >= be || cs >= ce {
            return Err(BadParameter("each range must start before it ends".into()).into());
        }
        let subject = subject(&params, None)?;
        let a = merged(&state, &subject, bs / 1000, be / 1000, None).await?;
        let b = merged(&state, &subject, cs / 1000, ce / 1000, None).await?;
        let sides = json!({"subject": subject, "baseline": {"start_ms": bs / 1000, "end_ms": be / 1000}, "candidate": {"start_ms": cs / 1000, "end_ms": ce / 1000}});
        (a, b, sides)
    } else {
        return Err(BadParameter("name two cohorts (attribute, baseline, candidate) or two time ranges (baseline_start, baseline_end, candidate_start, candidate_end)".into()).into());
    };
    let empty = Merged::default();
    let (a, b) = (baseline.values().next().unwrap_or(&empty), candidate.values().next().unwrap_or(&empty));
    let comparison = compare_samples(Sample { latency_us: &a.latency_us, errors: a.errors }, Sample { latency_us: &b.latency_us, errors: b.errors }, &settings);
    let mut data = serde_json::to_value(&comparison).expect("comparisons serialize");
    data["verdict_label"] = json!(comparison.verdict.label());
    data["sides"] = sides;
    data["distributions"] = json!({"baseline": distribution(&a.latency_us), "candidate": distribution(&b.latency_us)});
    Ok(envelope(data))
}

/// `/api/v1/canaries`: every new value of `attribute` (default `service.version`) serving beside
/// the incumbent of an operation, judged on the canary schedule as the trends evaluator judges it
/// (its default schedule: `every`=1m, 30 evaluations, 2m to settle), decided or not yet.
pub async fn canaries(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let mut settings = tracepipe_health::canary::CanarySettings::default();
    if let Some(attribute) = params.text("attribute") {
        settings.attribute = attribute.to_string();
    }
    let now_ms = (now_us() / 1000) as u64;
    let verdicts = read(&state, move |store| tracepipe_health::canary::canaries(store, &settings, now_ms)).await?;
    let data: Vec<Value> = verdicts
        .iter()
        .map(|v| {
            let mut value = serde_json::to_value(v).expect("verdicts serialize");
            value["verdict_label"] = json!(v.verdict.label());
            value
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

/// A bucket's value of `metric`: a percentile in ms, the error ratio or the rate per second.
fn metric_value(metric: &str, m: &Merged, bucket_seconds: f64) -> Option<f64> {
    match metric {
        "p50" => m.latency_us.quantile_ms(0.5),
        "p90" => m.latency_us.quantile_ms(0.9),
        "p99" => m.latency_us.quantile_ms(0.99),
        "error_ratio" => Some(m.error_ratio()),
        "rate" => Some(m.count as f64 / bucket_seconds),
        _ => None,
    }
}

const METRICS: &[&str] = &["p50", "p90", "p99", "error_ratio", "rate"];

fn metric(params: &Params) -> Result<&str, BadParameter> {
    let metric = params.text("metric").unwrap_or("p99");
    if METRICS.contains(&metric) {
        Ok(metric)
    } else {
        Err(BadParameter(format!("parameter 'metric' must be one of {}, got `{metric}`", METRICS.join(", "))))
    }
}

fn utc_clock(unix_ms: i64) -> String {
    let minutes = unix_ms.div_euclid(60_000);
    format!("{:02}:{:02} UTC", minutes.div_euclid(60).rem_euclid(24), minutes.rem_euclid(60))
}

/// `/api/v1/changepoints?service=&operation=[&span_kind=]&metric=p99&resolution=1m` and a time
/// range: where the metric's level changed, by how much, and what appeared then.
pub async fn changepoints(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let subject = subject(&params, None)?;
    let metric = metric(&params)?.to_string();
    let resolution = resolution_ms(&params)?;
    let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
    let (start_ms, end_ms) = ((start_us / 1000).div_euclid(resolution) * resolution, end_us / 1000);
    if (end_ms - start_ms) / resolution > MAX_POINTS {
        return Err(BadParameter(format!("at most {MAX_POINTS} points (choose a coarser resolution or a shorter range)")).into());
    }
    let buckets = merged(&state, &subject, start_ms, end_ms, Some(resolution)).await?;
    let points: Vec<(i64, f64)> = buckets.iter().filter_map(|(t, m)| metric_value(&metric, m, resolution as f64 / 1000.0).map(|v| (*t, v))).collect();
    let found = tracepipe_health::changepoints::change_points(&points, &Default::default());
    let counts = match &subject {
        Subject::Operation { service, operation, .. } => {
            let (service, operation) = (service.clone(), operation.clone());
            read(&state, move |store| series::cohort_counts(store, &service, &operation, start_ms, end_ms, resolution)).await?
        }
        _ => Default::default(),
    };
    let name = match &subject {
        Subject::Operation { service, operation, .. } | Subject::Cohort { service, operation, .. } => format!("{service} {operation}"),
        Subject::Transaction { transaction } => format!("transaction {transaction}"),
        Subject::Slo { slo } => format!("SLO {slo}"),
    };
    let data: Vec<Value> = found
        .iter()
        .map(|c| {
            let changed = tracepipe_health::changepoints::what_changed(c.t_ms, resolution, start_ms, &counts);
            let direction = if c.change >= 0.0 { "rose" } else { "fell" };
            let when = changed.iter().map(|a| a.describe()).collect::<Vec<_>>().join(" and ");
            let summary = format!(
                "{metric} of {name} {direction} {:.0}% at {}{}",
                c.change.abs() * 100.0,
                utc_clock(c.t_ms),
                if when.is_empty() { String::new() } else { format!(", when {when}") }
            );
            json!({"t_ms": c.t_ms, "before": c.before, "after": c.after, "change": c.change, "p_value": c.p_value, "changed": changed, "summary": summary})
        })
        .collect();
    Ok(envelope(json!({"subject": subject, "metric": metric, "resolution_ms": resolution, "changepoints": data})))
}

/// How long after a bucket's end its windows are all stored, near enough for a forecast.
const SETTLE_MS: i64 = 120_000;

/// Points a forecast may reach ahead.
const MAX_HORIZON_POINTS: i64 = 2_000;

/// `/api/v1/forecast?service=&operation=…&metric=p99&resolution=1m&horizon=1h` and a time range
/// (the history): the forecast with its 95% intervals, the model, and its backtest.
pub async fn forecast(State(state): State<ApiState>, Query(pairs): Query<Vec<(String, String)>>) -> ApiResult {
    let params = Params::new(pairs);
    let subject = subject(&params, None)?;
    let metric = metric(&params)?.to_string();
    let resolution = resolution_ms(&params)?;
    let horizon_ms = params.duration_us("horizon")?.map_or(HOUR_US / 1000, |us| us / 1000);
    let horizon = horizon_ms / resolution;
    if !(1..=MAX_HORIZON_POINTS).contains(&horizon) {
        return Err(BadParameter(format!("parameter 'horizon' must reach 1 to {MAX_HORIZON_POINTS} points ahead at this resolution, got {horizon}")).into());
    }
    let (start_us, end_us) = params.time_range_us(now_us(), HOUR_US)?;
    // Whole buckets only: the current one holds part of its traffic, and its windows are not all
    // stored yet.
    let settled_ms = (end_us / 1000).min(now_us() / 1000 - SETTLE_MS).div_euclid(resolution) * resolution;
    let (start_ms, end_ms) = ((start_us / 1000).div_euclid(resolution) * resolution, settled_ms);
    if (end_ms - start_ms) / resolution > MAX_POINTS {
        return Err(BadParameter(format!("at most {MAX_POINTS} points of history (choose a coarser resolution or a shorter range)")).into());
    }
    let buckets = merged(&state, &subject, start_ms, end_ms, Some(resolution)).await?;
    // From the first bucket with requests to the last: a quiet bucket has no requests (rate 0)
    // and keeps the previous percentile or ratio.
    let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().next_back()) else {
        return Err(ApiError::new(axum::http::StatusCode::NOT_FOUND, "no stored requests in this range to forecast from"));
    };
    let mut history: Vec<(i64, f64)> = Vec::new();
    let mut t = first;
    let mut previous = 0.0;
    while t <= last {
        let value = match buckets.get(&t) {
            Some(m) => metric_value(&metric, m, resolution as f64 / 1000.0).unwrap_or(previous),
            None if metric == "rate" => 0.0,
            None => previous,
        };
        history.push((t, value));
        previous = value;
        t += resolution;
    }
    let values: Vec<f64> = history.iter().map(|p| p.1).collect();
    let f = tracepipe_health::forecast::forecast(&values, resolution, horizon as usize, 0.95).map_err(|why| BadParameter(format!("cannot forecast: {why}")))?;
    let ahead: Vec<Value> = (0..f.point.len()).map(|i| json!([last + (i as i64 + 1) * resolution, f.point[i], f.lower[i], f.upper[i]])).collect();
    Ok(envelope(json!({
        "subject": subject, "metric": metric, "resolution_ms": resolution,
        "model": f.model, "periods": f.periods, "level": f.level, "backtest": f.backtest,
        "history": history.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(), "forecast": ahead,
    })))
}
