//! An SLO's state read from the store: its events summed over each window it is evaluated over
//! (every analyzer instance's partial counts, each stored once), its status, the traces of its
//! bad events, and the burn-down of its error budget over the SLO window.

use std::time::Duration;

use tracepipe_analytics::slo::{AlertSeverity, SloSpec};
use tracepipe_schemas::analytics::Rollup;
use tracepipe_store::{Param, Store, StoreError};

use crate::slo_status::{self, Counts, SloStatus};

/// Traces of bad events an evaluation carries.
const EXEMPLARS: usize = 5;

/// One SLO's evaluation.
pub struct Evaluated {
    pub status: SloStatus,
    /// Traces with bad events in the most recent windows that had any.
    pub exemplars: Vec<String>,
}

/// Sums `slo`'s events over each of its windows and evaluates them.
pub fn evaluate_from_store(store: &mut Store, slo: &SloSpec, now_ms: u64) -> Result<Evaluated, StoreError> {
    let (period_start, period_length) = slo_status::period(slo.window, now_ms);
    let windows = slo_status::windows(slo, period_length);
    let starts: Vec<i64> = windows.iter().enumerate().map(|(i, w)| if i + 1 == windows.len() { period_start as i64 } else { now_ms.saturating_sub(w.as_millis() as u64) as i64 }).collect();
    let earliest = starts.iter().copied().min().unwrap_or(0);
    // One pass over the SLO's rows: each window's sum is the rows from its start on. Parameters
    // are numbered in the order they first appear, as SQLite binds `$N` by appearance.
    let mut columns = Vec::new();
    for index in 0..windows.len() {
        let start = index + 1;
        columns.push(format!("CAST(COALESCE(SUM(CASE WHEN window_start_ms >= ${start} THEN total ELSE 0 END), 0) AS BIGINT)"));
        columns.push(format!("CAST(COALESCE(SUM(CASE WHEN window_start_ms >= ${start} THEN good ELSE 0 END), 0) AS BIGINT)"));
    }
    let (name_at, earliest_at) = (windows.len() + 1, windows.len() + 2);
    let sql = format!("SELECT {} FROM rollups WHERE kind = 'slo' AND operation = ${name_at} AND window_start_ms >= ${earliest_at}", columns.join(", "));
    let mut params: Vec<Param<'_>> = starts.iter().map(|start| Param::Int(*start)).collect();
    params.extend([Param::Text(&slo.name), Param::Int(earliest)]);
    let rows = store.query(&sql, &params)?;
    let counts: Vec<Counts> = match rows.first() {
        Some(row) => (0..windows.len()).map(|i| Counts { total: row[2 * i].int().max(0) as u64, good: row[2 * i + 1].int().max(0) as u64 }).collect(),
        None => vec![Counts::default(); windows.len()],
    };
    let status = slo_status::evaluate(slo, now_ms, &windows, &counts);
    let mut exemplars = Vec::new();
    if status.alerts.iter().any(|(_, windows)| windows.iter().any(|w| w.exceeded)) {
        let recent = now_ms.saturating_sub(slo_status::PROJECTION.as_millis() as u64) as i64;
        let rows = store.query(
            "SELECT body FROM rollups WHERE kind = 'slo' AND operation = $1 AND window_start_ms >= $2 AND good < total ORDER BY window_start_ms DESC LIMIT 20",
            &[Param::Text(&slo.name), Param::Int(recent)],
        )?;
        let mut candidates: Vec<String> = Vec::new();
        for row in rows {
            if let Ok(Rollup::Slo(rollup)) = serde_json::from_str::<Rollup>(row[0].text()) {
                for id in rollup.bad_exemplar_trace_ids {
                    if !candidates.contains(&id) {
                        candidates.push(id);
                    }
                }
            }
        }
        // Those the sampler kept first, so the links open a trace; the latest first otherwise.
        let stored = stored_traces(store, &candidates)?;
        let (mut kept, dropped): (Vec<String>, Vec<String>) = candidates.into_iter().partition(|id| stored.contains(id));
        kept.extend(dropped);
        kept.truncate(EXEMPLARS);
        exemplars = kept;
    }
    Ok(Evaluated { status, exemplars })
}

/// A window as Sloth's series names it: `5m`, `1h`, `3d`.
pub fn window_label(window: Duration) -> String {
    let seconds = window.as_secs();
    if seconds % 86_400 == 0 {
        format!("{}d", seconds / 86_400)
    } else if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else {
        format!("{}m", seconds / 60)
    }
}


/// Which of `ids` the store holds a trace of.
fn stored_traces(store: &mut Store, ids: &[String]) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let params: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
    let rows = store.query(&format!("SELECT trace_id FROM traces WHERE trace_id IN ({})", placeholders.join(", ")), &params)?;
    Ok(rows.into_iter().map(|mut row| row.swap_remove(0).into_text()).collect())
}

/// Where an SLO stands, in the words the service overview uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Within its objective: no burn-rate alert fires and the last 5 minutes burn no faster than
    /// the budget allows.
    Healthy,
    /// A ticket alert fires, or the last 5 minutes burn faster than the budget allows.
    Degraded,
    /// A page alert fires, or the budget of the SLO window is spent.
    Failing,
}

impl HealthStatus {
    pub fn of(status: &SloStatus) -> HealthStatus {
        if status.firing(AlertSeverity::Page) || status.budget_remaining <= 0.0 {
            HealthStatus::Failing
        } else if status.firing(AlertSeverity::Ticket) || status.current_burn_rate > 1.0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Failing => "failing",
        }
    }

    /// 0, 1, 2: the value of the status gauge.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// One point of an error budget's burn-down: the SLO window's events from its start to `unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BurnDownPoint {
    pub unix_ms: u64,
    pub total: u64,
    pub good: u64,
    /// The fraction of the budget left at `unix_ms` (1 before any event).
    pub budget_remaining: f64,
}

/// The budget left over the SLO window, in `points` steps from its start to `now_ms`: the events
/// counted from the window's start up to each step, as the budget stood then.
pub fn burn_down(store: &mut Store, slo: &SloSpec, now_ms: u64, points: u64) -> Result<Vec<BurnDownPoint>, StoreError> {
    let (period_start, _) = slo_status::period(slo.window, now_ms);
    let points = points.max(1);
    let step = (now_ms.saturating_sub(period_start) / points).max(1);
    let rows = store.query(
        "SELECT (window_start_ms - $1) / $2 AS step, CAST(SUM(total) AS BIGINT), CAST(SUM(good) AS BIGINT) FROM rollups \
         WHERE kind = 'slo' AND operation = $3 AND window_start_ms >= $1 AND window_start_ms <= $4 GROUP BY step ORDER BY step",
        &[Param::Int(period_start as i64), Param::Int(step as i64), Param::Text(&slo.name), Param::Int(now_ms as i64)],
    )?;
    let mut per_step = vec![Counts::default(); points as usize];
    for row in rows {
        let at = (row[0].int().max(0) as usize).min(per_step.len() - 1);
        per_step[at].total += row[1].int().max(0) as u64;
        per_step[at].good += row[2].int().max(0) as u64;
    }
    let budget = slo.error_budget();
    let mut so_far = Counts::default();
    Ok(per_step
        .into_iter()
        .enumerate()
        .map(|(index, counts)| {
            so_far.total += counts.total;
            so_far.good += counts.good;
            let budget_remaining = if so_far.total == 0 { 1.0 } else { 1.0 - so_far.bad() as f64 / (so_far.total as f64 * budget) };
            BurnDownPoint { unix_ms: (period_start + (index as u64 + 1) * step).min(now_ms), total: so_far.total, good: so_far.good, budget_remaining }
        })
        .collect())
}
