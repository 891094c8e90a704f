//! Sampling rules. Conditions (errors, latency, attribute, span count, rare structure, always)
//! keep a trace when they match; `drop` drops it; samplers (probabilistic, rate limit, dynamic)
//! match every trace and decide with an adjusted count; `and` keeps when all its conditions
//! match, or lets its last member, if a sampler, decide.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use hdrhistogram::Histogram;
use regex::Regex;
use tracepipe_runtime::UnixNanos;
use tracepipe_schemas::otlp_common::any_value::Value;
use tracepipe_schemas::otlp_common::KeyValue;

use crate::facts::TraceFacts;

/// How an attribute value is matched.
#[derive(Debug, Clone)]
pub enum Matcher {
    Equals(String),
    Regex(Regex),
    /// Numeric range, inclusive; either end open.
    Range { min: Option<f64>, max: Option<f64> },
    Bool(bool),
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Matcher::Equals(expected), Value::StringValue(s)) => s == expected,
            (Matcher::Equals(expected), other) => tracepipe_schemas::attributes::to_text(other) == *expected,
            (Matcher::Regex(re), Value::StringValue(s)) => re.is_match(s),
            (Matcher::Range { min, max }, Value::IntValue(i)) => in_range(*i as f64, *min, *max),
            (Matcher::Range { min, max }, Value::DoubleValue(d)) => in_range(*d, *min, *max),
            (Matcher::Bool(expected), Value::BoolValue(b)) => b == expected,
            _ => false,
        }
    }
}

fn in_range(v: f64, min: Option<f64>, max: Option<f64>) -> bool {
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeScope {
    AnySpan,
    Root,
}

/// A rule as configured (validated by the topology).
#[derive(Debug, Clone)]
pub enum RuleKind {
    Always,
    Drop,
    Errors,
    /// Root duration at or above a fixed threshold.
    Latency { threshold: Duration },
    /// Root duration above a live percentile of its root operation's durations.
    LatencyPercentile { percentile: f64, min_samples: u64, window: Duration },
    Attribute { key: String, matcher: Matcher, scope: AttributeScope },
    SpanCount { min: u32, max: Option<u32> },
    /// A trace whose shape (set of parent→child (service, operation) pairs) was not seen within `window`.
    RareStructure { window: Duration, max_shapes: usize },
    /// Keeps `rate` of traces, the same ones on every instance (decided on the trace id).
    Probabilistic { rate: f64 },
    /// At most `per_second` traces per (root service, root operation).
    RateLimit { per_second: f64 },
    /// Keeps about 1 in `goal_sample_rate` traces overall, giving rare (root service, root
    /// operation) keys a lower rate than frequent ones (Refinery's average-sample-rate method).
    Dynamic { goal_sample_rate: f64, adjustment_interval: Duration },
    And(Vec<RuleKind>),
}

#[derive(Debug, Clone)]
pub struct SamplingRule {
    pub name: String,
    pub kind: RuleKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Keep { adjusted_count: f64 },
    Drop,
    NoMatch,
}

const KEEP: Verdict = Verdict::Keep { adjusted_count: 1.0 };

/// Live state of one rule.
pub enum RuleState {
    Stateless(RuleKind),
    Percentile(PercentileState),
    Rare(RareState),
    RateLimit(RateLimitState),
    Dynamic(DynamicState),
    And(Vec<RuleState>),
}

impl RuleState {
    pub fn new(kind: &RuleKind) -> RuleState {
        match kind {
            RuleKind::LatencyPercentile { percentile, min_samples, window } => {
                RuleState::Percentile(PercentileState { percentile: *percentile, min_samples: *min_samples, window: window.as_nanos() as u64, keys: HashMap::new() })
            }
            RuleKind::RareStructure { window, max_shapes } => {
                RuleState::Rare(RareState { window: window.as_nanos() as u64, max_shapes: *max_shapes, seen: HashMap::new(), order: VecDeque::new() })
            }
            RuleKind::RateLimit { per_second } => RuleState::RateLimit(RateLimitState { per_second: *per_second, keys: HashMap::new() }),
            RuleKind::Dynamic { goal_sample_rate, adjustment_interval } => RuleState::Dynamic(DynamicState {
                goal: *goal_sample_rate,
                interval: adjustment_interval.as_nanos() as u64,
                window_start: None,
                counts: HashMap::new(),
                rates: HashMap::new(),
            }),
            RuleKind::And(members) => RuleState::And(members.iter().map(RuleState::new).collect()),
            other => RuleState::Stateless(other.clone()),
        }
    }

    pub fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        match self {
            RuleState::Stateless(kind) => evaluate_stateless(kind, facts),
            RuleState::Percentile(state) => state.evaluate(facts, now),
            RuleState::Rare(state) => state.evaluate(facts, now),
            RuleState::RateLimit(state) => state.evaluate(facts, now),
            RuleState::Dynamic(state) => state.evaluate(facts, now),
            RuleState::And(members) => {
                for member in members.iter_mut() {
                    match member.evaluate(facts, now) {
                        Verdict::NoMatch => return Verdict::NoMatch,
                        Verdict::Keep { .. } if member.is_condition() => continue,
                        decided => return decided,
                    }
                }
                KEEP
            }
        }
    }

    fn is_condition(&self) -> bool {
        !matches!(
            self,
            RuleState::RateLimit(_) | RuleState::Dynamic(_) | RuleState::Stateless(RuleKind::Probabilistic { .. }) | RuleState::Stateless(RuleKind::Drop)
        )
    }
}

fn attribute_matches(attributes: &[KeyValue], key: &str, matcher: &Matcher) -> bool {
    attributes
        .iter()
        .filter(|kv| kv.key == key)
        .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
        .any(|v| matcher.matches(v))
}

fn evaluate_stateless(kind: &RuleKind, facts: &TraceFacts<'_>) -> Verdict {
    let keep_if = |matched: bool| if matched { KEEP } else { Verdict::NoMatch };
    match kind {
        RuleKind::Always => KEEP,
        RuleKind::Drop => Verdict::Drop,
        RuleKind::Errors => keep_if(facts.has_error),
        RuleKind::Latency { threshold } => keep_if(facts.duration_nanos() >= threshold.as_nanos() as u64),
        RuleKind::Attribute { key, matcher, scope } => {
            let spans: Box<dyn Iterator<Item = _>> = match scope {
                AttributeScope::Root => Box::new(facts.root().into_iter()),
                AttributeScope::AnySpan => Box::new(facts.spans.iter()),
            };
            let mut matched = false;
            for s in spans {
                if attribute_matches(&s.span.attributes, key, matcher) || attribute_matches(s.resource, key, matcher) {
                    matched = true;
                    break;
                }
            }
            keep_if(matched)
        }
        RuleKind::SpanCount { min, max } => {
            let count = facts.spans.len() as u32;
            keep_if(count >= *min && max.is_none_or(|m| count <= m))
        }
        RuleKind::Probabilistic { rate } => {
            if facts.trace_id_ratio() < *rate {
                Verdict::Keep { adjusted_count: 1.0 / rate }
            } else {
                Verdict::Drop
            }
        }
        // Stateful kinds never reach here.
        _ => Verdict::NoMatch,
    }
}

/// The trace's (root service, root operation), or one shared overflow key once `keys` holds
/// `limit` others, so per-key state stays bounded whatever the operation names.
fn capped_key<V>(facts: &TraceFacts<'_>, keys: &HashMap<(String, String), V>, limit: usize) -> (String, String) {
    let key = facts.root_key();
    if keys.len() >= limit && !keys.contains_key(&key) {
        return ("(overflow)".into(), "(overflow)".into());
    }
    key
}

/// Per root operation, root durations of the current and the previous window.
pub struct PercentileState {
    percentile: f64,
    min_samples: u64,
    window: u64,
    keys: HashMap<(String, String), PercentileWindows>,
}

struct PercentileWindows {
    started: UnixNanos,
    current: Histogram<u64>,
    /// The percentile of the last complete window and how many samples it had.
    previous: Option<(u64, u64)>,
}

/// Root operations tracked by percentile rules; past this, new keys share one overflow key.
const MAX_PERCENTILE_KEYS: usize = 10_000;

impl PercentileState {
    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let key = capped_key(facts, &self.keys, MAX_PERCENTILE_KEYS);
        let windows = self.keys.entry(key).or_insert_with(|| PercentileWindows {
            started: now,
            current: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            previous: None,
        });
        if now.saturating_sub(windows.started) >= self.window {
            let len = windows.current.len();
            windows.previous = (len > 0).then(|| (windows.current.value_at_quantile(self.percentile / 100.0), len));
            windows.current.reset();
            windows.started = now;
        }
        let micros = (facts.duration_nanos() / 1000).clamp(1, 3_600_000_000);
        // Decide against what was seen before this trace, then learn from it.
        let threshold = match windows.previous {
            Some((value, samples)) if samples >= self.min_samples => Some(value),
            _ if windows.current.len() >= self.min_samples => Some(windows.current.value_at_quantile(self.percentile / 100.0)),
            _ => None,
        };
        let _ = windows.current.record(micros);
        match threshold {
            Some(threshold) if micros > threshold => KEEP,
            _ => Verdict::NoMatch,
        }
    }
}

/// Fingerprints of trace shapes seen recently.
pub struct RareState {
    window: u64,
    max_shapes: usize,
    seen: HashMap<u64, UnixNanos>,
    order: VecDeque<u64>,
}

fn shape_fingerprint(facts: &TraceFacts<'_>) -> u64 {
    let by_id: HashMap<&[u8], (&str, &str)> = facts.spans.iter().map(|s| (s.span.span_id.as_slice(), (s.service, s.span.name.as_str()))).collect();
    let mut edges: BTreeSet<((&str, &str), (&str, &str))> = BTreeSet::new();
    for s in &facts.spans {
        let child = (s.service, s.span.name.as_str());
        let parent = by_id.get(s.span.parent_span_id.as_slice()).copied().unwrap_or(("", ""));
        edges.insert((parent, child));
    }
    let mut hasher = DefaultHasher::new();
    edges.hash(&mut hasher);
    hasher.finish()
}

impl RareState {
    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let shape = shape_fingerprint(facts);
        let rare = self.seen.get(&shape).is_none_or(|&last| now.saturating_sub(last) >= self.window);
        if self.seen.insert(shape, now).is_none() {
            self.order.push_back(shape);
            if self.order.len() > self.max_shapes {
                if let Some(oldest) = self.order.pop_front() {
                    self.seen.remove(&oldest);
                }
            }
        }
        if rare {
            KEEP
        } else {
            Verdict::NoMatch
        }
    }
}

/// A one-second window per key: how many were seen and kept, now and in the previous window.
pub struct RateLimitState {
    per_second: f64,
    keys: HashMap<(String, String), RateWindow>,
}

struct RateWindow {
    second: u64,
    seen: u64,
    kept: u64,
    previous_ratio: f64,
}

const SECOND: u64 = 1_000_000_000;
const MAX_RATE_KEYS: usize = 100_000;

impl RateLimitState {
    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let key = capped_key(facts, &self.keys, MAX_RATE_KEYS);
        let second = now / SECOND;
        let window = self.keys.entry(key).or_insert(RateWindow { second, seen: 0, kept: 0, previous_ratio: 1.0 });
        if window.second != second {
            window.previous_ratio = if window.kept > 0 { window.seen as f64 / window.kept as f64 } else { 1.0 };
            *window = RateWindow { second, seen: 0, kept: 0, previous_ratio: window.previous_ratio };
        }
        window.seen += 1;
        if (window.kept as f64) < self.per_second {
            window.kept += 1;
            // The share of this key's traffic a kept trace stands for, as last measured.
            Verdict::Keep { adjusted_count: window.previous_ratio.max(1.0) }
        } else {
            Verdict::Drop
        }
    }
}

/// Per key sample rates recomputed every interval from the counts of the last one.
pub struct DynamicState {
    goal: f64,
    interval: u64,
    window_start: Option<UnixNanos>,
    counts: HashMap<(String, String), u64>,
    rates: HashMap<(String, String), f64>,
}

impl DynamicState {
    /// Refinery's average sample rate: rarer keys get rates nearer 1, the total kept is about
    /// total / goal.
    fn recompute(&mut self) {
        let total: u64 = self.counts.values().sum();
        self.rates.clear();
        if total == 0 {
            return;
        }
        let goal_count = total as f64 / self.goal;
        let log_sum: f64 = self.counts.values().map(|&c| (c as f64).log10().max(0.0)).sum();
        if log_sum <= 0.0 {
            for key in self.counts.keys() {
                self.rates.insert(key.clone(), self.goal);
            }
            self.counts.clear();
            return;
        }
        let goal_ratio = goal_count / log_sum;
        let mut keys: Vec<_> = self.counts.iter().map(|(k, &c)| (k.clone(), c)).collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        // Slots a key does not use are passed on to the keys after it.
        let mut extra = 0.0;
        let mut remaining = keys.len() as f64;
        for (key, count) in keys {
            let count = count as f64;
            let share = extra / remaining;
            extra -= share;
            remaining -= 1.0;
            let goal_for_key = (count.log10() * goal_ratio).max(1.0) + share;
            let rate = if count <= goal_for_key {
                extra += goal_for_key - count;
                1.0
            } else {
                let rate = (count / goal_for_key).ceil();
                extra += goal_for_key - count / rate;
                rate
            };
            self.rates.insert(key, rate);
        }
        self.counts.clear();
    }

    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_sub(start) >= self.interval {
            self.recompute();
            self.window_start = Some(now);
        }
        let key = facts.root_key();
        let rate = self.rates.get(&key).copied().unwrap_or(self.goal);
        if self.counts.len() < MAX_RATE_KEYS || self.counts.contains_key(&key) {
            *self.counts.entry(key).or_insert(0) += 1;
        }
        if facts.trace_id_ratio() < 1.0 / rate {
            Verdict::Keep { adjusted_count: rate }
        } else {
            Verdict::Drop
        }
    }
}
