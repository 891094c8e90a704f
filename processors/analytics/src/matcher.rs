//! Conditions on attributes that select spans and traces: the sampler's attribute rules today,
//! and any processor that needs to pick endpoints or traces by what their spans carry.
//!
//! A span matches when the span's own attribute or its resource's matches (so `service.version`,
//! a resource attribute, and `http.route`, a span attribute, are selected the same way).

use regex::Regex;
use serde_yaml_ng::Value;
use tracepipe_processor::config::{scalar_text, Problems};
use tracepipe_schemas::trace_view::{AttributeValue, SpanView, TraceView};

/// How an attribute value is compared.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equal text; numbers and booleans compare by their text, as `equals: 200` is written.
    Equals(String),
    Regex(Regex),
    /// Numeric range, inclusive; either end open.
    Range { min: Option<f64>, max: Option<f64> },
    Bool(bool),
}

impl Matcher {
    pub fn matches(&self, value: AttributeValue<'_>) -> bool {
        match (self, value) {
            (Matcher::Equals(expected), AttributeValue::Str(s)) => s == expected.as_bytes(),
            (Matcher::Equals(expected), AttributeValue::Int(i)) => i.to_string() == *expected,
            (Matcher::Equals(expected), AttributeValue::Double(d)) => d.to_string() == *expected,
            (Matcher::Equals(expected), AttributeValue::Bool(b)) => b.to_string() == *expected,
            (Matcher::Regex(re), value) => value.as_str().is_some_and(|s| re.is_match(s)),
            (Matcher::Range { min, max }, AttributeValue::Int(i)) => in_range(i as f64, *min, *max),
            (Matcher::Range { min, max }, AttributeValue::Double(d)) => in_range(d, *min, *max),
            (Matcher::Bool(expected), AttributeValue::Bool(b)) => b == *expected,
            _ => false,
        }
    }

    /// Exactly one of `equals`, `regex`, `min`/`max` or `bool`, as a section of topology.yaml gives
    /// them (at `at`).
    pub fn validate(at: &str, given: RawMatcher<'_>, problems: &mut Problems) -> Option<Matcher> {
        let RawMatcher { equals, regex, min, max, bool } = given;
        let kinds = [equals.is_some(), regex.is_some(), min.is_some() || max.is_some(), bool.is_some()];
        if kinds.iter().filter(|given| **given).count() != 1 {
            problems.add(at, "an attribute condition takes exactly one of equals, regex, min/max, bool");
            return None;
        }
        if let Some(value) = equals {
            return match scalar_text(value) {
                Some(text) => Some(Matcher::Equals(text)),
                None => {
                    problems.add(format!("{at}.equals"), "must be a string, number or boolean");
                    None
                }
            };
        }
        if let Some(pattern) = regex {
            return match Regex::new(pattern) {
                Ok(re) => Some(Matcher::Regex(re)),
                Err(e) => {
                    problems.add(format!("{at}.regex"), format!("invalid regex: {e}"));
                    None
                }
            };
        }
        if let Some(b) = bool {
            return Some(Matcher::Bool(b));
        }
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                problems.add(at, format!("min ({min}) is above max ({max})"));
                return None;
            }
        }
        Some(Matcher::Range { min, max })
    }
}

fn in_range(v: f64, min: Option<f64>, max: Option<f64>) -> bool {
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
}

/// A [`Matcher`]'s fields as a raw section has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawMatcher<'a> {
    pub equals: Option<&'a Value>,
    pub regex: Option<&'a str>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bool: Option<bool>,
}

/// Which spans of a trace an [`AttributeCondition`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeScope {
    AnySpan,
    /// The trace's root ([`TraceView::root`]).
    Root,
}

impl AttributeScope {
    /// `any` (the default) or `root`.
    pub fn validate(at: String, given: Option<&str>, problems: &mut Problems) -> Option<AttributeScope> {
        match given {
            None | Some("any") => Some(AttributeScope::AnySpan),
            Some("root") => Some(AttributeScope::Root),
            Some(other) => {
                problems.add(at, format!("`{other}` is not `any` or `root`"));
                None
            }
        }
    }
}

/// The attribute `key` compared by `matcher`, on the spans `scope` names.
#[derive(Debug, Clone)]
pub struct AttributeCondition {
    pub key: String,
    pub matcher: Matcher,
    pub scope: AttributeScope,
}

impl AttributeCondition {
    /// Whether `span`, or the resource it came from, has a matching value of the attribute.
    pub fn matches_span(&self, trace: &TraceView<'_>, span: &SpanView<'_>) -> bool {
        span.attribute(&self.key).is_some_and(|value| self.matcher.matches(value))
            || trace.resource_attribute(span, &self.key).is_some_and(|value| self.matcher.matches(value))
    }

    /// Whether the trace matches: its root, or any of its spans, as the scope says. `root` is
    /// [`TraceView::root`], passed in by callers that already looked it up.
    pub fn matches_trace(&self, trace: &TraceView<'_>, root: Option<usize>) -> bool {
        match self.scope {
            AttributeScope::Root => root.is_some_and(|root| self.matches_span(trace, &trace.spans[root])),
            AttributeScope::AnySpan => {
                // A trace's spans share a few resources: each is read once, when a span of it
                // does not match on its own.
                let mut resource_matches: Vec<Option<bool>> = Vec::new();
                trace.spans.iter().any(|span| {
                    span.attribute(&self.key).is_some_and(|value| self.matcher.matches(value)) || {
                        let index = span.resource as usize;
                        if resource_matches.len() <= index {
                            resource_matches.resize(index + 1, None);
                        }
                        *resource_matches[index].get_or_insert_with(|| trace.resource_attribute(span, &self.key).is_some_and(|value| self.matcher.matches(value)))
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matcher_takes_one_way_of_comparing() {
        let mut problems = Problems::default();
        let ten = Value::from(10);
        assert!(matches!(Matcher::validate("r", RawMatcher { equals: Some(&ten), ..Default::default() }, &mut problems), Some(Matcher::Equals(t)) if t == "10"));
        assert!(Matcher::validate("r", RawMatcher { equals: Some(&ten), bool: Some(true), ..Default::default() }, &mut problems).is_none());
        assert!(Matcher::validate("s", RawMatcher { min: Some(5.0), max: Some(1.0), ..Default::default() }, &mut problems).is_none());
        assert!(Matcher::validate("t", RawMatcher { regex: Some("("), ..Default::default() }, &mut problems).is_none());
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("r: an attribute condition takes exactly one of"));
        assert_eq!(messages[1], "s: min (5) is above max (1)");
        assert!(messages[2].starts_with("t.regex: invalid regex"));
        assert!(Matcher::Range { min: Some(500.0), max: None }.matches(AttributeValue::Int(503)));
        assert!(!Matcher::Equals("200".into()).matches(AttributeValue::Int(201)));
    }
}
