//! Per (service, operation, span kind) and window: an HDR latency histogram, counts, errors and
//! the sum of durations, published as [`OperationRollup`]s; for server and consumer spans, the
//! requests a service serves, their Apdex classes against the service's threshold.

use tracepipe_analytics::latency::{new_histogram, quantile_ms, record_nanos, sparse, LatencyHistogram};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{ApdexCounts, OperationRollup, Rollup, ROLLUP_SCHEMA};

use crate::analysis::{in_key_order, Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::series::{self, SeriesId};
use crate::ApdexThresholds;

struct SeriesWindow {
    histogram_us: LatencyHistogram,
    errors: u64,
    sum_nanos: u64,
    /// The service's Apdex threshold and counts, for server and consumer series.
    apdex: Option<(u64, ApdexCounts)>,
}

pub struct Operations {
    windows: SegmentWindows<rustc_hash::FxHashMap<SeriesId, SeriesWindow>>,
    apdex: ApdexThresholds,
}

impl Operations {
    pub fn new(apdex: ApdexThresholds) -> Self {
        Operations { windows: SegmentWindows::default(), apdex }
    }
}

const SERVER: u8 = 2;
const CONSUMER: u8 = 5;

impl Analysis for Operations {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, names: &Names<'_>, _out: &mut Publisher<'_>) {
        let series = self.windows.window(window);
        for (span, &(_, id)) in trace.view.spans.iter().zip(trace.span_series) {
            let duration = span.duration_nanos();
            let sw = series.entry(id).or_insert_with(|| {
                let (operation, kind) = names.table.names(id);
                let apdex = matches!(kind, SERVER | CONSUMER).then(|| {
                    let threshold = self.apdex.for_service(&operation.service);
                    (threshold.as_nanos().min(u128::from(u64::MAX / 4)) as u64, ApdexCounts { threshold_ms: threshold.as_millis() as u64, ..Default::default() })
                });
                SeriesWindow { histogram_us: new_histogram(), errors: 0, sum_nanos: 0, apdex }
            });
            record_nanos(&mut sw.histogram_us, duration);
            sw.sum_nanos = sw.sum_nanos.saturating_add(duration);
            let failed = span.is_error();
            sw.errors += u64::from(failed);
            if let Some((threshold, counts)) = &mut sw.apdex {
                if !failed && duration <= *threshold {
                    counts.satisfied += 1;
                } else if !failed && duration <= 4 * *threshold {
                    counts.tolerating += 1;
                }
            }
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, series) in state.windows() {
            for (id, entry) in in_key_order(series) {
                let sw = entry;
                let (operation, kind) = names.table.names(id);
                let h = &sw.histogram_us;
                let record = Rollup::Operation(OperationRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    service: operation.service.to_string(),
                    operation: operation.name.to_string(),
                    span_kind: series::kind_label(kind).into(),
                    count: h.len(),
                    errors: sw.errors,
                    sum_ms: sw.sum_nanos as f64 / 1e6,
                    p50_ms: quantile_ms(h, 0.5),
                    p90_ms: quantile_ms(h, 0.9),
                    p99_ms: quantile_ms(h, 0.99),
                    max_ms: h.max() as f64 / 1000.0,
                    histogram_us: sparse(h),
                    apdex: sw.apdex.map(|(_, counts)| counts),
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&format!("{}/{}", operation.service, operation.name), &record, "operation");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}
