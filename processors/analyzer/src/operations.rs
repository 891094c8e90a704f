//! Per (service, operation, span kind) and window: an HDR latency histogram, counts, errors and
//! the sum of durations, published as [`OperationRollup`]s.

use tracepipe_analytics::latency::{new_histogram, quantile_ms, record_nanos, sparse, LatencyHistogram};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{OperationRollup, Rollup, ROLLUP_SCHEMA};

use crate::analysis::{in_key_order, Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::series::{self, SeriesId};

struct SeriesWindow {
    histogram_us: LatencyHistogram,
    errors: u64,
    sum_nanos: u64,
}

impl Default for SeriesWindow {
    fn default() -> Self {
        SeriesWindow { histogram_us: new_histogram(), errors: 0, sum_nanos: 0 }
    }
}

#[derive(Default)]
pub struct Operations {
    windows: SegmentWindows<rustc_hash::FxHashMap<SeriesId, SeriesWindow>>,
}

impl Analysis for Operations {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, _names: &Names<'_>, _out: &mut Publisher<'_>) {
        let series = self.windows.window(window);
        for (span, &(_, id)) in trace.view.spans.iter().zip(trace.span_series) {
            let duration = span.duration_nanos();
            let sw = series.entry(id).or_default();
            record_nanos(&mut sw.histogram_us, duration);
            sw.sum_nanos = sw.sum_nanos.saturating_add(duration);
            sw.errors += u64::from(span.is_error());
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
