//! Forecasts of a series with prediction intervals, by augurs' models: MSTL (the series
//! decomposed into its daily and weekly seasonalities, its trend modelled by automatic ETS) once
//! the history holds three periods of a seasonality, automatic non-seasonal ETS before that. Each
//! forecast is backtested: the model is fitted again without the last points and judged on them
//! (sMAPE, MASE and how many fell inside the intervals).

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Points a forecast needs at least.
pub const MIN_POINTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    /// Points held back and forecast.
    pub held_back: usize,
    /// Symmetric mean absolute percentage error, 0 to 2 (0.1 is 10%).
    pub smape: f64,
    /// Mean absolute error over that of the in-sample (seasonal) naive forecast: below 1 beats it.
    pub mase: Option<f64>,
    /// The share of held-back points inside the prediction intervals.
    pub coverage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesForecast {
    /// `MSTL(periods) + AutoETS` or `AutoETS`.
    pub model: String,
    /// Seasonal periods used, in points.
    pub periods: Vec<usize>,
    pub level: f64,
    pub point: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub backtest: Option<Backtest>,
}

/// The seasonal periods, in points of `bucket_ms`, that `points` points of history cover three times (with two, a weekly component soaks up the noise and the intervals come out too narrow):
/// daily, then weekly.
pub fn seasonal_periods(bucket_ms: i64, points: usize) -> Vec<usize> {
    [DAY_MS, WEEK_MS]
        .iter()
        .filter(|&&period| period % bucket_ms == 0)
        .map(|&period| (period / bucket_ms) as usize)
        .filter(|&period| period >= 2 && points >= 3 * period)
        .collect()
}

fn fit_and_predict(values: &[f64], periods: &[usize], horizon: usize, level: f64) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>), String> {
    let forecast = if periods.is_empty() {
        let fitted = AutoETS::non_seasonal().fit(values).map_err(|e| e.to_string())?;
        fitted.predict(horizon, level).map_err(|e| e.to_string())?
    } else {
        let model = MSTLModel::new(periods.to_vec(), AutoETS::non_seasonal().into_trend_model());
        let fitted = model.fit(values).map_err(|e| e.to_string())?;
        fitted.predict(horizon, level).map_err(|e| e.to_string())?
    };
    let intervals = forecast.intervals.ok_or("the model gave no prediction intervals")?;
    Ok((forecast.point, intervals.lower, intervals.upper))
}

/// Forecasts `horizon` points after `values` (evenly spaced by `bucket_ms`) with intervals at
/// `level` (0.95), and backtests the model on the last min(`horizon`, a fifth of the history).
pub fn forecast(values: &[f64], bucket_ms: i64, horizon: usize, level: f64) -> Result<SeriesForecast, String> {
    if values.len() < MIN_POINTS {
        return Err(format!("{} points of history; a forecast needs {MIN_POINTS}", values.len()));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err("the series has a value that is not a finite number".into());
    }
    let periods = seasonal_periods(bucket_ms, values.len());
    let (point, lower, upper) = fit_and_predict(values, &periods, horizon, level)?;
    let held_back = horizon.min(values.len() / 5);
    let backtest = (held_back >= 2)
        .then(|| {
            let (train, test) = values.split_at(values.len() - held_back);
            let train_periods = seasonal_periods(bucket_ms, train.len());
            let (p, lo, hi) = fit_and_predict(train, &train_periods, held_back, level).ok()?;
            Some(score(train, test, &p, &lo, &hi, train_periods.first().copied().unwrap_or(1)))
        })
        .flatten();
    let model = if periods.is_empty() { "AutoETS".to_string() } else { format!("MSTL({}) + AutoETS", periods.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")) };
    Ok(SeriesForecast { model, periods, level, point, lower, upper, backtest })
}

fn score(train: &[f64], test: &[f64], point: &[f64], lower: &[f64], upper: &[f64], season: usize) -> Backtest {
    let n = test.len() as f64;
    // A point where both are (near) zero is no error: an error ratio that stays 0 forecast as 1e-100.
    let smape = test.iter().zip(point).map(|(y, f)| if y.abs() + f.abs() < 1e-9 { 0.0 } else { 2.0 * (y - f).abs() / (y.abs() + f.abs()) }).sum::<f64>() / n;
    let mae = test.iter().zip(point).map(|(y, f)| (y - f).abs()).sum::<f64>() / n;
    let naive: Vec<f64> = train.windows(season + 1).map(|w| (w[season] - w[0]).abs()).collect();
    let naive_mae = naive.iter().sum::<f64>() / naive.len().max(1) as f64;
    let mase = (naive_mae > 0.0).then(|| mae / naive_mae);
    let inside = test.iter().zip(lower.iter().zip(upper)).filter(|(y, (lo, hi))| *lo <= *y && *y <= *hi).count();
    Backtest { held_back: test.len(), smape, mase, coverage: inside as f64 / n }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency series of two weeks, hourly: a slow upward trend, a daily cycle and noise.
    fn hourly_series(hours: usize) -> Vec<f64> {
        let mut state = 42u64;
        (0..hours)
            .map(|h| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 4.0;
                100.0 + 0.05 * h as f64 + 20.0 * (std::f64::consts::TAU * (h % 24) as f64 / 24.0).sin() + noise
            })
            .collect()
    }

    #[test]
    fn a_daily_cycle_with_a_trend_is_forecast_within_its_intervals() {
        let all = hourly_series(14 * 24 + 24);
        let (history, future) = all.split_at(14 * 24);
        let f = forecast(history, 3_600_000, 24, 0.95).unwrap();
        assert_eq!(f.periods, vec![24]);
        let inside = future.iter().zip(f.lower.iter().zip(&f.upper)).filter(|(y, (lo, hi))| *lo <= *y && *y <= *hi).count();
        let smape = future.iter().zip(&f.point).map(|(y, p)| 2.0 * (y - p).abs() / (y.abs() + p.abs())).sum::<f64>() / 24.0;
        let backtest = f.backtest.clone().unwrap();
        println!(
            "{}: the next day's actual values inside the 95% intervals {inside} of 24, sMAPE {:.2}%; backtest on {} held-back hours: sMAPE {:.2}%, MASE {:.2}, coverage {:.0}%",
            f.model,
            smape * 100.0,
            backtest.held_back,
            backtest.smape * 100.0,
            backtest.mase.unwrap(),
            backtest.coverage * 100.0
        );
        assert!(inside >= 20, "{inside} of 24 inside: {f:?}");
        assert!(smape < 0.05 && backtest.smape < 0.05, "{smape} {backtest:?}");
        assert!(backtest.mase.unwrap() < 1.0, "beats the seasonal naive forecast: {backtest:?}");
    }

    #[test]
    fn short_histories_use_a_non_seasonal_model_and_too_short_ones_are_refused() {
        let f = forecast(&hourly_series(30), 3_600_000, 5, 0.95).unwrap();
        assert_eq!((f.model.as_str(), f.point.len()), ("AutoETS", 5));
        assert!(f.lower.iter().zip(&f.point).zip(&f.upper).all(|((lo, p), hi)| lo <= p && p <= hi));
        assert!(forecast(&[1.0; 5], 60_000, 5, 0.95).unwrap_err().contains("needs 10"));
        assert!(forecast(&[f64::NAN; 20], 60_000, 5, 0.95).is_err());
        let zeros = forecast(&[0.0; 40], 60_000, 5, 0.95).unwrap();
        assert!(zeros.backtest.unwrap().smape < 1e-6, "an error ratio that stays zero is forecast without error");
    }
}

/// A forecast of one operation's metric crossing a threshold ([`breach`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRule {
    pub service: String,
    pub operation: String,
    /// `p50`, `p90`, `p99` (ms) or `error_ratio`.
    pub metric: String,
    pub above: f64,
    pub horizon: std::time::Duration,
    /// The history the model is fitted to, in 1-minute buckets.
    pub history: std::time::Duration,
}

/// When the forecast first crosses a rule's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub crossing_ms: i64,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub forecast: SeriesForecast,
}

/// The rule's series forecast `horizon` ahead: the first point above the threshold, if any.
/// `None` too while the history is too short to forecast.
pub fn breach(store: &mut tracepipe_store::Store, rule: &ForecastRule, now_ms: u64) -> Result<Option<Breach>, tracepipe_store::StoreError> {
    const BUCKET: i64 = 60_000;
    let subject = crate::series::Subject::Operation { service: rule.service.clone(), operation: rule.operation.clone(), span_kind: None };
    // Whole buckets only: the latest minutes' windows are not all stored yet, and a bucket of a
    // few requests would pull the forecast.
    const SETTLE_MS: i64 = 120_000;
    let settled = (now_ms as i64 - SETTLE_MS).div_euclid(BUCKET) * BUCKET;
    let start = (now_ms.saturating_sub(rule.history.as_millis() as u64) as i64).div_euclid(BUCKET) * BUCKET;
    let buckets = crate::series::merged(store, &subject, start, settled, Some(BUCKET))?;
    let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().next_back()) else { return Ok(None) };
    let value = |m: &crate::series::Merged| match rule.metric.as_str() {
        "p50" => m.latency_us.quantile_ms(0.5),
        "p90" => m.latency_us.quantile_ms(0.9),
        "error_ratio" => Some(m.error_ratio()),
        _ => m.latency_us.quantile_ms(0.99),
    };
    let mut values = Vec::new();
    let mut previous = 0.0;
    let mut t = first;
    while t <= last {
        previous = buckets.get(&t).and_then(value).unwrap_or(previous);
        values.push(previous);
        t += BUCKET;
    }
    let horizon = ((rule.horizon.as_millis() as i64) / BUCKET).max(1) as usize;
    let Ok(forecast) = self::forecast(&values, BUCKET, horizon, 0.95) else { return Ok(None) };
    let crossing = forecast.point.iter().position(|p| *p > rule.above);
    Ok(crossing.map(|i| Breach { crossing_ms: last + (i as i64 + 1) * BUCKET, point: forecast.point[i], lower: forecast.lower[i], upper: forecast.upper[i], forecast: forecast.clone() }))
}
