//! Series over time from the stored rollups: an operation's requests (of one span kind, or of one
//! cohort) or a business transaction's entries, merged per bucket from the HDR histograms of every
//! window and instance; and the cohorts an operation's requests fell into.

use std::collections::BTreeMap;

use serde::Serialize;
use tracepipe_analytics::latency::MergedHistogram;
use tracepipe_schemas::analytics::Rollup;
use tracepipe_store::{reads, Store, StoreError};

/// What a series is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Subject {
    /// An operation's requests, of one span kind if named.
    Operation { service: String, operation: String, span_kind: Option<String> },
    /// The requests of an operation carrying `attribute` = `value`.
    Cohort { service: String, operation: String, span_kind: Option<String>, attribute: String, value: String },
    /// A business transaction's entries.
    Transaction { transaction: String },
    /// An SLO's events: `count` its events, `errors` its bad ones (no latencies).
    Slo { slo: String },
}

/// Requests, errors and latencies merged over some windows.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub count: u64,
    pub errors: u64,
    pub latency_us: MergedHistogram,
    /// When the earliest and the latest window merged here start.
    pub first_window_ms: Option<u64>,
    pub last_window_ms: Option<u64>,
}

impl Merged {
    fn add(&mut self, window_ms: u64, count: u64, errors: u64, histogram: &[(u64, u64)]) {
        self.count += count;
        self.errors += errors;
        self.latency_us.add(histogram);
        self.first_window_ms = Some(self.first_window_ms.map_or(window_ms, |w| w.min(window_ms)));
        self.last_window_ms = Some(self.last_window_ms.map_or(window_ms, |w| w.max(window_ms)));
    }

    pub fn error_ratio(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Subject::Operation { .. } => "operation",
            Subject::Cohort { .. } => "cohort",
            Subject::Transaction { .. } => "transaction",
            Subject::Slo { .. } => "slo",
        }
    }

    /// The rollups' `service` column to read by: transactions are stored under their name; an
    /// SLO under its service, which the subject does not name (its name is unique).
    fn stored_service(&self) -> Option<&str> {
        match self {
            Subject::Operation { service, .. } | Subject::Cohort { service, .. } => Some(service),
            Subject::Transaction { transaction } => Some(transaction),
            Subject::Slo { .. } => None,
        }
    }

    /// The window start (ms), count, errors and histogram the rollup adds, if it is of this subject.
    fn select<'r>(&self, rollup: &'r Rollup) -> Option<(u64, u64, u64, &'r [(u64, u64)])> {
        let kind_matches = |wanted: &Option<String>, kind: &str| wanted.as_deref().is_none_or(|w| w == kind);
        match (self, rollup) {
            (Subject::Operation { service, operation, span_kind }, Rollup::Operation(r)) if r.service == *service && r.operation == *operation && kind_matches(span_kind, &r.span_kind) => {
                Some((r.window_start_unix_ms, r.count, r.errors, &r.histogram_us))
            }
            (Subject::Cohort { service, operation, span_kind, attribute, value }, Rollup::Cohort(r))
                if r.service == *service && r.operation == *operation && kind_matches(span_kind, &r.span_kind) && r.attribute == *attribute && r.value == *value =>
            {
                Some((r.window_start_unix_ms, r.count, r.errors, &r.histogram_us))
            }
            (Subject::Transaction { transaction }, Rollup::Transaction(r)) if r.transaction == *transaction => Some((r.window_start_unix_ms, r.count, r.errors, &r.histogram_us)),
            (Subject::Slo { slo }, Rollup::Slo(r)) if r.slo == *slo => Some((r.window_start_unix_ms, r.total, r.total.saturating_sub(r.good), &[])),
            _ => None,
        }
    }
}

fn stored_rollups(store: &mut Store, kind: &str, start_ms: i64, end_ms: i64, service: Option<&str>) -> Result<Vec<Rollup>, StoreError> {
    // Windows starting in [start_ms, end_ms).
    let bodies = reads::rollups(store, kind, start_ms, end_ms.saturating_sub(1), service)?;
    Ok(bodies.iter().filter_map(|body| serde_json::from_str(body).ok()).collect())
}

/// The downsampled resolution stored for buckets of `bucket_ms`, and the kinds downsampled.
const DOWNSAMPLED: [(i64, &str); 3] = [(300_000, "5m"), (3_600_000, "1h"), (86_400_000, "1d")];

/// How far the sink has merged `resolution` (buckets starting before it are stored).
fn downsampled_through(store: &mut Store, resolution: &str) -> Result<i64, StoreError> {
    let rows = store.query("SELECT through_ms FROM downsampled WHERE resolution = $1", &[tracepipe_store::Param::Text(resolution)])?;
    Ok(rows.first().map_or(0, |r| r[0].int()))
}

/// The subject's windows starting in [start_ms, end_ms), merged per bucket of `bucket_ms`
/// (bucket starts aligned to it), or into one bucket at `start_ms` when `None`. At 5m, 1h and 1d
/// the buckets the sink has downsampled are read as stored (they outlive the 1-minute rollups),
/// the rest merged from the 1-minute rollups.
pub fn merged(store: &mut Store, subject: &Subject, start_ms: i64, end_ms: i64, bucket_ms: Option<i64>) -> Result<BTreeMap<i64, Merged>, StoreError> {
    let mut buckets: BTreeMap<i64, Merged> = BTreeMap::new();
    let mut fine_from = start_ms;
    let downsampled = matches!(subject, Subject::Operation { .. } | Subject::Cohort { .. }).then(|| DOWNSAMPLED.iter().find(|(ms, _)| Some(*ms) == bucket_ms)).flatten();
    if let Some(&(bucket, resolution)) = downsampled {
        let through = downsampled_through(store, resolution)?;
        if through > start_ms {
            let kind = format!("{}@{resolution}", subject.kind());
            for rollup in stored_rollups(store, &kind, start_ms, end_ms.min(through), subject.stored_service())? {
                let Some((window_ms, count, errors, histogram)) = subject.select(&rollup) else { continue };
                buckets.entry((window_ms as i64).div_euclid(bucket) * bucket).or_default().add(window_ms, count, errors, histogram);
            }
            fine_from = through;
        }
    }
    if fine_from < end_ms {
        for rollup in stored_rollups(store, subject.kind(), fine_from, end_ms, subject.stored_service())? {
            let Some((window_ms, count, errors, histogram)) = subject.select(&rollup) else { continue };
            let at = bucket_ms.map_or(start_ms, |bucket| (window_ms as i64).div_euclid(bucket) * bucket);
            buckets.entry(at).or_default().add(window_ms, count, errors, histogram);
        }
    }
    Ok(buckets)
}

/// The subject's windows in [start_ms, end_ms) merged into one.
pub fn merged_total(store: &mut Store, subject: &Subject, start_ms: i64, end_ms: i64) -> Result<Merged, StoreError> {
    Ok(merged(store, subject, start_ms, end_ms, None)?.into_values().next().unwrap_or_default())
}

/// One cohort of an operation: its key and what its requests add up to.
#[derive(Debug, Clone)]
pub struct Cohort {
    pub service: String,
    pub operation: String,
    pub span_kind: String,
    pub attribute: String,
    pub value: String,
    pub merged: Merged,
}

impl Cohort {
    pub fn subject(&self) -> Subject {
        Subject::Cohort {
            service: self.service.clone(),
            operation: self.operation.clone(),
            span_kind: Some(self.span_kind.clone()),
            attribute: self.attribute.clone(),
            value: self.value.clone(),
        }
    }
}

/// Every cohort with windows in [start_ms, end_ms), of `service` (and `operation`) if given, in
/// key order.
pub fn cohorts(store: &mut Store, service: Option<&str>, operation: Option<&str>, start_ms: i64, end_ms: i64) -> Result<Vec<Cohort>, StoreError> {
    let bodies = reads::rollups(store, "cohort", start_ms, end_ms.saturating_sub(1), service)?;
    let mut found: BTreeMap<(String, String, String, String, String), Merged> = BTreeMap::new();
    for body in &bodies {
        let Ok(Rollup::Cohort(r)) = serde_json::from_str(body) else { continue };
        if operation.is_some_and(|o| o != r.operation) {
            continue;
        }
        found.entry((r.service, r.operation, r.span_kind, r.attribute, r.value)).or_default().add(r.window_start_unix_ms, r.count, r.errors, &r.histogram_us);
    }
    Ok(found.into_iter().map(|((service, operation, span_kind, attribute, value), merged)| Cohort { service, operation, span_kind, attribute, value, merged }).collect())
}

/// Requests per bucket of `bucket_ms` of each (attribute, value) of one operation's cohorts with
/// windows in [start_ms, end_ms).
pub fn cohort_counts(store: &mut Store, service: &str, operation: &str, start_ms: i64, end_ms: i64, bucket_ms: i64) -> Result<BTreeMap<(String, String), BTreeMap<i64, u64>>, StoreError> {
    let bodies = reads::rollups(store, "cohort", start_ms, end_ms.saturating_sub(1), Some(service))?;
    let mut counts: BTreeMap<(String, String), BTreeMap<i64, u64>> = BTreeMap::new();
    for body in &bodies {
        let Ok(Rollup::Cohort(r)) = serde_json::from_str(body) else { continue };
        if r.operation != operation {
            continue;
        }
        let at = (r.window_start_unix_ms as i64).div_euclid(bucket_ms) * bucket_ms;
        *counts.entry((r.attribute, r.value)).or_default().entry(at).or_default() += r.count;
    }
    Ok(counts)
}
