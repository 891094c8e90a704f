//! `processors.sampler` in topology.yaml: the ordered rules and the decision cache.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_analytics::matcher::{AttributeCondition, AttributeScope, Matcher, RawMatcher};
use tracepipe_processor::config::{positive, required, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig};

use crate::{RuleKind, SamplerConfig, SamplingRule};

/// The sampler's section, validated.
#[derive(Debug, Clone)]
pub struct SamplerSpec {
    pub consumer: ConsumerSpec,
    pub input: String,
    pub output: String,
    pub config: SamplerConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampler {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    decision_cache: Option<i64>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

/// One rule: `type` says which of the other fields it takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, with = "humantime_serde")]
    threshold: Option<Duration>,
    percentile: Option<f64>,
    min_samples: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    key: Option<String>,
    equals: Option<Value>,
    regex: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    bool: Option<bool>,
    scope: Option<String>,
    max_shapes: Option<usize>,
    rate: Option<f64>,
    per_second: Option<f64>,
    goal_sample_rate: Option<f64>,
    weight: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    adjustment_interval: Option<Duration>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

impl SectionConfig for SamplerSpec {
    type Raw = RawSampler;

    fn validate(raw: RawSampler, section: &Section<'_>, problems: &mut Problems) -> Option<SamplerSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let input = section.topic("input", &raw.input, problems);
        let output = section.topic("output", &raw.output, problems);
        if raw.rules.is_empty() {
            problems.add(section.at("rules"), "needs at least one rule; a sampler that keeps nothing is `- { type: drop }`");
        }
        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        for (i, rule) in raw.rules.iter().enumerate() {
            let at = section.at(&format!("rules[{i}]"));
            let name = rule.name.clone().or_else(|| rule.kind.clone()).unwrap_or_default();
            if !names.insert(name.clone()) {
                problems.add(format!("{at}.name"), format!("rule name `{name}` is used twice; names label the decision metrics"));
            }
            if let Some(kind) = validate_rule(&at, rule, problems) {
                rules.push(SamplingRule { name, kind });
            }
        }
        let decision_cache = within(section.at("decision_cache"), raw.decision_cache, 200_000, 1..=100_000_000, problems) as u64;
        Some(SamplerSpec { consumer: consumer?, input: input?, output: output?, config: SamplerConfig { rules, decision_cache } })
    }
}

const RULE_TYPES: &str = "always, drop, errors, latency, attribute, span_count, rare_structure, probabilistic, rate_limit, dynamic, and";

fn validate_rule(at: &str, rule: &RawRule, problems: &mut Problems) -> Option<RuleKind> {
    let Some(kind) = rule.kind.as_deref() else {
        problems.add(format!("{at}.type"), format!("is required (one of {RULE_TYPES})"));
        return None;
    };
    // A required number that `accept` takes, or a problem saying it must be `expected`.
    let bounded = |field: &str, value: Option<f64>, accept: fn(f64) -> bool, expected: &str, problems: &mut Problems| match value {
        Some(v) if accept(v) => Some(v),
        Some(v) => {
            problems.add(format!("{at}.{field}"), format!("must be {expected}, got {v}"));
            None
        }
        None => {
            problems.add(format!("{at}.{field}"), "is required");
            None
        }
    };
    let fraction = |field: &str, value: Option<f64>, problems: &mut Problems| bounded(field, value, |v| (0.0..=1.0).contains(&v), "between 0 and 1", problems);
    let positive_number = |field: &str, value: Option<f64>, problems: &mut Problems| match value {
        Some(v) if v > 0.0 && v.is_finite() => Some(v),
        _ => {
            problems.add(format!("{at}.{field}"), "is required and must be above zero");
            None
        }
    };
    let duration = |field: &str, value: Option<Duration>, default: Duration, problems: &mut Problems| positive(format!("{at}.{field}"), value, default, problems);
    Some(match kind {
        "always" => RuleKind::Always,
        "drop" => RuleKind::Drop,
        "errors" => RuleKind::Errors,
        "latency" => match (rule.threshold, rule.percentile) {
            (Some(threshold), None) if threshold.is_zero() => {
                problems.add(format!("{at}.threshold"), "must be longer than zero");
                return None;
            }
            (Some(threshold), None) => RuleKind::Latency { threshold },
            (None, Some(percentile)) if percentile > 0.0 && percentile < 100.0 => RuleKind::LatencyPercentile {
                percentile,
                min_samples: rule.min_samples.unwrap_or(100),
                window: duration("window", rule.window, Duration::from_secs(300), problems),
            },
            (None, Some(p)) => {
                problems.add(format!("{at}.percentile"), format!("must be between 0 and 100, got {p}"));
                return None;
            }
            _ => {
                problems.add(at, "a latency rule takes either threshold (e.g. 500ms) or percentile (e.g. 99)");
                return None;
            }
        },
        "attribute" => {
            let key = required(format!("{at}.key"), &rule.key, problems)?;
            let scope = AttributeScope::validate(format!("{at}.scope"), rule.scope.as_deref(), problems)?;
            let given = RawMatcher { equals: rule.equals.as_ref(), regex: rule.regex.as_deref(), min: rule.min, max: rule.max, bool: rule.bool };
            let matcher = Matcher::validate(at, given, problems)?;
            RuleKind::Attribute(AttributeCondition { key, matcher, scope })
        }
        "span_count" => {
            let count = |field: &str, value: Option<f64>, problems: &mut Problems| match value {
                Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => Some(Some(v as u32)),
                Some(v) => {
                    problems.add(format!("{at}.{field}"), format!("must be a whole number of spans, got {v}"));
                    None
                }
                None => Some(None),
            };
            let (min, max) = (count("min", rule.min, problems)?, count("max", rule.max, problems)?);
            if min.is_none() && max.is_none() {
                problems.add(at, "a span_count rule takes min, max or both");
                return None;
            }
            RuleKind::SpanCount { min: min.unwrap_or(0), max }
        }
        "rare_structure" => RuleKind::RareStructure {
            window: duration("window", rule.window, Duration::from_secs(600), problems),
            max_shapes: rule.max_shapes.unwrap_or(100_000).max(1),
        },
        "probabilistic" => RuleKind::Probabilistic { rate: fraction("rate", rule.rate, problems)? },
        "rate_limit" => RuleKind::RateLimit { per_second: positive_number("per_second", rule.per_second, problems)? },
        "dynamic" => {
            let goal_sample_rate = bounded("goal_sample_rate", rule.goal_sample_rate, |goal| goal >= 1.0 && goal.is_finite(), "1 or more (keep 1 in N traces)", problems);
            let weight = match rule.weight {
                None => Some(0.5),
                Some(w) if w > 0.0 && w <= 1.0 => Some(w),
                Some(w) => {
                    problems.add(format!("{at}.weight"), format!("must be above 0 and at most 1, got {w}"));
                    None
                }
            };
            let adjustment_interval = duration("adjustment_interval", rule.adjustment_interval, Duration::from_secs(15), problems);
            RuleKind::Dynamic { goal_sample_rate: goal_sample_rate?, weight: weight?, adjustment_interval }
        }
        "and" => {
            if rule.rules.is_empty() {
                problems.add(format!("{at}.rules"), "an and rule needs member rules");
                return None;
            }
            let members: Vec<Option<RuleKind>> = rule.rules.iter().enumerate().map(|(j, member)| validate_rule(&format!("{at}.rules[{j}]"), member, problems)).collect();
            let last = members.len() - 1;
            for (j, member) in members.iter().enumerate() {
                if j < last && member.as_ref().is_some_and(|kind| !kind.is_condition()) {
                    problems.add(format!("{at}.rules[{j}]"), "only the last member of an and rule may decide (drop, probabilistic, rate_limit, dynamic); the others are conditions");
                }
            }
            RuleKind::And(members.into_iter().collect::<Option<Vec<_>>>()?)
        }
        other => {
            problems.add(format!("{at}.type"), format!("unknown rule type `{other}` (expected one of {RULE_TYPES})"));
            return None;
        }
    })
}
