//! The runtime's own metrics, registered once in the process-wide registry. Labels are bounded:
//! processor and topic names come from topology.yaml, partitions from the broker.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

pub const CONSUMED_MESSAGES: &str = "tracepipe_consumed_messages_total";
pub const CONSUMED_BYTES: &str = "tracepipe_consumed_bytes_total";
pub const PRODUCED_MESSAGES: &str = "tracepipe_produced_messages_total";
pub const PRODUCED_BYTES: &str = "tracepipe_produced_bytes_total";
pub const DLQ_MESSAGES: &str = "tracepipe_dlq_messages_total";
pub const DELIVERY_FAILURES: &str = "tracepipe_delivery_failures_total";
pub const OUTPUTS_DROPPED: &str = "tracepipe_outputs_dropped_total";
pub const IN_FLIGHT: &str = "tracepipe_in_flight_outputs";
pub const UNCOMMITTED: &str = "tracepipe_uncommitted_messages";
pub const CONSUMER_LAG: &str = "tracepipe_consumer_lag_messages";
pub const COMMITS: &str = "tracepipe_commits_total";
pub const REBALANCES: &str = "tracepipe_rebalances_total";
pub const SELF_TRACE: &str = "tracepipe_self_trace_spans_total";

pub static SELF_TRACE_SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(SELF_TRACE, "The pipeline's own spans, by outcome: published, or dropped (too many waiting, or the producer refused them)", &["processor", "outcome"]).unwrap()
});
pub static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(CONSUMED_MESSAGES, "Input records handed to the processor", &["processor", "topic"]).unwrap()
});
pub static CONSUMED_SIZE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(CONSUMED_BYTES, "Bytes of input record values", &["processor", "topic"]).unwrap()
});
pub static PRODUCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(PRODUCED_MESSAGES, "Output records acknowledged by the broker", &["processor", "topic"]).unwrap()
});
pub static PRODUCED_SIZE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(PRODUCED_BYTES, "Bytes of output record values acknowledged", &["processor", "topic"]).unwrap()
});
pub static DLQ: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(DLQ_MESSAGES, "Input records written to the dead-letter topic", &["processor", "kind"]).unwrap()
});
pub static DELIVERY_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(DELIVERY_FAILURES, "Output deliveries that failed and were retried", &["processor", "topic"]).unwrap()
});
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(OUTPUTS_DROPPED, "Outputs the producer refused outright (e.g. over message.max.bytes), with no input left to dead-letter", &["processor", "topic"]).unwrap()
});
pub static IN_FLIGHT_OUTPUTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(IN_FLIGHT, "Outputs sent and not yet acknowledged", &["processor"]).unwrap()
});
pub static UNCOMMITTED_MESSAGES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(UNCOMMITTED, "Records consumed but not yet committed (in flight or held in state)", &["processor", "topic", "partition"]).unwrap()
});
pub static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(CONSUMER_LAG, "Records in the partition after the committed offset, from librdkafka statistics", &["processor", "topic", "partition"]).unwrap()
});
pub static COMMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(COMMITS, "Offset commits by outcome", &["processor", "outcome"]).unwrap()
});
pub static REBALANCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(REBALANCES, "Partition assignments and revocations", &["processor", "event"]).unwrap()
});
