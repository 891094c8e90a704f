//! Downsampled series, kept longer than the 1-minute rollups: every operation and cohort rollup
//! merged into 5-minute buckets, those into hours, and hours into days (kinds `operation@5m`,
//! `cohort@1h`, …, in the rollups table). Counts, errors, sums and the HDR histograms add up
//! exactly, so a day's p99 is the p99 of the day's requests.
//!
//! A bucket is merged once it has settled (`settle` after its end: the analyzer's window and
//! lateness and the sink's flush), and `downsampled` records how far each resolution has got.
//! Each pass merges what is new and merges the recent past again (an hour of 5-minute buckets,
//! six hours of hours, two days of days): merging a bucket again writes the same rows under the
//! same keys, and takes in rollups that reached the store late. A rollup later than that is in the
//! 1-minute series only.

use std::collections::BTreeMap;

use tracepipe_schemas::analytics::{ApdexCounts, CohortRollup, OperationRollup, Rollup, ROLLUP_SCHEMA};
use tracepipe_store::{Param, Store, StoreError};

/// (name, seconds, the resolution merged from: "" for the 1-minute rollups, and how far back each
/// pass merges again, for windows that reached the store late: a sink or store that was down, an
/// analyzer catching up).
pub const RESOLUTIONS: [(&str, i64, &str, i64); 3] = [("5m", 300, "", 3_600), ("1h", 3600, "5m", 6 * 3_600), ("1d", 86_400, "1h", 2 * 86_400)];
/// The rollup kinds downsampled.
pub const KINDS: [&str; 2] = ["operation", "cohort"];
/// Buckets one pass merges per resolution at most, so a long backlog is worked off in steps.
const BUCKETS_PER_PASS: i64 = 288;

/// The stored kind of `kind` at `resolution` ("" is the 1-minute rollups themselves).
pub fn kind_at(kind: &str, resolution: &str) -> String {
    if resolution.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}@{resolution}")
    }
}

/// How far `resolution` has been merged: buckets starting before this are in the store.
pub fn through_ms(store: &mut Store, resolution: &str) -> Result<i64, StoreError> {
    let rows = store.query("SELECT through_ms FROM downsampled WHERE resolution = $1", &[Param::Text(resolution)])?;
    Ok(rows.first().map_or(0, |r| r[0].int()))
}

fn sparse_add(into: &mut BTreeMap<u64, u64>, histogram: &[(u64, u64)]) {
    for &(value, count) in histogram {
        *into.entry(value).or_default() += count;
    }
}

fn quantile_ms(buckets: &BTreeMap<u64, u64>, total: u64, q: f64) -> f64 {
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (&value, &count) in buckets {
        seen += count;
        if seen >= rank {
            return value as f64 / 1000.0;
        }
    }
    0.0
}

/// One downsampled series' sums.
#[derive(Default)]
struct Sums {
    count: u64,
    errors: u64,
    sum_ms: f64,
    max_ms: f64,
    histogram: BTreeMap<u64, u64>,
    apdex: Option<ApdexCounts>,
}

impl Sums {
    fn add(&mut self, count: u64, errors: u64, sum_ms: f64, max_ms: f64, histogram: &[(u64, u64)], apdex: Option<ApdexCounts>) {
        self.count += count;
        self.errors += errors;
        self.sum_ms += sum_ms;
        self.max_ms = self.max_ms.max(max_ms);
        sparse_add(&mut self.histogram, histogram);
        if let Some(a) = apdex {
            let into = self.apdex.get_or_insert(ApdexCounts { threshold_ms: a.threshold_ms, ..Default::default() });
            into.satisfied += a.satisfied;
            into.tolerating += a.tolerating;
        }
    }
}

/// Merges every settled bucket not yet merged, at each resolution; the rows written.
/// Rollups older than `oldest_ms` are not merged for the first time (they are about to expire, and
/// one stray old window would have every pass crawl from it).
pub fn downsample(store: &mut Store, now_ms: i64, settle_ms: i64, oldest_ms: i64) -> Result<u64, StoreError> {
    let mut written = 0;
    for (resolution, seconds, source, again_s) in RESOLUTIONS {
        let step = seconds * 1000;
        let through = through_ms(store, resolution)?;
        let mut from = through;
        if from == 0 {
            let sources: Vec<String> = KINDS.iter().map(|k| kind_at(k, source)).collect();
            let first = store.query(
                "SELECT MIN(window_start_ms) FROM rollups WHERE kind = $1 OR kind = $2",
                &[Param::Text(&sources[0]), Param::Text(&sources[1])],
            )?;
            let Some(first) = first.first().map(|r| &r[0]).filter(|c| !c.is_null()).map(|c| c.int()) else { continue };
            from = first.max(oldest_ms).div_euclid(step) * step;
        } else {
            from = (through - again_s * 1000).div_euclid(step) * step;
        }
        let mut upto = (now_ms - settle_ms).div_euclid(step) * step;
        if !source.is_empty() {
            // Only whole buckets of the finer resolution: it must have got this far.
            upto = upto.min(through_ms(store, source)?.div_euclid(step) * step);
        }
        upto = upto.min(from.max(through) + BUCKETS_PER_PASS * step);
        if upto <= from {
            continue;
        }
        let mut tx = store.transaction()?;
        for kind in KINDS {
            written += merge_buckets(&mut tx, kind, resolution, source, from, upto, step)?;
        }
        tx.execute(
            "INSERT INTO downsampled (resolution, through_ms) VALUES ($1, $2) ON CONFLICT (resolution) DO UPDATE SET through_ms = excluded.through_ms",
            &[Param::Text(resolution), Param::Int(upto.max(through))],
        )?;
        tx.commit()?;
    }
    Ok(written)
}

fn merge_buckets(tx: &mut tracepipe_store::Transaction<'_>, kind: &str, resolution: &str, source: &str, from: i64, upto: i64, step: i64) -> Result<u64, StoreError> {
    let source_kind = kind_at(kind, source);
    let rows = tx.query("SELECT body FROM rollups WHERE kind = $1 AND window_start_ms >= $2 AND window_start_ms < $3", &[Param::Text(&source_kind), Param::Int(from), Param::Int(upto)])?;
    // (bucket, series key) → the series' labels and sums.
    let mut operations: BTreeMap<(i64, String, String, String), Sums> = BTreeMap::new();
    let mut cohorts: BTreeMap<(i64, String, String, String, String, String), Sums> = BTreeMap::new();
    for row in &rows {
        match serde_json::from_str::<Rollup>(row[0].text()) {
            Ok(Rollup::Operation(r)) => {
                let bucket = (r.window_start_unix_ms as i64).div_euclid(step) * step;
                operations.entry((bucket, r.service, r.operation, r.span_kind)).or_default().add(r.count, r.errors, r.sum_ms, r.max_ms, &r.histogram_us, r.apdex);
            }
            Ok(Rollup::Cohort(r)) => {
                let bucket = (r.window_start_unix_ms as i64).div_euclid(step) * step;
                cohorts.entry((bucket, r.service, r.operation, r.span_kind, r.attribute, r.value)).or_default().add(r.count, r.errors, 0.0, 0.0, &r.histogram_us, None);
            }
            _ => {}
        }
    }
    let stored_kind = kind_at(kind, resolution);
    let window_seconds = (step / 1000) as u64;
    let mut out: Vec<(String, i64, String, String, String, u64, u64)> = Vec::new();
    for ((bucket, service, operation, span_kind), s) in operations {
        let record = Rollup::Operation(OperationRollup {
            schema: ROLLUP_SCHEMA.into(),
            window_start_unix_ms: bucket as u64,
            window_seconds,
            p50_ms: quantile_ms(&s.histogram, s.count, 0.5),
            p90_ms: quantile_ms(&s.histogram, s.count, 0.9),
            p99_ms: quantile_ms(&s.histogram, s.count, 0.99),
            service: service.clone(),
            operation: operation.clone(),
            span_kind: span_kind.clone(),
            count: s.count,
            errors: s.errors,
            sum_ms: s.sum_ms,
            max_ms: s.max_ms,
            histogram_us: s.histogram.into_iter().collect(),
            apdex: s.apdex,
            counted_in: None,
        });
        let key = serde_json::to_string(&(&stored_kind, bucket, &span_kind, &service, &operation)).expect("keys serialize");
        out.push((key, bucket, service, operation, serde_json::to_string(&record).expect("rollups serialize"), s.count, s.count - s.errors.min(s.count)));
    }
    for ((bucket, service, operation, span_kind, attribute, value), s) in cohorts {
        let key = serde_json::to_string(&(&stored_kind, bucket, &span_kind, &service, &operation, &attribute, &value)).expect("keys serialize");
        let record = Rollup::Cohort(CohortRollup {
            schema: ROLLUP_SCHEMA.into(),
            window_start_unix_ms: bucket as u64,
            window_seconds,
            service: service.clone(),
            operation: operation.clone(),
            span_kind,
            attribute,
            value,
            count: s.count,
            errors: s.errors,
            histogram_us: s.histogram.into_iter().collect(),
            counted_in: None,
        });
        out.push((key, bucket, service, operation, serde_json::to_string(&record).expect("rollups serialize"), s.count, s.count - s.errors.min(s.count)));
    }
    let mut params: Vec<Param<'_>> = Vec::with_capacity(out.len() * 9);
    for (key, bucket, service, operation, body, total, good) in &out {
        params.extend([
            Param::Text(key),
            Param::Int(0),
            Param::Int(*bucket),
            Param::Text(&stored_kind),
            Param::Text(service),
            Param::Text(operation),
            Param::Text(body),
            Param::Int(i64::try_from(*total).unwrap_or(i64::MAX)),
            Param::Int(i64::try_from(*good).unwrap_or(i64::MAX)),
        ]);
    }
    tx.insert(
        "rollups",
        &["record_key", "coverage", "window_start_ms", "kind", "service", "operation", "body", "total", "good"],
        "ON CONFLICT (record_key) DO UPDATE SET body = excluded.body, total = excluded.total, good = excluded.good",
        &params,
    )?;
    Ok(out.len() as u64)
}
