//! The funnels processor's metrics: journeys and their steps as they close, and its own state.

use std::sync::LazyLock;

use prometheus::{register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounterVec, IntGauge};

pub static JOURNEYS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_funnel_journeys_total", "Funnel journeys closed, by funnel and how (complete, join_window, evicted)", &["funnel", "closed"]).unwrap()
});
pub static STEPS_REACHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_funnel_step_reached_total", "Closed journeys that reached each step: over the first step's, the conversion", &["funnel", "step"]).unwrap()
});
pub static STEP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tracepipe_funnel_step_seconds",
        "Time from a journey's previous step to this one",
        &["funnel", "step"],
        vec![0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0, 86400.0]
    )
    .unwrap()
});
pub static OPEN: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!("tracepipe_funnel_open_journeys", "Journeys waiting for their next step or their join window to pass").unwrap());
pub static DROPPED_STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tracepipe_funnel_dropped_steps_total",
        "Steps joined into no journey: without_entry (no first step within the join window), unknown_funnel (not in topology.yaml's funnels:), late (behind the watermark, the journey closed)",
        &["funnel", "reason"]
    )
    .unwrap()
});
