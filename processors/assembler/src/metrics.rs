//! The assembler's metrics; the only label is the completion reason (a fixed set).

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge};

pub const OPEN_TRACES: &str = "tracepipe_assembler_open_traces";
pub const BUFFERED_SPANS: &str = "tracepipe_assembler_buffered_spans";
pub const BUFFERED_BYTES: &str = "tracepipe_assembler_buffered_bytes";
pub const EMITTED_CACHE_BYTES: &str = "tracepipe_assembler_emitted_cache_bytes";
pub const TRACES_EMITTED: &str = "tracepipe_assembler_traces_emitted_total";
pub const SPANS_ASSEMBLED: &str = "tracepipe_assembler_spans_total";
pub const LATE_SPANS: &str = "tracepipe_assembler_late_spans_total";
pub const DUPLICATE_SPANS: &str = "tracepipe_assembler_duplicate_spans_total";
pub const EVICTED_TRACES: &str = "tracepipe_assembler_evicted_traces_total";

pub static OPEN: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!(OPEN_TRACES, "Traces being assembled").unwrap());
pub static SPANS_BUFFERED: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!(BUFFERED_SPANS, "Spans held in open traces").unwrap());
pub static BYTES_BUFFERED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(BUFFERED_BYTES, "Bytes held in open traces, counted against the memory budget").unwrap()
});
pub static BYTES_EMITTED_CACHE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(EMITTED_CACHE_BYTES, "Bytes of the emitted trace ids remembered to number late fragments, counted against the memory budget").unwrap()
});
pub static EMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(TRACES_EMITTED, "Traces and late fragments emitted, by completion reason", &["completion"]).unwrap()
});
pub static ASSEMBLED: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!(SPANS_ASSEMBLED, "Spans taken into traces").unwrap());
pub static LATE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(LATE_SPANS, "Spans that arrived after their trace was emitted (sent on as fragments)").unwrap()
});
pub static DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(DUPLICATE_SPANS, "Spans dropped because their span id was already in the trace").unwrap()
});
pub static EVICTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(EVICTED_TRACES, "Traces emitted early, flagged truncated, because of the memory budget").unwrap()
});
