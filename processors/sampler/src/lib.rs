//! The sampler: tail sampling of assembled traces by ordered rules, first match wins.
//!
//! Each kept trace goes to `tracepipe.sampled` as its assembled bytes with two fields appended:
//! `sampling_rule` (the name of the rule that kept it) and `adjusted_count` (how many traces it
//! stands for, 1 / the probability it was kept with), so counts derived from sampled traces stay
//! unbiased. A trace no rule matches is dropped.
//!
//! With SLOs defined, a trace the analyzer names as an exemplar of an SLO's bad events is kept
//! before any rule decides, as rule `slo_exemplar` ([`slo_exemplars`]), so an SLO alert's trace
//! links open stored traces.
//!
//! A bounded decision cache (trace id → decision, least recently used evicted first) makes late
//! fragments follow their trace's decision, a kept trace's fragments kept and a dropped one's
//! dropped; a fragment whose decision is no longer cached is decided on its own spans.
//!
//! Decisions depend only on the input and the time passed in: instances fed the same traces in
//! the same order at the same times decide alike. The probabilistic rule decides on the trace id
//! alone, so every instance keeps the same traces whatever else it saw; the dynamic rule also
//! decides on the trace id, against rates learned from the traffic each instance saw.

pub mod config;
mod facts;
mod metrics;
pub mod rules;
pub mod slo_exemplars;

use std::sync::Arc;

use prometheus::IntCounter;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, UnixNanos};
use tracepipe_schemas::trace_view::TraceView;

pub use facts::TraceFacts;
pub use rules::{RuleKind, SamplingRule, Verdict};
use rules::RuleState;

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub rules: Vec<SamplingRule>,
    /// Trace decisions remembered for late fragments.
    pub decision_cache: u64,
}

/// What was decided for a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// The deciding rule's name, or `(none)`.
    pub rule: Arc<str>,
    pub adjusted_count: f64,
}

struct LiveRule {
    name: Arc<str>,
    state: RuleState,
    kept: IntCounter,
    dropped: IntCounter,
}

pub struct TailSampler {
    rules: Vec<LiveRule>,
    no_match: (Arc<str>, IntCounter),
    decisions: moka::sync::Cache<[u8; 16], Decision>,
    output: OutputId,
    encoded: Vec<u8>,
    slo_exemplars: Option<(slo_exemplars::SloExemplars, Arc<str>, IntCounter)>,
}

const NO_RULE: &str = "(none)";
/// The rule name a trace kept as an SLO exemplar is stored under.
pub const SLO_EXEMPLAR_RULE: &str = "slo_exemplar";

impl TailSampler {
    pub fn new(config: SamplerConfig, output: OutputId) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|rule| LiveRule {
                name: rule.name.as_str().into(),
                state: RuleState::new(&rule.kind),
                kept: metrics::DECIDED.with_label_values(&[&rule.name, "keep"]),
                dropped: metrics::DECIDED.with_label_values(&[&rule.name, "drop"]),
            })
            .collect();
        TailSampler {
            rules,
            no_match: (NO_RULE.into(), metrics::DECIDED.with_label_values(&[NO_RULE, "drop"])),
            // LRU rather than moka's default TinyLFU admission, which turns away a new key that was
            // not seen before when the cache is full: every trace id is new exactly once.
            decisions: moka::sync::Cache::builder()
                .max_capacity(config.decision_cache.max(1))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            output,
            encoded: Vec::new(),
            slo_exemplars: None,
        }
    }

    /// Keeps the exemplars of these SLOs' bad events, as the analyzer windowed by `windows` names them.
    pub fn with_slo_exemplars(mut self, slos: Arc<[tracepipe_analytics::slo::SloSpec]>, windows: slo_exemplars::ExemplarWindows) -> Self {
        if !slos.is_empty() {
            let kept = metrics::DECIDED.with_label_values(&[SLO_EXEMPLAR_RULE, "keep"]);
            self.slo_exemplars = Some((slo_exemplars::SloExemplars::new(slos, windows), SLO_EXEMPLAR_RULE.into(), kept));
        }
        self
    }

    /// The decision late fragments of `trace_id` will follow, if still cached.
    pub fn cached_decision(&self, trace_id: &[u8; 16]) -> Option<Decision> {
        self.decisions.get(trace_id)
    }

    /// Runs the rules in order on one trace.
    pub fn decide(&mut self, trace: TraceView<'_>, now: UnixNanos) -> Decision {
        let facts = TraceFacts::new(trace);
        for rule in &mut self.rules {
            match rule.state.evaluate(&facts, now) {
                Verdict::NoMatch => continue,
                Verdict::Keep { adjusted_count } => {
                    rule.kept.inc();
                    return Decision { keep: true, rule: rule.name.clone(), adjusted_count };
                }
                Verdict::Drop => {
                    rule.dropped.inc();
                    return Decision { keep: false, rule: rule.name.clone(), adjusted_count: 0.0 };
                }
            }
        }
        self.no_match.1.inc();
        Decision { keep: false, rule: self.no_match.0.clone(), adjusted_count: 0.0 }
    }
}

impl Processor for TailSampler {
    fn name(&self) -> &'static str {
        "sampler"
    }

    fn release_partitions(&mut self, sources: &[tracepipe_processor::SourcePartition]) {
        if let Some((exemplars, _, _)) = &mut self.slo_exemplars {
            for source in sources {
                exemplars.release(*source);
            }
        }
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let trace = TraceView::parse(input.payload).map_err(|e| Poison::new("decode", format!("tracepipe.v1.AssembledTrace: {e}")))?;
        let (trace_id, fragment) = (trace.trace_id.0, trace.fragment);
        let cached = if fragment > 0 { self.decisions.get(&trace_id) } else { None };
        if fragment > 0 {
            metrics::LATE_FRAGMENTS.with_label_values(&[if cached.is_some() { "cached" } else { "evaluated" }]).inc();
        }
        let mut exemplar = None;
        if let (Some((exemplars, rule, kept)), 0) = (&mut self.slo_exemplars, fragment) {
            if exemplars.exemplar_of(&trace, input.source, input.timestamp_ms).is_some() {
                kept.inc();
                exemplar = Some(Decision { keep: true, rule: rule.clone(), adjusted_count: 1.0 });
            }
        }
        let decision = match cached.or(exemplar) {
            Some(decision) => {
                if fragment == 0 {
                    self.decisions.insert(trace_id, decision.clone());
                }
                decision
            }
            None => {
                let decision = self.decide(trace, now);
                self.decisions.insert(trace_id, decision.clone());
                decision
            }
        };
        if decision.keep {
            self.encoded.clear();
            self.encoded.extend_from_slice(input.payload);
            // A string field, written from the shared rule name without copying it into a String.
            prost::encoding::encode_key(20, prost::encoding::WireType::LengthDelimited, &mut self.encoded);
            prost::encoding::encode_varint(decision.rule.len() as u64, &mut self.encoded);
            self.encoded.extend_from_slice(decision.rule.as_bytes());
            prost::encoding::double::encode(21, &decision.adjusted_count, &mut self.encoded);
            out.emit(self.output, &trace_id, &self.encoded);
        }
        Ok(())
    }
}
