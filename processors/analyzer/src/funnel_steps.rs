//! Funnel steps (topology.yaml's `funnels:`): each trace's first span matching a step of a funnel,
//! with the value of the funnel's correlation attribute, published to the funnel-steps topic
//! keyed by funnel and value, so that one journey's steps, which come in separate traces, meet in
//! one partition of the funnels processor. Published as the trace is read, holding its offset:
//! a replay publishes the same steps again, which the funnels processor takes once.

use std::sync::Arc;

use tracepipe_analytics::transactions::{text, FunnelSpec, MAX_CORRELATION_BYTES};
use tracepipe_schemas::analytics::{FunnelStep, FUNNEL_STEP_SCHEMA};

use crate::analysis::{Analysis, Names, ObservedTrace, Publisher, WindowRef};
use crate::metrics;

pub struct FunnelSteps {
    funnels: Arc<[FunnelSpec]>,
    /// Per funnel, its uncorrelated-steps counter, resolved once.
    uncorrelated: Vec<prometheus::IntCounter>,
}

impl FunnelSteps {
    pub fn new(funnels: Arc<[FunnelSpec]>) -> Self {
        let uncorrelated = funnels.iter().map(|f| metrics::FUNNEL_STEPS_UNCORRELATED.with_label_values(&[&f.name])).collect();
        FunnelSteps { funnels, uncorrelated }
    }
}

impl Analysis for FunnelSteps {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, _window: WindowRef, _names: &Names<'_>, out: &mut Publisher<'_>) {
        let view = trace.view;
        let root = view.root();
        let mut trace_id: Option<String> = None;
        for (funnel, uncorrelated) in self.funnels.iter().zip(&self.uncorrelated) {
            for (step_index, step) in funnel.steps.iter().enumerate() {
                let mut first: Option<(usize, String)> = None;
                for (index, span) in view.spans.iter().enumerate() {
                    if first.as_ref().is_some_and(|(at, _)| view.spans[*at].start_unix_nano <= span.start_unix_nano) || !step.rule.matches(view, index, root) {
                        continue;
                    }
                    let value = span.attribute(&funnel.correlation).or_else(|| view.resource_attribute(span, &funnel.correlation)).and_then(text);
                    match value {
                        Some(value) if !value.is_empty() && value.len() <= MAX_CORRELATION_BYTES => first = Some((index, value)),
                        _ => uncorrelated.inc(),
                    }
                }
                let Some((index, correlation)) = first else { continue };
                let span = &view.spans[index];
                let record = FunnelStep {
                    schema: FUNNEL_STEP_SCHEMA.into(),
                    funnel: funnel.name.clone(),
                    step: step_index as u32,
                    at_unix_nanos: span.start_unix_nano,
                    trace_id: trace_id.get_or_insert_with(|| hex::encode(view.trace_id.0)).clone(),
                    error: span.is_error(),
                    correlation,
                };
                out.funnel_step(&FunnelStep::key(&funnel.name, &record.correlation), &record);
            }
        }
    }
}
