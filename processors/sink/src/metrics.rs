//! The sink's health.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge, Histogram, IntCounter, IntCounterVec, IntGauge};

pub static ROWS_WRITTEN: LazyLock<IntCounterVec> =
    LazyLock::new(|| register_int_counter_vec!("tracepipe_sink_rows_written_total", "Rows inserted, by table", &["table"]).unwrap());
pub static ROWS_DUPLICATE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_sink_rows_duplicate_total", "Rows already stored (a replay or a duplicate upstream), skipped, by table", &["table"]).unwrap()
});
pub static FLUSHES: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_sink_flushes_total", "Batches committed").unwrap());
pub static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!("tracepipe_sink_flush_seconds", "Time to write and commit one batch", vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]).unwrap()
});
pub static WRITE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tracepipe_sink_write_failures_total", "Batches the store refused; they stay pending (their offsets uncommitted) and are retried").unwrap()
});
pub static PENDING_ROWS: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!("tracepipe_sink_pending_rows", "Rows read and not yet committed to the store").unwrap());
pub static INVALID_SPANS: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("tracepipe_sink_invalid_spans_total", "Spans of sampled traces skipped for an empty or all-zero span id").unwrap());
pub static RETENTION_DELETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_sink_retention_deleted_total", "Rows deleted for being older than their retention, by table", &["table"]).unwrap()
});
pub static RECONNECTS: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("tracepipe_sink_reconnects_total", "New connections to the store after it stopped answering (a database restart)").unwrap());
pub static ROWS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_sink_rows_refused_total", "Rows the store refused for their values (a constraint, a value it cannot hold), skipped and logged, by table", &["table"]).unwrap()
});
