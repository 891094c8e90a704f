//! The analyzer's metrics: the OpenTelemetry span-metrics connector's series (so Grafana
//! dashboards and Jaeger's monitor tab read them unchanged), and the analyzer's own health.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounter,
    IntCounterVec, IntGauge,
};

use tracepipe_analytics::SPAN_DURATION_BUCKETS_MS;

const SPAN_LABELS: &[&str] = &["service_name", "span_name", "span_kind", "status_code"];

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("traces_span_metrics_calls_total", "Spans, by service, span name, kind and status", SPAN_LABELS).unwrap()
});
pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "traces_span_metrics_duration_milliseconds",
        "Span durations in milliseconds, by service, span name, kind and status",
        SPAN_LABELS,
        SPAN_DURATION_BUCKETS_MS.to_vec()
    )
    .unwrap()
});
pub static TRACES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_analyzer_traces_total", "Assembled traces analyzed: `trace` for first emissions, `fragment` for late fragments", &["part"]).unwrap()
});
pub static SPANS: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_analyzer_spans_total", "Spans analyzed").unwrap());
pub static STRUCTURE_PROBLEMS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tracepipe_analyzer_structure_problems_total",
        "Spans with a repaired structure problem: missing_parent, cycle, duplicate_span_id, negative_duration, clock_skew",
        &["problem"]
    )
    .unwrap()
});
pub static OVERFLOW_SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_analyzer_overflow_total", "New series or error groups folded into the `__overflow__` one, by the limit that was reached", &["limit"]).unwrap()
});
pub static SERIES: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!("tracepipe_analyzer_series", "(service, operation, span kind) series tracked").unwrap());
pub static ERROR_TRACES: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_analyzer_error_traces_total", "Traces with at least one error span, each attributed to a root-cause span").unwrap());
pub static DETECTION_LATE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tracepipe_analyzer_detection_late_traces_total", "Traces older than the open detection slice, left out of anomaly and error-spike detection").unwrap()
});
pub static TOO_LATE_TRACES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tracepipe_analyzer_too_late_traces_total", "Traces more than a day behind their partition's event-time watermark, counted in no window").unwrap()
});
pub static LATE_TRACES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tracepipe_analyzer_late_traces_total", "Traces whose window was behind their partition's event-time watermark: counted in their own window, in a record marked late").unwrap()
});
pub static ROLLUPS: LazyLock<IntCounterVec> = LazyLock::new(|| register_int_counter_vec!("tracepipe_analyzer_rollups_total", "Rollup records emitted, by kind", &["kind"]).unwrap());

/// Business transactions, counted as each trace is analyzed (the store's rollups are the exact
/// record: a replay after a crash counts its traces here again).
pub static TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_business_transactions_total", "Business transactions entered, by transaction, split value and outcome (ok, error)", &["transaction", "split", "outcome"]).unwrap()
});
pub static TRANSACTIONS_COMPLETE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_business_transactions_complete_total", "Business transactions with every step traced: over tracepipe_business_transactions_total, the coverage", &["transaction", "split"]).unwrap()
});
pub static TRANSACTION_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tracepipe_business_transactions_duration_seconds",
        "Business transactions' entry span durations",
        &["transaction", "split"],
        SPAN_DURATION_BUCKETS_MS.iter().map(|ms| ms / 1000.0).collect()
    )
    .unwrap()
});
pub static TRANSACTION_VALUE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tracepipe_business_transactions_value",
        "A business metric's values (e.g. order amounts): _sum is the total, _count the transactions that carried it",
        &["transaction", "metric"],
        vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0, 100000.0]
    )
    .unwrap()
});
pub static TRANSACTION_VALUES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_business_transactions_by_value_total", "Business transactions by the value of a count_by attribute (capped, past it __overflow__)", &["transaction", "attribute", "value"]).unwrap()
});
pub static TRANSACTION_STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_business_transaction_steps_total", "Steps of business transactions seen, by outcome (ok, error)", &["transaction", "step", "outcome"]).unwrap()
});
pub static TRANSACTION_STEP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tracepipe_business_transaction_step_duration_seconds",
        "Durations of business transactions' steps",
        &["transaction", "step"],
        SPAN_DURATION_BUCKETS_MS.iter().map(|ms| ms / 1000.0).collect()
    )
    .unwrap()
});
pub static FUNNEL_STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| register_int_counter_vec!("tracepipe_analyzer_funnel_steps_total", "Funnel steps published for the funnels processor", &["funnel"]).unwrap());
pub static FUNNEL_STEPS_UNCORRELATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_analyzer_funnel_steps_uncorrelated_total", "Spans matching a funnel step without a usable correlation value (absent, empty, or over 256 bytes)", &["funnel"]).unwrap()
});
