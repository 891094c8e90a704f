//! Latency histograms as every windowed aggregate here keeps them: HDR, microseconds, two
//! significant digits (1% resolution), 32-bit counts, growing to the largest value recorded up
//! to [`MAX_RECORDED_US`]: a span claiming to last longer counts there, so a bad end time cannot
//! make a histogram grow to cover 2^64.

use hdrhistogram::Histogram;
use tracepipe_schemas::analytics::SparseHistogram;

pub type LatencyHistogram = Histogram<u32>;

pub fn new_histogram() -> LatencyHistogram {
    Histogram::new(2).expect("two significant digits are valid")
}

/// Records a duration given in nanoseconds (zero counts as the smallest bucket). The histogram
/// grows its range to the value (`saturating_record` would clamp to the initial range instead);
/// the only error left is a bucket count past u32, which a window never reaches.
pub fn record_nanos(histogram: &mut LatencyHistogram, nanos: u64) {
    let _ = histogram.record((nanos / 1000).clamp(1, MAX_RECORDED_US));
}

/// The longest duration a histogram tells apart: a day, in microseconds.
pub const MAX_RECORDED_US: u64 = 86_400 * 1_000_000;

/// The recorded buckets as (µs, count) pairs: recording each value `count` times rebuilds it.
pub fn sparse(histogram: &LatencyHistogram) -> SparseHistogram {
    histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value().into())).collect()
}

/// The quantile in milliseconds, 0 for an empty histogram.
pub fn quantile_ms(histogram: &LatencyHistogram, q: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Stored sparse histograms summed bucket by bucket: windows and instances merge exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedHistogram {
    buckets: std::collections::BTreeMap<u64, u64>,
    count: u64,
}

impl MergedHistogram {
    pub fn add(&mut self, histogram: &[(u64, u64)]) {
        for &(value, count) in histogram {
            *self.buckets.entry(value).or_default() += count;
            self.count += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &MergedHistogram) {
        for (&value, &count) in &other.buckets {
            *self.buckets.entry(value).or_default() += count;
        }
        self.count += other.count;
    }

    /// (bucket value, count), ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().map(|(&value, &count)| (value, count))
    }

    /// The value of the `rank`-th smallest recorded value (1-based, clamped to the count).
    pub fn value_at_rank(&self, rank: u64) -> Option<u64> {
        let rank = rank.clamp(1, self.count.max(1));
        let mut seen = 0;
        for (&value, &count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(value);
            }
        }
        None
    }

    /// The value at quantile `q` in ms (the bucket holding rank ⌈q·n⌉), `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile(q).map(|us| us as f64 / 1_000.0)
    }

    /// The bucket value at quantile `q` as recorded (µs for latencies), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        self.value_at_rank((q * self.count as f64).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_grow_the_range_and_quantiles_are_in_milliseconds() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            record_nanos(&mut h, ms * 1_000_000);
        }
        let p50 = quantile_ms(&h, 0.5);
        assert!((495.0..=505.0).contains(&p50), "{p50}");
        assert!(quantile_ms(&h, 1.0) >= 990.0);
        let sparse = sparse(&h);
        let mut rebuilt = new_histogram();
        for (value, count) in sparse {
            rebuilt.record_n(value, u32::try_from(count).unwrap()).unwrap();
        }
        assert_eq!(rebuilt.len(), 1000);
        assert_eq!(quantile_ms(&rebuilt, 0.5), p50);
        assert_eq!(quantile_ms(&new_histogram(), 0.99), 0.0);
    }
}
