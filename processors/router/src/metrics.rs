//! The router's metrics. Labels: the input encoding and a rejection reason kind, both bounded.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const ROUTED_SPANS: &str = "tracepipe_router_routed_spans_total";
pub const REJECTED_SPANS: &str = "tracepipe_router_rejected_spans_total";
pub const TRACE_CHUNKS: &str = "tracepipe_router_trace_chunks_total";

pub static ROUTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(ROUTED_SPANS, "Spans written to the spans topic, keyed by trace id", &["encoding"]).unwrap()
});
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(REJECTED_SPANS, "Spans not routed because of invalid ids; their message goes to the DLQ", &["encoding", "reason"]).unwrap()
});
pub static CHUNKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(TRACE_CHUNKS, "Per-trace records written (one per trace per input message)", &["encoding"]).unwrap()
});
