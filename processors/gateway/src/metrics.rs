//! The gateway's metrics: requests and spans by protocol and outcome, bytes waiting for Kafka,
//! and how long requests take to be stored.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounterVec, IntGauge};

use crate::{Accepted, IngestError, Protocol};

pub const GATEWAY_REQUESTS: &str = "tracepipe_gateway_requests_total";
pub const GATEWAY_SPANS: &str = "tracepipe_gateway_spans_total";

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(GATEWAY_REQUESTS, "Export requests by protocol and outcome (accepted, partial, invalid, too_large, overloaded, unavailable, refused)", &["protocol", "outcome"]).unwrap()
});
static SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(GATEWAY_SPANS, "Spans stored in Kafka (accepted) or dropped for invalid ids (rejected)", &["protocol", "outcome"]).unwrap()
});
static REQUEST_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("tracepipe_gateway_request_bytes_total", "Request body bytes received (after decompression)", &["protocol"]).unwrap()
});
static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tracepipe_gateway_request_duration_seconds",
        "Time from a request's body to its answer, Kafka's acknowledgement included",
        &["protocol"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .unwrap()
});
pub static IN_FLIGHT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tracepipe_gateway_in_flight_bytes", "Request bytes waiting for Kafka's acknowledgement").unwrap()
});

pub fn record(protocol: Protocol, result: &Result<Accepted, IngestError>, bytes: usize, elapsed: Duration) {
    let name = protocol.as_str();
    REQUEST_BYTES.with_label_values(&[name]).inc_by(bytes as u64);
    LATENCY.with_label_values(&[name]).observe(elapsed.as_secs_f64());
    let outcome = match result {
        Ok(accepted) => {
            SPANS.with_label_values(&[name, "accepted"]).inc_by(accepted.spans);
            if accepted.rejected_spans > 0 {
                SPANS.with_label_values(&[name, "rejected"]).inc_by(accepted.rejected_spans);
                "partial"
            } else {
                "accepted"
            }
        }
        Err(error) => error.outcome(),
    };
    REQUESTS.with_label_values(&[name, outcome]).inc();
}
