//! The sampler's metrics. Labels: rule names from topology.yaml and a fixed decision set.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const DECISIONS: &str = "tracepipe_sampler_decisions_total";
pub const FRAGMENTS: &str = "tracepipe_sampler_late_fragments_total";

pub static DECIDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(DECISIONS, "Traces decided, by the rule that decided (`(none)` when no rule matched) and the decision", &["rule", "decision"]).unwrap()
});
pub static LATE_FRAGMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(FRAGMENTS, "Late fragments: `cached` followed their trace's decision, `evaluated` were decided on their own (decision no longer cached)", &["source"]).unwrap()
});
