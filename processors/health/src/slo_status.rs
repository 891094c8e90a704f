//! An SLO's state from its summed event counts: error ratios per window, burn rates, the error
//! budget left over the SLO window, when it runs out, and which burn-rate alerts are exceeded.
//! No I/O here, so it is tested on counts alone.

use std::time::Duration;

use tracepipe_analytics::slo::{AlertSeverity, SloSpec, SloWindow};
use tracepipe_schemas::analytics::BurnWindow;

/// Events over one window, summed over every analyzer instance's partial counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub good: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.total.saturating_sub(self.good)
    }

    /// Bad events over all events; zero without events (no traffic burns no budget).
    pub fn error_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.bad() as f64 / self.total as f64
        }
    }
}

/// The windows Sloth's recording rules name (`slo:sli_error:ratio_rate5m` …), besides the SLO's
/// own window and its alerting windows.
pub const SLOTH_WINDOWS: [Duration; 7] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(86_400),
    Duration::from_secs(3 * 86_400),
];

/// The window the current burn rate is taken over (Sloth's `slo:current_burn_rate:ratio`).
pub const CURRENT: Duration = Duration::from_secs(5 * 60);

/// The window the budget's exhaustion time is projected from: long enough not to swing with
/// every minute, short enough to follow an incident.
pub const PROJECTION: Duration = Duration::from_secs(3600);

/// The SLO window at `now_ms`: its start and its full length (a calendar month is the current
/// month, UTC).
pub fn period(window: SloWindow, now_ms: u64) -> (u64, Duration) {
    match window {
        SloWindow::Rolling(length) => (now_ms.saturating_sub(length.as_millis() as u64), length),
        SloWindow::CalendarMonth => {
            let (start, end) = month_bounds_ms(now_ms);
            (start, Duration::from_millis(end - start))
        }
    }
}

/// The first millisecond of the UTC month holding `now_ms`, and of the next one.
fn month_bounds_ms(now_ms: u64) -> (u64, u64) {
    const DAY_MS: u64 = 86_400_000;
    let days = (now_ms / DAY_MS) as i64;
    let (year, month, _) = civil_from_days(days);
    let start = days_from_civil(year, month, 1);
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let end = days_from_civil(next_year, next_month, 1);
    (start as u64 * DAY_MS, end as u64 * DAY_MS)
}

// Howard Hinnant's civil-calendar conversions (proleptic Gregorian), exact for every date after 1970.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What an evaluation found for one SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct SloStatus {
    /// Error ratio per window evaluated (Sloth's windows, the alerting windows, the SLO's own).
    pub error_ratios: Vec<(Duration, f64)>,
    /// Events over the SLO window so far.
    pub period: Counts,
    pub period_length: Duration,
    /// The fraction of the window's budget not spent: 1 with no bad events, 0 when spent, below
    /// zero when overspent. A window without events has its whole budget.
    pub budget_remaining: f64,
    /// The error ratio over [`CURRENT`] over the budget.
    pub current_burn_rate: f64,
    /// The error ratio over the SLO window so far over the budget.
    pub period_burn_rate: f64,
    pub budget_exhausted_unix_ms: Option<u64>,
    /// Per severity, each of its alerting windows and whether it is exceeded.
    pub alerts: Vec<(AlertSeverity, Vec<BurnWindow>)>,
}

impl SloStatus {
    /// Whether an alert of `severity` fires: any of its alerting windows is exceeded.
    pub fn firing(&self, severity: AlertSeverity) -> bool {
        self.alerts.iter().any(|(s, windows)| *s == severity && windows.iter().any(|w| w.exceeded))
    }

    pub fn error_ratio(&self, window: Duration) -> f64 {
        self.error_ratios.iter().find(|(w, _)| *w == window).map_or(0.0, |(_, ratio)| *ratio)
    }
}

/// Every window one SLO is evaluated over, deduplicated; the SLO window comes last.
pub fn windows(slo: &SloSpec, period_length: Duration) -> Vec<Duration> {
    let mut windows: Vec<Duration> = SLOTH_WINDOWS.to_vec();
    for alert in &slo.alerting {
        windows.extend([alert.long, alert.short]);
    }
    windows.sort();
    windows.dedup();
    windows.retain(|w| *w != period_length);
    windows.push(period_length);
    windows
}

/// Evaluates `slo` at `now_ms` from the counts of each window `windows` returned (same order),
/// the last being the SLO window so far.
pub fn evaluate(slo: &SloSpec, now_ms: u64, windows: &[Duration], counts: &[Counts]) -> SloStatus {
    let budget = slo.error_budget();
    let ratio = |window: Duration| windows.iter().position(|w| *w == window).map_or(0.0, |i| counts[i].error_ratio());
    let (_, period_length) = period(slo.window, now_ms);
    let period = counts.last().copied().unwrap_or_default();
    let budget_remaining = if period.total == 0 { 1.0 } else { 1.0 - period.bad() as f64 / (period.total as f64 * budget) };
    let projected_burn = ratio(PROJECTION) / budget;
    let budget_exhausted_unix_ms = if budget_remaining <= 0.0 {
        Some(now_ms)
    } else if projected_burn > 0.0 {
        // Beyond a few windows ahead the projection says nothing: the budget does not run out.
        let left_ms = budget_remaining * period_length.as_millis() as f64 / projected_burn;
        (left_ms < 10.0 * period_length.as_millis() as f64).then(|| now_ms.saturating_add(left_ms as u64))
    } else {
        None
    };
    let mut alerts: Vec<(AlertSeverity, Vec<BurnWindow>)> = Vec::new();
    for alert in &slo.alerting {
        let (long, short) = (ratio(alert.long) / budget, ratio(alert.short) / budget);
        let window = BurnWindow {
            long_seconds: alert.long.as_secs(),
            short_seconds: alert.short.as_secs(),
            burn_rate_threshold: alert.burn_rate,
            long_burn_rate: long,
            short_burn_rate: short,
            exceeded: long > alert.burn_rate && short > alert.burn_rate,
        };
        match alerts.iter_mut().find(|(severity, _)| *severity == alert.severity) {
            Some((_, windows)) => windows.push(window),
            None => alerts.push((alert.severity, vec![window])),
        }
    }
    SloStatus {
        error_ratios: windows.iter().zip(counts).map(|(w, c)| (*w, c.error_ratio())).collect(),
        period,
        period_length,
        budget_remaining,
        current_burn_rate: ratio(CURRENT) / budget,
        period_burn_rate: period.error_ratio() / budget,
        budget_exhausted_unix_ms,
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracepipe_analytics::slo::{default_alerting, EventSelector, Sli};

    fn slo(objective: f64) -> SloSpec {
        SloSpec {
            name: "checkout".into(),
            service: "checkout".into(),
            description: String::new(),
            events: EventSelector { root: true, operation: None, span_kind: None, attributes: Vec::new() },
            sli: Sli { availability: true, ..Default::default() },
            objective,
            window: SloWindow::Rolling(Duration::from_secs(30 * 86_400)),
            alerting: default_alerting(),
        }
    }

    /// Counts for each window: `bad_per_minute` bad events in the last `burst` minutes, and
    /// `per_minute` events every minute.
    fn counts(windows: &[Duration], per_minute: u64, bad_per_minute: u64, burst_minutes: u64) -> Vec<Counts> {
        windows
            .iter()
            .map(|w| {
                let minutes = w.as_secs() / 60;
                Counts { total: per_minute * minutes, good: per_minute * minutes - bad_per_minute * minutes.min(burst_minutes) }
            })
            .collect()
    }

    #[test]
    fn a_burst_pages_and_a_quiet_service_does_not() {
        let slo = slo(0.999);
        let windows = windows(&slo, Duration::from_secs(30 * 86_400));
        assert_eq!(windows.last(), Some(&Duration::from_secs(30 * 86_400)));
        // 1000 events a minute, 10% bad over the last 10 minutes: 100× the budget over 5m,
        // 16.7× over 1h, below 6× over 6h and 30m is 33×.
        let status = evaluate(&slo, 10_000_000_000, &windows, &counts(&windows, 1000, 100, 10));
        assert!(status.firing(AlertSeverity::Page), "{status:#?}");
        assert!(!status.firing(AlertSeverity::Ticket));
        let page = &status.alerts[0].1;
        assert!((page[0].long_burn_rate - 1000.0 / 60.0).abs() < 1e-9, "{page:?}");
        assert!((page[0].short_burn_rate - 100.0).abs() < 1e-9);
        assert!(!page[1].exceeded);
        // 1000 bad events out of 43.2M over 30 days: 1000 / 43 200 of the budget spent.
        let expected_remaining = 1.0 - 1000.0 / (43_200_000.0 * 0.001);
        assert!((status.budget_remaining - expected_remaining).abs() < 1e-9, "{}", status.budget_remaining);
        let exhausted = status.budget_exhausted_unix_ms.unwrap();
        let projected_ms = expected_remaining * (30.0 * 86_400_000.0) / (1000.0 / 60.0);
        assert!((exhausted as f64 - 10_000_000_000.0 - projected_ms).abs() < 2.0);
        assert!((status.current_burn_rate - 100.0).abs() < 1e-9);

        let quiet = evaluate(&slo, 10_000_000_000, &windows, &counts(&windows, 1000, 0, 0));
        assert!(!quiet.firing(AlertSeverity::Page) && !quiet.firing(AlertSeverity::Ticket));
        assert_eq!((quiet.budget_remaining, quiet.budget_exhausted_unix_ms), (1.0, None));
        let idle = evaluate(&slo, 10_000_000_000, &windows, &vec![Counts::default(); windows.len()]);
        assert_eq!((idle.budget_remaining, idle.current_burn_rate), (1.0, 0.0));
    }

    #[test]
    fn a_calendar_month_is_the_utc_month_of_now() {
        // 2026-02-14T12:00:00Z: February 2026 has 28 days.
        let now = 1_771_070_400_000;
        let (start, length) = period(SloWindow::CalendarMonth, now);
        assert_eq!(start, 1_769_904_000_000, "2026-02-01T00:00:00Z");
        assert_eq!(length, Duration::from_secs(28 * 86_400));
        // 2024-12-31T23:59:59Z: December, and the next month is in the next year.
        let (start, length) = period(SloWindow::CalendarMonth, 1_735_689_599_000);
        assert_eq!((start, length), (1_733_011_200_000, Duration::from_secs(31 * 86_400)));
    }
}
