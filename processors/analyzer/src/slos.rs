//! SLO events: per SLO of topology.yaml's `slos:` and window, how many of its events there were
//! and how many were good ([`SloRollup`]), with a few traces of bad ones. Every trace is counted
//! before sampling, so the counts are exact; with several analyzer instances they are partial
//! and add up in the store, where the SLO evaluator sums them over its windows.

use std::sync::Arc;

use tracepipe_analytics::slo::{SloSpec, BAD_EXEMPLARS};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{Rollup, SloRollup, ROLLUP_SCHEMA};

use crate::analysis::{Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};

#[derive(Default, Clone)]
struct Events {
    total: u64,
    good: u64,
    bad_exemplars: Vec<[u8; 16]>,
}

pub struct SloEvents {
    slos: Arc<[SloSpec]>,
    /// Per window, one entry per SLO, in `slos` order.
    windows: SegmentWindows<Vec<Events>>,
}

impl SloEvents {
    pub fn new(slos: Arc<[SloSpec]>) -> Self {
        SloEvents { slos, windows: SegmentWindows::default() }
    }
}

impl Analysis for SloEvents {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, _names: &Names<'_>, _out: &mut Publisher<'_>) {
        let view = trace.view;
        let root = view.root();
        for (index, slo) in self.slos.iter().enumerate() {
            let (mut total, mut good, mut bad_trace) = (0u64, 0u64, false);
            for span_index in 0..view.spans.len() {
                if slo.is_event(view, span_index, root) {
                    total += 1;
                    if slo.is_good(view, &view.spans[span_index]) {
                        good += 1;
                    } else {
                        bad_trace = true;
                    }
                }
            }
            if total == 0 {
                continue;
            }
            let events = self.windows.window(window);
            events.resize(self.slos.len(), Events::default());
            let entry = &mut events[index];
            entry.total += total;
            entry.good += good;
            if bad_trace && entry.bad_exemplars.len() < BAD_EXEMPLARS {
                entry.bad_exemplars.push(view.trace_id.0);
            }
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, _names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, events) in state.windows() {
            for (slo, counted) in self.slos.iter().zip(events.iter()) {
                if counted.total == 0 {
                    continue;
                }
                let record = Rollup::Slo(SloRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    slo: slo.name.clone(),
                    service: slo.service.clone(),
                    total: counted.total,
                    good: counted.good,
                    bad_exemplar_trace_ids: counted.bad_exemplars.iter().map(hex::encode).collect(),
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&slo.name, &record, "slo");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}
