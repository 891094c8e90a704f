//! Bottlenecks: per endpoint and window, the critical path's time split by (service, operation),
//! ranked, published as [`BottleneckRollup`]s.

use rustc_hash::FxHashMap;
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{BottleneckRollup, Contributor, Rollup, ROLLUP_SCHEMA};

use crate::analysis::{in_key_order, Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::series::{OperationId, SeriesId};

#[derive(Default)]
struct EndpointWindow {
    traces: u64,
    /// Traces weighted by 1 / their head-sampling probability: the traces the services started.
    adjusted_traces: f64,
    total_nanos: u64,
    contributions: FxHashMap<OperationId, u64>,
}

#[derive(Default)]
pub struct Bottlenecks {
    windows: SegmentWindows<FxHashMap<SeriesId, EndpointWindow>>,
}

impl Analysis for Bottlenecks {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, _names: &Names<'_>, _out: &mut Publisher<'_>) {
        if trace.entries.is_empty() {
            return;
        }
        let endpoints = self.windows.window(window);
        for entry in trace.entries {
            let ew = endpoints.entry(entry.endpoint).or_default();
            ew.traces += 1;
            ew.adjusted_traces += trace.adjusted_count;
            ew.total_nanos = ew.total_nanos.saturating_add(entry.duration_nanos);
            for &(operation, nanos) in trace.entry_contributions(entry) {
                let sum = ew.contributions.entry(operation).or_default();
                *sum = sum.saturating_add(nanos);
            }
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, endpoints) in state.windows() {
            for (id, entry) in in_key_order(endpoints) {
                let ew = entry;
                let (operation, kind) = names.table.names(id);
                let total_ms = ew.total_nanos as f64 / 1e6;
                let mut contributors: Vec<Contributor> = ew
                    .contributions
                    .iter()
                    .map(|(op, nanos)| {
                        let names = &names.table.operations[*op as usize];
                        let critical_path_ms = *nanos as f64 / 1e6;
                        Contributor {
                            service: names.service.to_string(),
                            operation: names.name.to_string(),
                            critical_path_ms,
                            share: if total_ms > 0.0 { critical_path_ms / total_ms } else { 0.0 },
                        }
                    })
                    .collect();
                contributors.sort_by(|a, b| b.critical_path_ms.total_cmp(&a.critical_path_ms).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation))));
                let record = Rollup::Bottlenecks(BottleneckRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    service: operation.service.to_string(),
                    operation: operation.name.to_string(),
                    span_kind: Some(crate::series::kind_label(kind).into()),
                    traces: ew.traces,
                    adjusted_traces: Some(ew.adjusted_traces),
                    total_ms,
                    contributors,
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&format!("{}/{}", operation.service, operation.name), &record, "bottlenecks");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}
