//! Span metrics under the OpenTelemetry span-metrics connector's names and labels
//! (`traces_span_metrics_calls_total`, `traces_span_metrics_duration_milliseconds`; labels
//! service_name, span_name, span_kind, status_code), so Grafana's dashboards and Jaeger's monitor
//! tab read them unchanged. Series are the analyzer's, cardinality capped.

use prometheus::{Histogram, IntCounter};
use tracepipe_schemas::trace_view::STATUS_ERROR;

use crate::analysis::{Analysis, Names, ObservedTrace, Publisher, WindowRef};
use crate::metrics;
use crate::series::kind_label;

struct SpanMetric {
    calls: IntCounter,
    duration_ms: Histogram,
}

/// The Prometheus series of each analyzer series, by status code (unset, ok, error), resolved
/// when first used rather than by label on every span.
#[derive(Default)]
pub struct SpanMetrics {
    by_series: Vec<[Option<SpanMetric>; 3]>,
}

fn status_label(status: usize) -> &'static str {
    ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"][status]
}

impl Analysis for SpanMetrics {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, _window: WindowRef, names: &Names<'_>, _out: &mut Publisher<'_>) {
        for (span, &(_, series)) in trace.view.spans.iter().zip(trace.span_series) {
            let status = match span.status_code {
                1 => 1,
                STATUS_ERROR => 2,
                _ => 0,
            };
            let index = series as usize;
            if self.by_series.len() <= index {
                self.by_series.resize_with(index + 1, Default::default);
            }
            let metric = self.by_series[index][status].get_or_insert_with(|| {
                let (operation, kind) = names.table.names(series);
                let labels = [&*operation.service, &*operation.name, kind_label(kind), status_label(status)];
                SpanMetric { calls: metrics::CALLS.with_label_values(&labels), duration_ms: metrics::DURATION.with_label_values(&labels) }
            });
            metric.calls.inc();
            metric.duration_ms.observe(span.duration_nanos() as f64 / 1e6);
        }
    }
}
