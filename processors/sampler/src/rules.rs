//! Sampling rules. Conditions (errors, latency, attribute, span count, rare structure, always)
//! keep a trace when they match; `drop` drops it; samplers (probabilistic, rate limit, dynamic)
//! match every trace and decide with an adjusted count; `and` keeps when all its conditions
//! match, or lets its last member, if a sampler, decide.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use hdrhistogram::Histogram;
use rustc_hash::FxHasher;
use tracepipe_processor::UnixNanos;
use tracepipe_analytics::matcher::AttributeCondition;
use tracepipe_analytics::OVERFLOW;

use crate::facts::TraceFacts;

/// A rule as configured (validated in [`crate::config`]).
#[derive(Debug, Clone)]
pub enum RuleKind {
    Always,
    Drop,
    Errors,
    /// Root duration at or above a fixed threshold.
    Latency { threshold: Duration },
    /// Root duration above a live percentile of its root operation's durations.
    LatencyPercentile { percentile: f64, min_samples: u64, window: Duration },
    Attribute(AttributeCondition),
    SpanCount { min: u32, max: Option<u32> },
    /// A trace whose shape (set of parent→child (service, operation) pairs) was not seen within `window`.
    RareStructure { window: Duration, max_shapes: usize },
    /// Keeps `rate` of traces, the same ones on every instance (decided on the trace id).
    Probabilistic { rate: f64 },
    /// At most `per_second` traces per (root service, root operation), fractions included.
    RateLimit { per_second: f64 },
    /// Keeps about 1 in `goal_sample_rate` traces overall, giving rare (root service, root
    /// operation) keys a lower rate than frequent ones, from moving averages of each key's traffic
    /// (Refinery's EMA dynamic sampler; `weight` is the newest interval's share of the average).
    Dynamic { goal_sample_rate: f64, weight: f64, adjustment_interval: Duration },
    And(Vec<RuleKind>),
}

impl RuleKind {
    /// Whether the rule only matches or not (a condition), rather than deciding keep or drop
    /// itself (drop and the samplers); only the last member of an `and` may decide.
    pub fn is_condition(&self) -> bool {
        match self {
            RuleKind::Drop | RuleKind::Probabilistic { .. } | RuleKind::RateLimit { .. } | RuleKind::Dynamic { .. } => false,
            // An `and` decides when its last member does.
            RuleKind::And(members) => members.last().is_none_or(RuleKind::is_condition),
            _ => true,
        }
    }
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
    /// Each member, and whether it is a condition ([`RuleKind::is_condition`]).
    And(Vec<(RuleState, bool)>),
}

impl RuleState {
    pub fn new(kind: &RuleKind) -> RuleState {
        match kind {
            RuleKind::LatencyPercentile { percentile, min_samples, window } => {
                RuleState::Percentile(PercentileState { percentile: *percentile, min_samples: *min_samples, window: window.as_nanos() as u64, keys: HashMap::new() })
            }
            RuleKind::RareStructure { window, max_shapes } => RuleState::Rare(RareState::new(*window, *max_shapes)),
            RuleKind::RateLimit { per_second } => RuleState::RateLimit(RateLimitState::new(*per_second)),
            RuleKind::Dynamic { goal_sample_rate, weight, adjustment_interval } => {
                RuleState::Dynamic(DynamicState::new(*goal_sample_rate, *weight, *adjustment_interval))
            }
            RuleKind::And(members) => RuleState::And(members.iter().map(|member| (RuleState::new(member), member.is_condition())).collect()),
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
                for (member, is_condition) in members.iter_mut() {
                    match member.evaluate(facts, now) {
                        Verdict::NoMatch => return Verdict::NoMatch,
                        Verdict::Keep { .. } if *is_condition => continue,
                        decided => return decided,
                    }
                }
                KEEP
            }
        }
    }
}

fn evaluate_stateless(kind: &RuleKind, facts: &TraceFacts<'_>) -> Verdict {
    let keep_if = |matched: bool| if matched { KEEP } else { Verdict::NoMatch };
    match kind {
        RuleKind::Always => KEEP,
        RuleKind::Drop => Verdict::Drop,
        RuleKind::Errors => keep_if(facts.has_error),
        RuleKind::Latency { threshold } => keep_if(facts.duration_nanos() >= threshold.as_nanos() as u64),
        RuleKind::Attribute(condition) => keep_if(condition.matches_trace(&facts.trace, facts.root)),
        RuleKind::SpanCount { min, max } => {
            let count = facts.spans().len() as u32;
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
        return (OVERFLOW.into(), OVERFLOW.into());
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

/// Fingerprints of trace shapes seen recently, least recently seen evicted first once
/// `max_shapes` are held.
pub struct RareState {
    window: u64,
    max_shapes: usize,
    /// Shape → (last seen, its position in `recency`).
    seen: HashMap<u64, (UnixNanos, u64)>,
    /// Position → shape, oldest first: one entry per shape, moved to the end when seen again.
    recency: BTreeMap<u64, u64>,
    next_position: u64,
}

/// A hash of the trace's set of parent→child (service, operation) pairs. FxHash, not the
/// standard library's randomly keyed hasher, so every instance of a build fingerprints alike.
fn shape_fingerprint(facts: &TraceFacts<'_>) -> u64 {
    let spans = facts.spans();
    let by_id: HashMap<[u8; 8], (&str, &str)> = spans.iter().map(|s| (s.span_id, (facts.service(s), s.name))).collect();
    let mut edges: BTreeSet<((&str, &str), (&str, &str))> = BTreeSet::new();
    for s in spans {
        let child = (facts.service(s), s.name);
        let parent = s.parent_span_id.and_then(|id| by_id.get(&id).copied()).unwrap_or(("", ""));
        edges.insert((parent, child));
    }
    let mut hasher = FxHasher::default();
    edges.hash(&mut hasher);
    hasher.finish()
}

impl RareState {
    fn new(window: Duration, max_shapes: usize) -> Self {
        RareState { window: window.as_nanos() as u64, max_shapes: max_shapes.max(1), seen: HashMap::new(), recency: BTreeMap::new(), next_position: 0 }
    }

    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let shape = shape_fingerprint(facts);
        let position = self.next_position;
        self.next_position += 1;
        let rare = match self.seen.insert(shape, (now, position)) {
            Some((last, old_position)) => {
                self.recency.remove(&old_position);
                now.saturating_sub(last) >= self.window
            }
            None => true,
        };
        self.recency.insert(position, shape);
        if self.recency.len() > self.max_shapes {
            if let Some((_, oldest)) = self.recency.pop_first() {
                self.seen.remove(&oldest);
            }
        }
        if rare {
            KEEP
        } else {
            Verdict::NoMatch
        }
    }
}

/// A token bucket per key (root service, root operation): `per_second` tokens a second, at most
/// `max(per_second, 1)` saved up, so a key below one trace a second keeps one every
/// `1 / per_second` seconds. A kept trace's adjusted count is how many traces of its key each
/// kept one stood for over the last complete window (seen / kept), or over the current one while
/// there is no complete window yet.
pub struct RateLimitState {
    per_second: f64,
    burst: f64,
    /// Long enough for a key at the limit to keep at least one trace in it.
    window: u64,
    keys: HashMap<(String, String), RateBucket>,
}

struct RateBucket {
    tokens: f64,
    refilled: UnixNanos,
    window_start: UnixNanos,
    seen: u64,
    kept: u64,
    /// seen / kept of the last complete window with a kept trace.
    last_ratio: Option<f64>,
}

const SECOND: u64 = 1_000_000_000;
const MAX_RATE_KEYS: usize = 100_000;

impl RateLimitState {
    fn new(per_second: f64) -> Self {
        let window = ((SECOND as f64 / per_second) as u64).max(SECOND);
        RateLimitState { per_second, burst: per_second.max(1.0), window, keys: HashMap::new() }
    }

    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let key = capped_key(facts, &self.keys, MAX_RATE_KEYS);
        let bucket = self
            .keys
            .entry(key)
            .or_insert(RateBucket { tokens: self.burst, refilled: now, window_start: now, seen: 0, kept: 0, last_ratio: None });
        let elapsed = now.saturating_sub(bucket.refilled);
        bucket.tokens = (bucket.tokens + elapsed as f64 / SECOND as f64 * self.per_second).min(self.burst);
        bucket.refilled = now;
        if now.saturating_sub(bucket.window_start) >= self.window {
            if bucket.kept > 0 {
                bucket.last_ratio = Some(bucket.seen as f64 / bucket.kept as f64);
            }
            bucket.window_start = now;
            bucket.seen = 0;
            bucket.kept = 0;
        }
        bucket.seen += 1;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.kept += 1;
            let ratio = bucket.last_ratio.unwrap_or(bucket.seen as f64 / bucket.kept as f64);
            Verdict::Keep { adjusted_count: ratio.max(1.0) }
        } else {
            Verdict::Drop
        }
    }
}

/// Refinery's EMA dynamic sampler: per key (root service, root operation) an exponential moving
/// average of traces per adjustment interval, `ema = weight × count + (1 − weight) × ema`; keys
/// not seen decay and are forgotten below [`EMA_AGE_OUT`]. Sample rates are recomputed from the
/// averages every interval, or at once when an interval's traffic bursts past
/// [`BURST_MULTIPLE`] × the averages' sum, so rare keys are kept at rates near 1 and the whole
/// keeps about 1 in `goal`. Until the first interval ends every key samples at `goal`.
pub struct DynamicState {
    goal: f64,
    weight: f64,
    interval: u64,
    window_start: Option<UnixNanos>,
    intervals: u32,
    counts: HashMap<(String, String), u64>,
    counted: u64,
    averages: HashMap<(String, String), f64>,
    average_sum: f64,
    rates: HashMap<(String, String), f64>,
}

/// An average below this many traces per interval is dropped (Refinery's AgeOutValue).
const EMA_AGE_OUT: f64 = 0.5;
/// An interval whose count passes this multiple of the averages' sum recomputes early.
const BURST_MULTIPLE: f64 = 2.0;
/// Intervals before bursts are detected, so the first averages settle (Refinery's default).
const BURST_DETECTION_DELAY: u32 = 3;

impl DynamicState {
    fn new(goal: f64, weight: f64, interval: Duration) -> Self {
        DynamicState {
            goal,
            weight,
            interval: interval.as_nanos() as u64,
            window_start: None,
            intervals: 0,
            counts: HashMap::new(),
            counted: 0,
            averages: HashMap::new(),
            average_sum: 0.0,
            rates: HashMap::new(),
        }
    }

    /// Folds the interval's counts into the averages, decays them over `idle` further intervals
    /// that passed without a trace (nothing to add, each one multiplying by 1 - weight), and
    /// derives each key's rate. Averages only shrink after the fold, so aging out once at the end
    /// drops the keys aging out after every interval would.
    fn update_averages(&mut self, idle: u64) {
        for average in self.averages.values_mut() {
            *average *= 1.0 - self.weight;
        }
        for (key, count) in self.counts.drain() {
            *self.averages.entry(key).or_insert(0.0) += self.weight * count as f64;
        }
        if idle > 0 {
            let decay = (1.0 - self.weight).powf(idle as f64);
            for average in self.averages.values_mut() {
                *average *= decay;
            }
        }
        self.averages.retain(|_, average| *average >= EMA_AGE_OUT);
        // As Refinery counts it for burst detection: every key at least one trace.
        self.average_sum = self.averages.values().map(|a| a.max(1.0)).sum();
        self.counted = 0;
        self.intervals = self.intervals.saturating_add(1).saturating_add(u32::try_from(idle).unwrap_or(u32::MAX));
        self.rates = average_sample_rates(&self.averages, self.goal);
    }

    fn evaluate(&mut self, facts: &TraceFacts<'_>, now: UnixNanos) -> Verdict {
        let start = *self.window_start.get_or_insert(now);
        let burst = self.intervals >= BURST_DETECTION_DELAY && self.average_sum > 0.0 && self.counted as f64 >= BURST_MULTIPLE * self.average_sum;
        let due = now.saturating_sub(start) / self.interval.max(1);
        if due >= 1 || burst {
            self.update_averages(due.saturating_sub(1));
            self.window_start = Some(now);
        }
        let key = facts.root_key();
        // Before the first averages every key samples at the goal; after, a key without a rate
        // of its own is one too rare (or too new) to have one, and keeps everything.
        let rate = self.rates.get(&key).copied().unwrap_or(if self.intervals == 0 { self.goal } else { 1.0 });
        if self.counts.len() < MAX_RATE_KEYS || self.counts.contains_key(&key) {
            *self.counts.entry(key).or_insert(0) += 1;
            self.counted += 1;
        }
        if facts.trace_id_ratio() < 1.0 / rate {
            Verdict::Keep { adjusted_count: rate }
        } else {
            Verdict::Drop
        }
    }
}

/// Refinery's average-sample-rate method: the goal number of kept traces is split over keys in
/// proportion to the logarithm of their counts, so rarer keys get rates nearer 1; slots a key does
/// not use pass to the keys after it.
fn average_sample_rates(counts: &HashMap<(String, String), f64>, goal: f64) -> HashMap<(String, String), f64> {
    let mut rates = HashMap::with_capacity(counts.len());
    let total: f64 = counts.values().sum();
    if total <= 0.0 {
        return rates;
    }
    let goal_count = total / goal;
    let log_sum: f64 = counts.values().map(|&c| c.log10().max(0.0)).sum();
    if log_sum <= 0.0 {
        for key in counts.keys() {
            rates.insert(key.clone(), goal);
        }
        return rates;
    }
    let goal_ratio = goal_count / log_sum;
    let mut keys: Vec<_> = counts.iter().map(|(k, &c)| (k, c)).collect();
    keys.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let mut extra = 0.0;
    let mut remaining = keys.len() as f64;
    for (key, count) in keys {
        let share = extra / remaining;
        extra -= share;
        remaining -= 1.0;
        let goal_for_key = (count.log10().max(0.0) * goal_ratio).max(1.0) + share;
        let rate = if count <= goal_for_key {
            extra += goal_for_key - count;
            1.0
        } else {
            let rate = (count / goal_for_key).ceil();
            extra += goal_for_key - count / rate;
            rate
        };
        rates.insert(key.clone(), rate);
    }
    rates
}
