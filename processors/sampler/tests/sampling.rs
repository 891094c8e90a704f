//! Every sampling rule, decision consistency across instances, and late fragments.

use std::time::Duration;

use prost::Message;
use tracepipe_runtime::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_sampler::{AttributeScope, Matcher, RuleKind, SamplerConfig, SamplingRule, TailSampler};
use tracepipe_schemas::attributes;
use tracepipe_schemas::otlp_resource::Resource;
use tracepipe_schemas::otlp_trace::{span, ResourceSpans, ScopeSpans, Span, Status};
use tracepipe_schemas::v1::AssembledTrace;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

fn trace_id(n: u32) -> Vec<u8> {
    // Spread over the id space like random ids: the low 8 bytes from a multiplicative hash.
    let mut id = vec![0u8; 16];
    id[0..4].copy_from_slice(&n.to_be_bytes());
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

fn plain(n: u32) -> AssembledTrace {
    TraceBuilder::new(n, "frontend", "GET /", 10).build()
}

#[test]
fn errors_latency_attributes_and_span_count() {
    let mut s = sampler(vec![
        ("errors", RuleKind::Errors),
        ("slow", RuleKind::Latency { threshold: Duration::from_millis(500) }),
        ("vip", RuleKind::Attribute { key: "user.tier".into(), matcher: Matcher::Equals("vip".into()), scope: AttributeScope::AnySpan }),
        ("beta", RuleKind::Attribute { key: "app.version".into(), matcher: Matcher::Regex(regex::Regex::new("^2\\.").unwrap()), scope: AttributeScope::Root }),
        ("5xx", RuleKind::Attribute { key: "http.response.status_code".into(), matcher: Matcher::Range { min: Some(500.0), max: Some(599.0) }, scope: AttributeScope::AnySpan }),
        ("cached", RuleKind::Attribute { key: "cache.hit".into(), matcher: Matcher::Bool(false), scope: AttributeScope::AnySpan }),
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
    let expected = [("errors", &error_status), ("errors", &exception), ("slow", &slow), ("vip", &vip), ("beta", &beta), ("5xx", &server_error), ("cached", &miss), ("big", &big)];
    for (rule, trace) in expected {
        let decision = s.decide(trace, 0);
        assert!(decision.keep, "{rule}");
        assert_eq!(&*decision.rule, rule);
        assert_eq!(decision.adjusted_count, 1.0);
    }
    let decision = s.decide(&plain(9), 0);
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
        let a = first.decide(&trace, 0);
        assert_eq!(a, second.decide(&trace, 0), "two instances decide the same trace the same way");
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
        assert!(!s.decide(&TraceBuilder::new(n, "a", "x", duration).build(), u64::from(n) * MS).keep || n < 100);
    }
    assert!(s.decide(&TraceBuilder::new(5_000, "a", "x", 200).build(), 2 * SECOND).keep, "above the live p99");
    assert!(!s.decide(&TraceBuilder::new(5_001, "a", "x", 12).build(), 2 * SECOND).keep);
    assert!(!s.decide(&TraceBuilder::new(5_002, "a", "other", 200).build(), 2 * SECOND).keep, "another operation has no baseline yet");
}

#[test]
fn rare_structure_keeps_new_shapes_once_per_window() {
    let mut s = sampler(vec![("rare", RuleKind::RareStructure { window: Duration::from_secs(60), max_shapes: 1000 })]);
    let shape = |n| TraceBuilder::new(n, "a", "x", 10).child(2, "b", "y", |_| {}).build();
    assert!(s.decide(&shape(1), 0).keep);
    assert!(!s.decide(&shape(2), SECOND).keep, "seen recently");
    assert!(s.decide(&TraceBuilder::new(3, "a", "x", 10).child(2, "c", "y", |_| {}).build(), SECOND).keep, "new edge");
    assert!(s.decide(&shape(4), 61 * SECOND).keep, "window passed");
}

#[test]
fn rate_limit_per_root_operation() {
    let mut s = sampler(vec![("limit", RuleKind::RateLimit { per_second: 5.0 })]);
    let kept = (0..50).filter(|&n| s.decide(&plain(n), 10 * SECOND).keep).count();
    assert_eq!(kept, 5);
    assert!(s.decide(&TraceBuilder::new(99, "b", "other", 10).build(), 10 * SECOND).keep, "keys are separate");
    let next = s.decide(&plain(100), 11 * SECOND);
    assert!(next.keep);
    assert_eq!(next.adjusted_count, 10.0, "one kept stood for 50 / 5 in the last second");
}

#[test]
fn dynamic_gives_rare_keys_lower_rates() {
    let mut s = sampler(vec![("dynamic", RuleKind::Dynamic { goal_sample_rate: 10.0, adjustment_interval: Duration::from_secs(30) })]);
    let mut n = 0;
    for _ in 0..10_000 {
        s.decide(&TraceBuilder::new(n, "a", "frequent", 10).build(), 0);
        n += 1;
    }
    for _ in 0..10 {
        s.decide(&TraceBuilder::new(n, "a", "rare", 10).build(), 0);
        n += 1;
    }
    let rare = s.decide(&TraceBuilder::new(n, "a", "rare", 10).build(), 31 * SECOND);
    let frequent: Vec<_> = (0..2000).map(|i| s.decide(&TraceBuilder::new(n + 1 + i, "a", "frequent", 10).build(), 31 * SECOND)).collect();
    assert!(rare.keep && rare.adjusted_count == 1.0, "a rare key is kept at rate 1: {rare:?}");
    let rate = frequent.iter().find(|d| d.keep).unwrap().adjusted_count;
    assert!(rate > 10.0, "a frequent key gets a rate above the goal: {rate}");
}

#[test]
fn and_combines_conditions_and_a_sampler_decides_last() {
    let mut s = sampler(vec![
        ("slow-checkout", RuleKind::And(vec![
            RuleKind::Attribute { key: "service.name".into(), matcher: Matcher::Equals("checkout".into()), scope: AttributeScope::Root },
            RuleKind::Latency { threshold: Duration::from_millis(100) },
        ])),
        ("drop-health", RuleKind::And(vec![
            RuleKind::Attribute { key: "http.route".into(), matcher: Matcher::Equals("/health".into()), scope: AttributeScope::Root },
            RuleKind::Drop,
        ])),
        ("all", RuleKind::Always),
    ]);
    assert_eq!(&*s.decide(&TraceBuilder::new(1, "checkout", "POST", 150).build(), 0).rule, "slow-checkout");
    assert_eq!(&*s.decide(&TraceBuilder::new(2, "checkout", "POST", 50).build(), 0).rule, "all");
    let mut health = TraceBuilder::new(3, "web", "GET", 1).build();
    health.resource_spans[0].scope_spans[0].spans[0].attributes.push(attributes::string("http.route", "/health"));
    let decision = s.decide(&health, 0);
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
