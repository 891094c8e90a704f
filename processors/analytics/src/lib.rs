//! What the processors that derive data from traces share: the structure of a trace and its
//! critical path ([`tree`]), latency histograms ([`latency`]), per-partition event-time windows ([`segments`]),
//! the alert lifecycle ([`alerts`]), conditions that select spans and traces ([`matcher`]), service-level objectives ([`slo`]), business transactions and funnels ([`transactions`]), and
//! the label a capped series falls into ([`OVERFLOW`]).
//!
//! No Kafka here: the analyzer, the dependencies processor, the sampler and the query server all
//! link this crate.

pub mod alerts;
pub mod compare;
pub mod latency;
pub mod matcher;
mod metrics;
pub mod segments;
pub mod slo;
pub mod transactions;
pub mod tree;

/// The label value a series takes once its cardinality cap is reached (service, operation, edge
/// peer or sampling key): its traffic is still counted, under this one name.
pub const OVERFLOW: &str = "__overflow__";

/// The span-metrics connector's default duration buckets, in milliseconds: the bounds of
/// `traces_span_metrics_duration_milliseconds`, which the SLO rules read too.
pub const SPAN_DURATION_BUCKETS_MS: [f64; 16] = [2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0, 10000.0, 15000.0];

/// The longest name (service, operation, exception type, error message) a series or group keeps:
/// a longer one is cut at this many bytes (on a character boundary), so what the analyses hold is
/// bounded in bytes by their series caps, whatever the input's names.
pub const MAX_NAME_BYTES: usize = 256;

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `name` cut to at most [`MAX_NAME_BYTES`] bytes, on a character boundary.
pub fn bounded_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_cut_on_a_character_boundary() {
        assert_eq!(super::bounded_name("GET /users"), "GET /users");
        let long = "é".repeat(200);
        let cut = super::bounded_name(&long);
        assert!(cut.len() <= super::MAX_NAME_BYTES && cut.len() >= super::MAX_NAME_BYTES - 1);
        assert!(long.starts_with(cut));
    }
}
