//! Business transactions and funnels as topology.yaml's `transactions:` and `funnels:` define them.
//!
//! A transaction is a request that enters at a span its entry rule selects (service, operation or
//! route pattern, span kind, attribute conditions: the selector SLOs use), optionally split by
//! the value of an attribute, with business metrics taken from attributes (a numeric one summed,
//! averaged, its minimum, maximum and histogram; counts by the value of another) and named steps
//! within its trace, each with its latency and failures. The analyzer counts them on every trace.
//!
//! A funnel follows one correlation value (e.g. `cart.id`) across separate traces through its
//! steps, in order, within a join window: the analyzer publishes each matching span as a step
//! keyed by the value, and the funnels processor joins them.
//!
//! ```yaml
//! transactions:
//!   - name: checkout
//!     entry: { service: frontend, operation: "GET /checkout", span_kind: server }
//!     split_by: { attribute: order.type, max_values: 20 }
//!     metrics: [ { name: order-amount, attribute: order.amount } ]
//!     count_by: [ { attribute: payment.method } ]
//!     steps:
//!       - { name: place-order, service: checkout, operation: "POST /orders" }
//! funnels:
//!   - name: purchase
//!     correlation: cart.id
//!     join_window: 30m
//!     steps:
//!       - { name: add-to-cart, service: frontend, operation: "POST /cart" }
//!       - { name: checkout, service: frontend, operation: "GET /checkout" }
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_processor::config::{read, required, Problems};
use tracepipe_schemas::trace_view::{AttributeValue, SpanView, TraceView};

use crate::slo::{validate_events, EventSelector, RawCondition, RawEvents};

/// Selects spans: of `service`, by the [`EventSelector`]'s conditions.
#[derive(Debug, Clone)]
pub struct SpanRule {
    pub service: String,
    pub selector: EventSelector,
}

impl SpanRule {
    pub fn matches(&self, trace: &TraceView<'_>, span_index: usize, root: Option<usize>) -> bool {
        self.selector.matches(&self.service, trace, span_index, root)
    }
}

#[derive(Debug, Clone)]
pub struct NamedRule {
    pub name: String,
    pub rule: SpanRule,
}

/// An attribute whose values split or count a transaction, with a cap on distinct values.
#[derive(Debug, Clone)]
pub struct AttributeSplit {
    pub attribute: String,
    pub max_values: usize,
}

#[derive(Debug, Clone)]
pub struct ValueMetric {
    pub name: String,
    pub attribute: String,
}

#[derive(Debug, Clone)]
pub struct TransactionSpec {
    pub name: String,
    pub description: String,
    pub entry: SpanRule,
    pub split_by: Option<AttributeSplit>,
    pub metrics: Vec<ValueMetric>,
    pub count_by: Vec<AttributeSplit>,
    pub steps: Vec<NamedRule>,
}

#[derive(Debug, Clone)]
pub struct FunnelSpec {
    pub name: String,
    pub description: String,
    /// The attribute (of a step's span or its resource) that ties a journey's traces together;
    /// a baggage entry reaches spans as one through the SDK's baggage span processor.
    pub correlation: String,
    pub join_window: Duration,
    pub steps: Vec<NamedRule>,
}

/// Distinct values a split or count keeps unless `max_values` says otherwise.
pub const DEFAULT_MAX_VALUES: usize = 100;
/// The longest correlation value a funnel keeps; a longer one is not joined (it is no id).
pub const MAX_CORRELATION_BYTES: usize = 256;

/// Where a transaction looks for an attribute of its entry: the entry span, its resource, then
/// the spans below it in the trace (a business attribute is often set by the service that
/// handles it), the first that has it. `below` are the entry's descendants, in the order given.
pub fn entry_attribute<'a>(trace: &TraceView<'a>, entry: &SpanView<'a>, below: impl Iterator<Item = usize>, key: &str) -> Option<AttributeValue<'a>> {
    if let Some(value) = entry.attribute(key).or_else(|| trace.resource_attribute(entry, key)) {
        return Some(value);
    }
    for index in below {
        let span = &trace.spans[index];
        if let Some(value) = span.attribute(key).or_else(|| trace.resource_attribute(span, key)) {
            return Some(value);
        }
    }
    None
}

/// A numeric attribute value: ints, doubles, and strings that parse as numbers.
pub fn number(value: AttributeValue<'_>) -> Option<f64> {
    let number = match value {
        AttributeValue::Int(i) => i as f64,
        AttributeValue::Double(d) => d,
        AttributeValue::Str(_) => value.as_str()?.trim().parse().ok()?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

/// An attribute value as a label: strings as they are, numbers and booleans as written.
pub fn text(value: AttributeValue<'_>) -> Option<String> {
    Some(match value {
        AttributeValue::Str(_) => value.as_str()?.to_string(),
        AttributeValue::Int(i) => i.to_string(),
        AttributeValue::Double(d) => d.to_string(),
        AttributeValue::Bool(b) => b.to_string(),
        AttributeValue::Other => return None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    service: Option<String>,
    #[serde(default)]
    root: bool,
    operation: Option<String>,
    operation_regex: Option<String>,
    span_kind: Option<String>,
    #[serde(default)]
    attributes: Vec<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    attribute: Option<String>,
    max_values: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: Option<String>,
    attribute: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransaction {
    name: Option<String>,
    #[serde(default)]
    description: String,
    entry: Option<RawRule>,
    split_by: Option<RawSplit>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
    #[serde(default)]
    count_by: Vec<RawSplit>,
    #[serde(default)]
    steps: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunnel {
    name: Option<String>,
    #[serde(default)]
    description: String,
    correlation: Option<String>,
    #[serde(default, with = "humantime_serde")]
    join_window: Option<Duration>,
    #[serde(default)]
    steps: Vec<RawRule>,
}

fn validate_name(at: String, name: &Option<String>, problems: &mut Problems) -> Option<String> {
    let name = required(at.clone(), name, problems)?;
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        problems.add(at, format!("`{name}` must be 1 to 128 letters, digits, `-`, `_` or `.`"));
        return None;
    }
    Some(name)
}

fn validate_rule(at: &str, raw: RawRule, named: bool, problems: &mut Problems) -> Option<(Option<String>, SpanRule)> {
    let name = if named {
        validate_name(format!("{at}.name"), &raw.name, problems)
    } else {
        if raw.name.is_some() {
            problems.add(format!("{at}.name"), "an entry takes no name: the transaction's name is its name");
        }
        None
    };
    let service = required(format!("{at}.service"), &raw.service, problems);
    let events = RawEvents { root: raw.root, operation: raw.operation, operation_regex: raw.operation_regex, span_kind: raw.span_kind, attributes: raw.attributes };
    let selector = validate_events(at, &events, problems);
    if named && name.is_none() {
        return None;
    }
    Some((name, SpanRule { service: service?, selector: selector? }))
}

fn validate_steps(at: &str, raw: Vec<RawRule>, problems: &mut Problems) -> Vec<NamedRule> {
    let mut steps: Vec<NamedRule> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        let Some((Some(name), rule)) = validate_rule(&at, raw, true, problems) else { continue };
        if steps.iter().any(|step| step.name == name) {
            problems.add(format!("{at}.name"), format!("`{name}` names another step too"));
            continue;
        }
        steps.push(NamedRule { name, rule });
    }
    steps
}

fn validate_split(at: &str, raw: &RawSplit, problems: &mut Problems) -> Option<AttributeSplit> {
    let attribute = required(format!("{at}.attribute"), &raw.attribute, problems);
    let max_values = match raw.max_values {
        None => DEFAULT_MAX_VALUES,
        Some(n @ 1..=10_000) => n as usize,
        Some(n) => {
            problems.add(format!("{at}.max_values"), format!("must be between 1 and 10000, got {n}"));
            return None;
        }
    };
    Some(AttributeSplit { attribute: attribute?, max_values })
}

/// Reads and validates the `transactions:` section (a list), reporting each problem with its path.
pub fn validate_transactions(path: &str, value: Option<Value>, problems: &mut Problems) -> Vec<TransactionSpec> {
    let Some(value) = value else { return Vec::new() };
    let Some(raw) = read::<Vec<RawTransaction>>(path, value, problems) else { return Vec::new() };
    let mut transactions: Vec<TransactionSpec> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let at = format!("{path}[{index}]");
        let name = validate_name(format!("{at}.name"), &raw.name, problems);
        let entry = match raw.entry {
            None => {
                problems.add(format!("{at}.entry"), "is required: the span where the transaction begins (service, operation, ...)");
                None
            }
            Some(entry) => validate_rule(&format!("{at}.entry"), entry, false, problems).map(|(_, rule)| rule),
        };
        let split_by = raw.split_by.as_ref().map(|split| validate_split(&format!("{at}.split_by"), split, problems));
        let mut metrics: Vec<ValueMetric> = Vec::new();
        for (i, metric) in raw.metrics.iter().enumerate() {
            let name = validate_name(format!("{at}.metrics[{i}].name"), &metric.name, problems);
            let attribute = required(format!("{at}.metrics[{i}].attribute"), &metric.attribute, problems);
            if let (Some(name), Some(attribute)) = (name, attribute) {
                if metrics.iter().any(|m| m.name == name) {
                    problems.add(format!("{at}.metrics[{i}].name"), format!("`{name}` names another metric too"));
                } else {
                    metrics.push(ValueMetric { name, attribute });
                }
            }
        }
        let count_by: Vec<Option<AttributeSplit>> = raw.count_by.iter().enumerate().map(|(i, split)| validate_split(&format!("{at}.count_by[{i}]"), split, problems)).collect();
        let steps = validate_steps(&format!("{at}.steps"), raw.steps, problems);
        let (Some(name), Some(entry)) = (name, entry) else { continue };
        let (Some(split_by), Some(count_by)) = (split_by.map_or(Some(None), |s| s.map(Some)), count_by.into_iter().collect::<Option<Vec<_>>>()) else { continue };
        if transactions.iter().any(|other| other.name == name) {
            problems.add(format!("{at}.name"), format!("`{name}` names another transaction too"));
            continue;
        }
        transactions.push(TransactionSpec { name, description: raw.description, entry, split_by, metrics, count_by, steps });
    }
    transactions
}

/// Reads and validates the `funnels:` section (a list), reporting each problem with its path.
pub fn validate_funnels(path: &str, value: Option<Value>, problems: &mut Problems) -> Vec<FunnelSpec> {
    let Some(value) = value else { return Vec::new() };
    let Some(raw) = read::<Vec<RawFunnel>>(path, value, problems) else { return Vec::new() };
    let mut funnels: Vec<FunnelSpec> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let at = format!("{path}[{index}]");
        let name = validate_name(format!("{at}.name"), &raw.name, problems);
        let correlation = required(format!("{at}.correlation"), &raw.correlation, problems);
        let join_window = match raw.join_window {
            None => Some(Duration::from_secs(30 * 60)),
            Some(window) if window >= Duration::from_secs(1) && window <= Duration::from_secs(7 * 86_400) => Some(window),
            Some(window) => {
                problems.add(format!("{at}.join_window"), format!("must be between 1s and 7d, got {}", humantime::format_duration(window)));
                None
            }
        };
        let given = raw.steps.len();
        let steps = validate_steps(&format!("{at}.steps"), raw.steps, problems);
        if given < 2 {
            problems.add(format!("{at}.steps"), "a funnel needs at least two steps");
            continue;
        }
        if given > 32 {
            problems.add(format!("{at}.steps"), format!("a funnel takes at most 32 steps, got {given}"));
            continue;
        }
        let (Some(name), Some(correlation), Some(join_window)) = (name, correlation, join_window) else { continue };
        if steps.len() != given {
            continue;
        }
        if funnels.iter().any(|other| other.name == name) {
            problems.add(format!("{at}.name"), format!("`{name}` names another funnel too"));
            continue;
        }
        funnels.push(FunnelSpec { name, description: raw.description, correlation, join_window, steps });
    }
    funnels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(transactions: &str, funnels: &str) -> (usize, usize, Vec<String>) {
        let mut problems = Problems::default();
        let t = validate_transactions("transactions", Some(serde_yaml_ng::from_str(transactions).unwrap()), &mut problems);
        let f = validate_funnels("funnels", Some(serde_yaml_ng::from_str(funnels).unwrap()), &mut problems);
        (t.len(), f.len(), problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn definitions_take_the_shared_selector_and_report_problems_by_path() {
        let (t, f, problems) = problems_of(
            "- name: checkout\n  entry: { service: frontend, operation: GET /checkout, span_kind: server }\n  split_by: { attribute: order.type, max_values: 5 }\n  metrics: [ { name: amount, attribute: order.amount } ]\n  count_by: [ { attribute: payment.method } ]\n  steps: [ { name: order, service: checkout, operation: POST /orders } ]\n",
            "- name: purchase\n  correlation: cart.id\n  steps: [ { name: a, service: frontend, operation: POST /cart }, { name: b, service: frontend, operation: GET /checkout } ]\n",
        );
        assert_eq!((t, f), (1, 1), "{problems:?}");
        assert!(problems.is_empty(), "{problems:?}");
        let (t, f, problems) = problems_of(
            "- name: x\n  entry: { name: e, operation_regex: '(', span_kind: sideways }\n  split_by: { max_values: 0 }\n  metrics: [ { name: a b } ]\n  steps: [ { service: s }, { name: s, service: s, extra: 1 } ]\n- name: x\n  entry: { service: s }\n- name: x\n  entry: { service: s }\n",
            "- name: one\n  correlation: cart.id\n  steps: [ { name: a, service: s } ]\n- name: w\n  join_window: 0s\n  steps: [ { name: a, service: s }, { name: b, service: s } ]\n",
        );
        assert_eq!((t, f), (1, 0), "{problems:?}");
        for expected in [
            "transactions[0].entry.name: an entry takes no name",
            "transactions[0].entry.service: is required",
            "transactions[0].entry.operation_regex: invalid regex",
            "transactions[0].split_by.attribute: is required",
            "transactions[0].split_by.max_values: must be between 1 and 10000, got 0",
            "transactions[0].metrics[0].name: `a b` must be",
            "transactions[0].metrics[0].attribute: is required",
            "transactions[0].steps[0].name: is required",
            "transactions[0].steps[1].extra: unknown key",
            "transactions[2].name: `x` names another transaction too",
            "funnels[0].steps: a funnel needs at least two steps",
            "funnels[1].correlation: is required",
            "funnels[1].join_window: must be between 1s and 7d, got 0s",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(expected)), "missing `{expected}` in {problems:#?}");
        }
    }
}
