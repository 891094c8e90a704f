//! The OpenTelemetry service-graph connector's series, and the processor's own health.

use std::sync::LazyLock;

use prometheus::{register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge};

/// The service-graph connector's default buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 16] = [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];

const EDGE_LABELS: &[&str] = &["client", "server", "connection_type"];

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("traces_service_graph_request_total", "Requests between two nodes of the service graph", EDGE_LABELS).unwrap()
});
pub static FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("traces_service_graph_request_failed_total", "Failed requests between two nodes of the service graph", EDGE_LABELS).unwrap()
});
pub static SERVER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!("traces_service_graph_request_server_seconds", "Request durations as the server saw them", EDGE_LABELS, LATENCY_BUCKETS_S.to_vec()).unwrap()
});
pub static CLIENT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!("traces_service_graph_request_client_seconds", "Request durations as the client saw them", EDGE_LABELS, LATENCY_BUCKETS_S.to_vec()).unwrap()
});
pub static UNPAIRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tracepipe_dependencies_unpaired_spans_total",
        "Spans whose other side was not in the trace: a client without server child nor peer attributes, a producer without consumer, a server or consumer whose parent is elsewhere",
        &["kind"]
    )
    .unwrap()
});
pub static TRACES: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_dependencies_traces_total", "Assembled traces and late fragments read").unwrap());
pub static EDGES: LazyLock<IntGauge> = LazyLock::new(|| register_int_gauge!("tracepipe_dependencies_edges", "Distinct edges seen").unwrap());
pub static OVERFLOW: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_dependencies_overflow_total", "New edges folded into the `__overflow__` edge past max_edges").unwrap());
pub static EDGE_WINDOWS: LazyLock<IntCounter> = LazyLock::new(|| register_int_counter!("tracepipe_dependencies_edge_windows_total", "Edge window records emitted").unwrap());
