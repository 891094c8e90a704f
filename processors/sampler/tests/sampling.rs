//! Every sampling rule, decision consistency across instances, and late fragments.

use std::time::Duration;

use prost::Message;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_analytics::matcher::{AttributeCondition, AttributeScope, Matcher};
use tracepipe_sampler::{RuleKind, SamplerConfig, SamplingRule, TailSampler};
use tracepipe_schemas::attributes;
use tracepipe_schemas::otlp_resource::Resource;
use tracepipe_schemas::otlp_trace::{span, ResourceSpans, ScopeSpans, Span, Status};
use tracepipe_schemas::trace_view::TraceView;
use tracepipe_schemas::v1::AssembledTrace;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

fn trace_id(n: u32) -> Vec<u8> {
    // Spread over the id space like random ids: the low 8 bytes from a multiplicative hash.
    let mut id = vec![0u8; 16];
    id[0..4].copy_from_slice(&n.to_be_bytes());
    // Never all zero, which is no trace id at all.
    id[4] = 0xab;
    id[8..16].copy_from_slice(&(u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    id
}

struct TraceBuilder {
    trace: AssembledTrace,
}

impl TraceBuilder {
    fn new(n: u32, service: &str, operation: &str, duration_ms: u64) -> Self {
        let root = Span {
            trace_id: trace_id(n),
            span_id: vec![1; 8],
            name: operation.into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_000 * SECOND,
            end_time_unix_nano: 1_000 * SECOND + duration_ms * MS,
            ..Default::default()
        };
        let mut builder = TraceBuilder { trace: AssembledTrace { trace_id: trace_id(n), ..Default::default() } };
        builder.push(service, root);
        builder
    }

    fn push(&mut self, service: &str, span: Span) {
        self.trace.resource_spans.push(ResourceSpans {
            resource: Some(Resource { attributes: vec![attributes::string("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        });
        self.trace.span_count += 1;
    }

    fn child(mut self, id: u8, service: &str, operation: &str, change: impl FnOnce(&mut Span)) -> Self {
        let mut s = Span {
            trace_id: self.trace.trace_id.clone(),
            span_id: vec![id; 8],
            parent_span_id: vec![1; 8],
            name: operation.into(),
            start_time_unix_nano: 1_000 * SECOND,
            end_time_unix_nano: 1_000 * SECOND + MS,
            ..Default::default()
        };
        change(&mut s);
        self.push(service, s);
        self
    }

    fn fragment(mut self, n: u32) -> Self {
        self.trace.fragment = n;
        self
    }

    fn build(self) -> AssembledTrace {
        self.trace
    }
}

fn sampler(rules: Vec<(&str, RuleKind)>) -> TailSampler {
    let rules = rules.into_iter().map(|(name, kind)| SamplingRule { name: name.into(), kind }).collect();
    TailSampler::new(SamplerConfig { rules, decision_cache: 10_000 }, OutputId(0))
}

/// Decides `trace` as the sampler would read it from `tracepipe.traces`.
fn decide(sampler: &mut TailSampler, trace: &AssembledTrace, now: u64) -> tracepipe_sampler::Decision {
    let bytes = trace.encode_to_vec();
    sampler.decide(TraceView::parse(&bytes).unwrap(), now)
}

fn plain(n: u32) -> AssembledTrace {
    TraceBuilder::new(n, "frontend", "GET /", 10).build()
}

#[test]
fn errors_latency_attributes_and_span_count() {
    let mut s = sampler(vec![
        ("errors", RuleKind::Errors),
        ("slow", RuleKind::Latency { threshold: Duration::from_millis(500) }),
        ("vip", RuleKind::Attribute(AttributeCondition { key: "user.tier".into(), matcher: Matcher::Equals("vip".into()), scope: AttributeScope::AnySpan })),
        ("beta", RuleKind::Attribute(AttributeCondition { key: "app.version".into(), matcher: Matcher::Regex(regex::Regex::new("^2\\.").unwrap()), scope: AttributeScope::Root })),
        ("5xx", RuleKind::Attribute(AttributeCondition { key: "http.response.status_code".into(), matcher: Matcher::Range { min: Some(500.0), max: Some(599.0) }, scope: AttributeScope::AnySpan })),
        ("cached", RuleKind::Attribute(AttributeCondition { key: "cache.hit".into(), matcher: Matcher::Bool(false), scope: AttributeScope::AnySpan })),
        ("big", RuleKind::SpanCount { min: 3, max: None }),
    ]);
    let error_status = TraceBuilder::new(1, "a", "x", 10).child(2, "b", "y", |s| s.status = Some(Status { code: 2, message: "boom".into() })).build();
    let exception = TraceBuilder::new(2, "a", "x", 10).child(2, "b", "y", |s| s.events.push(span::Event { name: "exception".into(), ..Default::default() })).build();
    let slow = TraceBuilder::new(3, "a", "x", 800).build();
    let vip = TraceBuilder::new(4, "a", "x", 10).child(2, "b", "y", |s| s.attributes.push(attributes::string("user.tier", "vip"))).build();
    let mut beta = TraceBuilder::new(5, "a", "x", 10).build();
    beta.resource_spans[0].scope_spans[0].spans[0].attributes.push(attributes::string("app.version", "2.4.1"));
    let server_error = TraceBuilder::new(6, "a", "x", 10).child(2, "b", "y", |s| s.attributes.push(attributes::int("http.response.status_code", 503))).build();
    let miss = TraceBuilder::new(7, "a", "x", 10).child(2, "b", "y", |s| s.attributes.push(attributes::boolean("cache.hit", false))).build();
    let big = TraceBuilder::new(8, "a", "x", 10).child(2, "b", "y", |_| {}).child(3, "c", "z", |_| {}).build();
    // The span says otherwise, its resource says vip: either matching is a match.
    let mut vip_resource = TraceBuilder::new(10, "a", "x", 10).child(2, "b", "y", |s| s.attributes.push(attributes::string("user.tier", "free"))).build();
    vip_resource.resource_spans[1].resource.as_mut().unwrap().attributes.push(attributes::string("user.tier", "vip"));
    let expected = [("errors", &error_status), ("errors", &exception), ("slow", &slow), ("vip", &vip), ("vip", &vip_resource), ("beta", &beta), ("5xx", &server_error), ("cached", &miss), ("big", &big)];
    for (rule, trace) in expected {
        let decision = decide(&mut s, trace, 0);
        assert!(decision.keep, "{rule}");
        assert_eq!(&*decision.rule, rule);
        assert_eq!(decision.adjusted_count, 1.0);
    }
    let decision = decide(&mut s, &plain(9), 0);
    assert!(!decision.keep);
    assert_eq!(&*decision.rule, "(none)");
}

#[test]
fn probabilistic_is_consistent_on_the_trace_id_with_adjusted_counts() {
    let mut first = sampler(vec![("base", RuleKind::Probabilistic { rate: 0.1 })]);
    let mut second = sampler(vec![("base", RuleKind::Probabilistic { rate: 0.1 })]);
    let mut kept = 0;
    for n in 0..20_000 {
        let trace = plain(n);
        let a = decide(&mut first, &trace, 0);
        assert_eq!(a, decide(&mut second, &trace, 0), "two instances decide the same trace the same way");
        if a.keep {
            kept += 1;
            assert!((a.adjusted_count - 10.0).abs() < 1e-9);
        }
    }
    assert!((1_700..2_300).contains(&kept), "about 10% kept: {kept}");
}

#[test]
fn latency_percentile_learns_the_root_operation() {
    let mut s = sampler(vec![("p99", RuleKind::LatencyPercentile { percentile: 99.0, min_samples: 100, window: Duration::from_secs(60) })]);
    for n in 0..1_000 {
        let duration = 10 + u64::from(n % 10);
        assert!(!decide(&mut s, &TraceBuilder::new(n, "a", "x", duration).build(), u64::from(n) * MS).keep || n < 100);
    }
    assert!(decide(&mut s, &TraceBuilder::new(5_000, "a", "x", 200).build(), 2 * SECOND).keep, "above the live p99");
    assert!(!decide(&mut s, &TraceBuilder::new(5_001, "a", "x", 12).build(), 2 * SECOND).keep);
    assert!(!decide(&mut s, &TraceBuilder::new(5_002, "a", "other", 200).build(), 2 * SECOND).keep, "another operation has no baseline yet");
}

#[test]
fn rare_structure_keeps_new_shapes_once_per_window() {
    let mut s = sampler(vec![("rare", RuleKind::RareStructure { window: Duration::from_secs(60), max_shapes: 1000 })]);
    let shape = |n| TraceBuilder::new(n, "a", "x", 10).child(2, "b", "y", |_| {}).build();
    assert!(decide(&mut s, &shape(1), 0).keep);
    assert!(!decide(&mut s, &shape(2), SECOND).keep, "seen recently");
    assert!(decide(&mut s, &TraceBuilder::new(3, "a", "x", 10).child(2, "c", "y", |_| {}).build(), SECOND).keep, "new edge");
    assert!(decide(&mut s, &shape(4), 61 * SECOND).keep, "window passed");
}

#[test]
fn rate_limit_per_root_operation() {
    let mut s = sampler(vec![("limit", RuleKind::RateLimit { per_second: 5.0 })]);
    let kept = (0..50).filter(|&n| decide(&mut s, &plain(n), 10 * SECOND).keep).count();
    assert_eq!(kept, 5);
    assert!(decide(&mut s, &TraceBuilder::new(99, "b", "other", 10).build(), 10 * SECOND).keep, "keys are separate");
    let next = decide(&mut s, &plain(100), 11 * SECOND);
    assert!(next.keep);
    assert_eq!(next.adjusted_count, 10.0, "one kept stood for 50 / 5 in the last second");
}

#[test]
fn dynamic_gives_rare_keys_lower_rates() {
    let mut s = sampler(vec![("dynamic", RuleKind::Dynamic { goal_sample_rate: 10.0, weight: 0.5, adjustment_interval: Duration::from_secs(30) })]);
    let mut n = 0;
    for _ in 0..10_000 {
        decide(&mut s, &TraceBuilder::new(n, "a", "frequent", 10).build(), 0);
        n += 1;
    }
    for _ in 0..10 {
        decide(&mut s, &TraceBuilder::new(n, "a", "rare", 10).build(), 0);
        n += 1;
    }
    let rare = decide(&mut s, &TraceBuilder::new(n, "a", "rare", 10).build(), 31 * SECOND);
    let frequent: Vec<_> = (0..2000).map(|i| decide(&mut s, &TraceBuilder::new(n + 1 + i, "a", "frequent", 10).build(), 31 * SECOND)).collect();
    assert!(rare.keep && rare.adjusted_count == 1.0, "a rare key is kept at rate 1: {rare:?}");
    let rate = frequent.iter().find(|d| d.keep).unwrap().adjusted_count;
    assert!(rate > 10.0, "a frequent key gets a rate above the goal: {rate}");
}

#[test]
fn rate_limit_below_one_a_second_keeps_one_per_period() {
    let mut s = sampler(vec![("trickle", RuleKind::RateLimit { per_second: 0.1 })]);
    // Ten traces a second for a minute: one kept every ten seconds.
    let kept: Vec<_> = (0..600u32).map(|n| (n, decide(&mut s, &plain(n), 100 * SECOND + u64::from(n) * SECOND / 10))).filter(|(_, d)| d.keep).collect();
    assert_eq!(kept.len(), 6, "{kept:?}");
    assert!(kept.windows(2).all(|w| w[1].0 - w[0].0 == 100), "one every 10 s: {kept:?}");
    // Each kept trace after the first window stood for the hundred seen in its window.
    assert!(kept[1..].iter().all(|(_, d)| d.adjusted_count == 100.0), "{kept:?}");
}

/// The rates come from moving averages: one quiet interval of a busy key does not undo what was
/// learned, many do, and then the key is forgotten.
#[test]
fn dynamic_rates_follow_a_moving_average_and_forget_keys() {
    let mut s = sampler(vec![("dynamic", RuleKind::Dynamic { goal_sample_rate: 10.0, weight: 0.5, adjustment_interval: Duration::from_secs(10) })]);
    let mut n = 0;
    let mut interval = |s: &mut TailSampler, index: u64, frequent: u32, rare: u32| {
        for (operation, count) in [("frequent", frequent), ("rare", rare)] {
            for _ in 0..count {
                decide(s, &TraceBuilder::new(n, "a", operation, 10).build(), index * 10 * SECOND);
                n += 1;
            }
        }
    };
    // The adjusted count of the first kept trace: the rate the key is sampled at.
    let rate_of = |s: &mut TailSampler, index: u64, operation: &str| {
        (0..5_000u32).map(|i| decide(s, &TraceBuilder::new(1_000_000 + i, "a", operation, 10).build(), index * 10 * SECOND)).find(|d| d.keep).unwrap().adjusted_count
    };
    for index in 0..10 {
        interval(&mut s, index, 5_000, 20);
    }
    assert!(rate_of(&mut s, 10, "frequent") > 10.0, "the frequent key samples above the goal");
    assert_eq!(rate_of(&mut s, 10, "rare"), 1.0, "the rare key keeps everything");
    // One interval without the frequent key: its average halves but still dominates.
    interval(&mut s, 11, 0, 20);
    assert_eq!(rate_of(&mut s, 12, "rare"), 1.0, "one quiet interval does not undo the average");
    // Long quiet: the frequent key's average falls below the age-out and it is forgotten, so the
    // rare key, now all the traffic, samples near the goal and the forgotten key at the goal.
    for index in 12..40 {
        interval(&mut s, index, 0, 20);
    }
    assert!(rate_of(&mut s, 40, "rare") >= 5.0, "alone, the once rare key carries the goal");
    assert_eq!(rate_of(&mut s, 40, "frequent"), 1.0, "a forgotten key has no rate: too rare to sample");
    assert_eq!(rate_of(&mut s, 40, "brand new"), 1.0, "neither has a key not seen before");
}

/// Averages decay over every interval that passed, also those no trace came in.
#[test]
fn dynamic_averages_decay_across_silent_intervals() {
    // A small weight forgets slowly: its averages need every one of the silent intervals.
    for weight in [0.5, 0.05] {
        let mut s = sampler(vec![("dynamic", RuleKind::Dynamic { goal_sample_rate: 10.0, weight, adjustment_interval: Duration::from_secs(10) })]);
        let mut n = 0;
        for index in 0..5u64 {
            for operation in ["frequent", "other"] {
                for _ in 0..2_000 {
                    decide(&mut s, &TraceBuilder::new(n, "a", operation, 10).build(), index * 10 * SECOND);
                    n += 1;
                }
            }
        }
        // An hour of silence: 360 intervals, every average aged out, so nothing has a rate.
        let after = (0..100u32).map(|i| decide(&mut s, &TraceBuilder::new(2_000_000 + i, "a", "frequent", 10).build(), 3_650 * SECOND)).find(|d| d.keep).unwrap();
        assert_eq!(after.adjusted_count, 1.0, "weight {weight}");
    }
}

#[test]
fn rare_structure_forgets_the_least_recently_seen_shape_first() {
    let mut s = sampler(vec![("rare", RuleKind::RareStructure { window: Duration::from_secs(600), max_shapes: 2 })]);
    let shape = |n: u32, child: &str| TraceBuilder::new(n, "a", "x", 10).child(2, child, "y", |_| {}).build();
    assert!(decide(&mut s, &shape(1, "b"), 0).keep);
    assert!(decide(&mut s, &shape(2, "c"), SECOND).keep);
    // b is seen again, so c is now the least recently seen and makes room for d.
    assert!(!decide(&mut s, &shape(3, "b"), 2 * SECOND).keep);
    assert!(decide(&mut s, &shape(4, "d"), 3 * SECOND).keep);
    assert!(!decide(&mut s, &shape(5, "b"), 4 * SECOND).keep, "b was kept in memory");
    assert!(decide(&mut s, &shape(6, "c"), 5 * SECOND).keep, "c was forgotten");
}

/// Two instances with every kind of rule, fed the same traces at the same times, make the same
/// decision for every trace.
#[test]
fn two_instances_with_every_rule_decide_identically() {
    let rules = || {
        vec![
            ("errors", RuleKind::Errors),
            ("slow", RuleKind::Latency { threshold: Duration::from_millis(900) }),
            ("p95", RuleKind::LatencyPercentile { percentile: 95.0, min_samples: 50, window: Duration::from_secs(5) }),
            ("vip", RuleKind::Attribute(AttributeCondition { key: "user.tier".into(), matcher: Matcher::Equals("vip".into()), scope: AttributeScope::AnySpan })),
            ("big", RuleKind::SpanCount { min: 4, max: Some(100) }),
            ("rare", RuleKind::RareStructure { window: Duration::from_secs(3), max_shapes: 100 }),
            ("health", RuleKind::And(vec![RuleKind::Attribute(AttributeCondition { key: "http.route".into(), matcher: Matcher::Equals("/health".into()), scope: AttributeScope::Root }), RuleKind::Drop])),
            ("limit", RuleKind::RateLimit { per_second: 30.0 }),
            ("dynamic", RuleKind::Dynamic { goal_sample_rate: 5.0, weight: 0.5, adjustment_interval: Duration::from_secs(2) }),
            ("base", RuleKind::Probabilistic { rate: 0.2 }),
        ]
    };
    let (mut first, mut second) = (sampler(rules()), sampler(rules()));
    let mut by_rule = std::collections::BTreeMap::new();
    for n in 0..20_000u32 {
        let operation = ["GET /", "POST /cart", "GET /item", "GET /health"][(n % 7 % 4) as usize];
        let mut builder = TraceBuilder::new(n, "frontend", operation, 5 + u64::from(n.wrapping_mul(2_654_435_761) % 1_000));
        for child in 0..(n % 6) as u8 {
            let service = ["cart", "db", "stock"][usize::from(child % 3)];
            builder = builder.child(child + 2, service, "call", |s| {
                if n % 97 == 0 {
                    s.status = Some(Status { code: 2, message: String::new() });
                }
                if n % 89 == 0 {
                    s.attributes.push(attributes::string("user.tier", "vip"));
                }
            });
        }
        let mut trace = builder.build();
        if operation == "GET /health" {
            trace.resource_spans[0].scope_spans[0].spans[0].attributes.push(attributes::string("http.route", "/health"));
        }
        let now = u64::from(n) * 3 * MS;
        let decision = decide(&mut first, &trace, now);
        assert_eq!(decision, decide(&mut second, &trace, now), "trace {n}");
        *by_rule.entry((decision.rule.to_string(), decision.keep)).or_insert(0) += 1;
    }
    // Every rule decided some traces, so the comparison covered all of them.
    for name in ["errors", "slow", "p95", "vip", "big", "rare", "health", "limit"] {
        assert!(by_rule.keys().any(|(rule, _)| rule == name), "{name} never decided: {by_rule:?}");
    }
}

#[test]
fn a_full_decision_cache_remembers_the_newest_traces() {
    let mut s = TailSampler::new(
        SamplerConfig { rules: vec![SamplingRule { name: "base".into(), kind: RuleKind::Probabilistic { rate: 0.5 } }], decision_cache: 1_000 },
        OutputId(0),
    );
    let mut out = Emitter::default();
    let feed = |s: &mut TailSampler, trace: &AssembledTrace, out: &mut Emitter| {
        let payload = trace.encode_to_vec();
        let input = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.traces", offset: 0, key: None, payload: &payload, timestamp_ms: None };
        s.on_input(&input, 0, out).unwrap();
    };
    for n in 0..10_000 {
        feed(&mut s, &plain(n), &mut out);
    }
    // The newest traces' decisions are the ones a late fragment will look for.
    let cached = (9_900..10_000u32).filter(|&n| s.cached_decision(&trace_id(n).try_into().unwrap()).is_some()).count();
    assert_eq!(cached, 100, "every recent trace's decision is cached");
    assert!(s.cached_decision(&trace_id(0).try_into().unwrap()).is_none(), "the oldest made room");
}

#[test]
fn and_combines_conditions_and_a_sampler_decides_last() {
    let mut s = sampler(vec![
        ("slow-checkout", RuleKind::And(vec![
            RuleKind::Attribute(AttributeCondition { key: "service.name".into(), matcher: Matcher::Equals("checkout".into()), scope: AttributeScope::Root }),
            RuleKind::Latency { threshold: Duration::from_millis(100) },
        ])),
        ("drop-health", RuleKind::And(vec![
            RuleKind::Attribute(AttributeCondition { key: "http.route".into(), matcher: Matcher::Equals("/health".into()), scope: AttributeScope::Root }),
            RuleKind::Drop,
        ])),
        ("all", RuleKind::Always),
    ]);
    assert_eq!(&*decide(&mut s, &TraceBuilder::new(1, "checkout", "POST", 150).build(), 0).rule, "slow-checkout");
    assert_eq!(&*decide(&mut s, &TraceBuilder::new(2, "checkout", "POST", 50).build(), 0).rule, "all");
    let mut health = TraceBuilder::new(3, "web", "GET", 1).build();
    health.resource_spans[0].scope_spans[0].spans[0].attributes.push(attributes::string("http.route", "/health"));
    let decision = decide(&mut s, &health, 0);
    assert!(!decision.keep);
    assert_eq!(&*decision.rule, "drop-health");
}

#[test]
fn kept_traces_carry_rule_and_adjusted_count_and_fragments_follow() {
    let mut s = sampler(vec![("errors", RuleKind::Errors), ("base", RuleKind::Probabilistic { rate: 0.0001 })]);
    let mut out = Emitter::default();
    let error = TraceBuilder::new(1, "a", "x", 10).child(2, "b", "y", |s| s.status = Some(Status { code: 2, message: String::new() })).build();
    let feed = |s: &mut TailSampler, trace: &AssembledTrace, out: &mut Emitter| {
        let payload = trace.encode_to_vec();
        let input = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.traces", offset: 0, key: None, payload: &payload, timestamp_ms: None };
        s.on_input(&input, 0, out).unwrap();
    };
    feed(&mut s, &error, &mut out);
    // A late fragment without the error still follows its trace's decision.
    let late = TraceBuilder::new(1, "c", "z", 1).fragment(1).build();
    feed(&mut s, &late, &mut out);
    feed(&mut s, &plain(2), &mut out);
    let kept: Vec<AssembledTrace> = out.records().map(|(_, _, v)| AssembledTrace::decode(v).unwrap()).collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].sampling_rule, "errors");
    assert_eq!(kept[0].adjusted_count, 1.0);
    assert_eq!(kept[0].spans().count(), 2);
    assert_eq!((kept[1].fragment, kept[1].sampling_rule.as_str()), (1, "errors"));
    let input = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "t", offset: 0, key: None, payload: b"\xff\xff", timestamp_ms: None };
    assert_eq!(s.on_input(&input, 0, &mut out).unwrap_err().kind, "decode");
}
