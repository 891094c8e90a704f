//! Metrics of what the shared analyses do, labelled by the processor that runs them.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

pub static ALERTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_alerts_total", "Alert events emitted, by source processor, kind and state", &["source", "kind", "state"]).unwrap()
});
pub static OPEN_ALERTS: LazyLock<IntGaugeVec> = LazyLock::new(|| register_int_gauge_vec!("tracepipe_alerts_open", "Alerts firing now, by source processor and kind", &["source", "kind"]).unwrap());
