//! Error correlation: each failed trace's root-cause span, grouped by (service, operation,
//! exception type, normalized message): an [`ErrorTrace`] per trace, keyed by its trace id and
//! root-cause span id, and
//! per window an [`ErrorGroupRollup`] with a count and exemplar trace ids.

use rustc_hash::FxHashMap;
use prometheus::IntCounter;
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{ErrorGroupRollup, ErrorTrace, Rollup, ROLLUP_SCHEMA};

use crate::analysis::{in_key_order, Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::errors::GroupId;
use crate::metrics;

const GROUP_EXEMPLARS: usize = 5;

#[derive(Default)]
struct GroupWindow {
    count: u64,
    exemplars: Vec<[u8; 16]>,
}

pub struct ErrorGroupRollups {
    windows: SegmentWindows<FxHashMap<GroupId, GroupWindow>>,
    /// Publish each failed trace's root cause.
    error_traces: bool,
    error_trace_records: IntCounter,
}

impl ErrorGroupRollups {
    pub fn new(error_traces: bool) -> Self {
        ErrorGroupRollups { windows: SegmentWindows::default(), error_traces, error_trace_records: metrics::ROLLUPS.with_label_values(&["error_trace"]) }
    }
}

impl Analysis for ErrorGroupRollups {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(cause) = trace.root_cause else {
            return;
        };
        let gw = self.windows.window(window).entry(cause.group).or_default();
        gw.count += 1;
        if gw.exemplars.len() < GROUP_EXEMPLARS {
            gw.exemplars.push(trace.view.trace_id.0);
        }
        metrics::ERROR_TRACES.inc();
        if self.error_traces {
            let span = &trace.view.spans[cause.span as usize];
            let record = Rollup::ErrorTrace(ErrorTrace {
                schema: ROLLUP_SCHEMA.into(),
                trace_id: trace.view.trace_id.to_string(),
                root_cause_span_id: hex::encode(span.span_id),
                service: trace.view.service(span).into(),
                operation: span.name.into(),
                group: names.groups.groups[cause.group as usize].id.clone(),
                end_unix_ms: span.end_unix_nano / 1_000_000,
            });
            out.rollup_of_input(&trace.view.trace_id.0, &record);
            self.error_trace_records.inc();
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, groups) in state.windows() {
            for (id, entry) in in_key_order(groups) {
                let gw = entry;
                let group = &names.groups.groups[id as usize];
                let record = Rollup::ErrorGroup(ErrorGroupRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    group: group.id.clone(),
                    service: group.service.to_string(),
                    operation: group.operation.to_string(),
                    exception_type: group.exception_type.to_string(),
                    message: group.message.to_string(),
                    count: gw.count,
                    exemplar_trace_ids: gw.exemplars.iter().map(hex::encode).collect(),
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&format!("{}/{}", group.service, group.operation), &record, "error_group");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}
