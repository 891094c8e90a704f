//! Service-level objectives as topology.yaml's `slos:` defines them, with the fields of the
//! OpenSLO specification where they fit: which spans are events, what makes an event good (the
//! SLI), the objective over a window, and the burn-rate alerts.
//!
//! Defaults follow the SRE workbook's multiwindow, multi-burn-rate alerts: page at 14.4× over 1h
//! and 5m and at 6× over 6h and 30m, ticket at 1× over 3d and 6h; an alert fires only while both
//! of its windows burn faster than its rate.
//!
//! ```yaml
//! slos:
//!   - name: checkout-availability
//!     service: checkout
//!     events: { operation: "POST /checkout", span_kind: server }
//!     sli: { availability: true, latency: 800ms }
//!     objective: 99.5
//!     window: 28d
//! ```

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value;
use tracepipe_processor::config::{read, Problems};
use tracepipe_schemas::trace_view::{SpanView, TraceView};

use crate::matcher::{AttributeCondition, AttributeScope, Matcher, RawMatcher};

/// One validated SLO.
#[derive(Debug, Clone)]
pub struct SloSpec {
    pub name: String,
    pub service: String,
    pub description: String,
    pub events: EventSelector,
    pub sli: Sli,
    /// The fraction of events that must be good, e.g. 0.999.
    pub objective: f64,
    pub window: SloWindow,
    pub alerting: Vec<BurnRateAlert>,
}

/// Which spans of a trace are the SLO's events.
#[derive(Debug, Clone)]
pub struct EventSelector {
    /// Only the trace's root span (the request as its first service saw it).
    pub root: bool,
    /// The span name (operation), exact or by regex; any when absent.
    pub operation: Option<Matcher>,
    /// OTLP span kind (1 internal … 5 consumer); any when absent.
    pub span_kind: Option<u8>,
    /// All must match, on the span or its resource.
    pub attributes: Vec<AttributeCondition>,
}

impl EventSelector {
    /// Whether span `span_index` of `trace`, of `service`, is selected (`root` is [`TraceView::root`]).
    pub fn matches(&self, service: &str, trace: &TraceView<'_>, span_index: usize, root: Option<usize>) -> bool {
        let span = &trace.spans[span_index];
        (!self.root || root == Some(span_index))
            && self.span_kind.is_none_or(|kind| kind == span.kind)
            && trace.service(span) == service
            && self.operation.as_ref().is_none_or(|operation| operation.matches(tracepipe_schemas::trace_view::AttributeValue::Str(span.name.as_bytes())))
            && self.attributes.iter().all(|condition| condition.matches_span(trace, span))
    }
}

/// What makes an event good: every condition given holds.
#[derive(Debug, Clone, Default)]
pub struct Sli {
    /// The span is not an error (status ERROR or an exception event).
    pub availability: bool,
    /// The span lasts at most this long.
    pub latency: Option<Duration>,
    /// The span is bad when any of these matches (e.g. `http.response.status_code` ≥ 500).
    pub bad_when: Vec<AttributeCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SloWindow {
    Rolling(Duration),
    /// The calendar month (UTC) the evaluation falls in.
    CalendarMonth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSeverity {
    Page,
    Ticket,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Page => "page",
            AlertSeverity::Ticket => "ticket",
        }
    }
}

/// Fires while the error rate over both windows exceeds `burn_rate` times the rate the objective allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRateAlert {
    pub severity: AlertSeverity,
    pub burn_rate: f64,
    pub long: Duration,
    pub short: Duration,
}

/// The SRE workbook's multiwindow, multi-burn-rate alerts.
pub fn default_alerting() -> Vec<BurnRateAlert> {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let minutes = |m: u64| Duration::from_secs(m * 60);
    vec![
        BurnRateAlert { severity: AlertSeverity::Page, burn_rate: 14.4, long: hours(1), short: minutes(5) },
        BurnRateAlert { severity: AlertSeverity::Page, burn_rate: 6.0, long: hours(6), short: minutes(30) },
        BurnRateAlert { severity: AlertSeverity::Ticket, burn_rate: 1.0, long: hours(72), short: hours(6) },
    ]
}

/// Traces with bad events the analyzer names per SLO, window and segment, and the sampler keeps
/// so that the alerts' links open a stored trace.
pub const BAD_EXEMPLARS: usize = 5;

impl SloSpec {
    /// Whether `trace` holds a bad event of this SLO.
    pub fn has_bad_event(&self, trace: &TraceView<'_>, root: Option<usize>) -> bool {
        (0..trace.spans.len()).any(|i| self.is_event(trace, i, root) && !self.is_good(trace, &trace.spans[i]))
    }

    /// Whether `span` of `trace` is one of this SLO's events (`root` is [`TraceView::root`]).
    pub fn is_event(&self, trace: &TraceView<'_>, span_index: usize, root: Option<usize>) -> bool {
        self.events.matches(&self.service, trace, span_index, root)
    }

    /// Whether an event is good.
    pub fn is_good(&self, trace: &TraceView<'_>, span: &SpanView<'_>) -> bool {
        let sli = &self.sli;
        !(sli.availability && span.is_error())
            && sli.latency.is_none_or(|limit| span.duration_nanos() <= limit.as_nanos() as u64)
            && !sli.bad_when.iter().any(|condition| condition.matches_span(trace, span))
    }

    /// The rate of bad events the objective allows.
    pub fn error_budget(&self) -> f64 {
        round12(1.0 - self.objective)
    }

    /// The longest window evaluated: the SLO's window or the longest alerting window.
    pub fn longest_window(&self) -> Duration {
        let window = match self.window {
            SloWindow::Rolling(window) => window,
            SloWindow::CalendarMonth => Duration::from_secs(31 * 86_400),
        };
        self.alerting.iter().map(|alert| alert.long).fold(window, Duration::max)
    }
}

/// `value` to twelve decimals: what a percentage written in a file means.
fn round12(value: f64) -> f64 {
    (value * 1e12).round() / 1e12
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    name: Option<String>,
    service: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    events: RawEvents,
    sli: Option<RawSli>,
    objective: Option<f64>,
    window: Option<String>,
    alerting: Option<Vec<RawBurnRateAlert>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvents {
    #[serde(default)]
    pub(crate) root: bool,
    pub(crate) operation: Option<String>,
    pub(crate) operation_regex: Option<String>,
    pub(crate) span_kind: Option<String>,
    #[serde(default)]
    pub(crate) attributes: Vec<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSli {
    #[serde(default)]
    availability: bool,
    #[serde(default, with = "humantime_serde")]
    latency: Option<Duration>,
    #[serde(default)]
    bad_when: Vec<RawCondition>,
}

/// An attribute condition: `key` and one of `equals`, `regex`, `min`/`max`, `bool`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    key: Option<String>,
    equals: Option<Value>,
    regex: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    bool: Option<bool>,
}

impl RawCondition {
    /// The condition at `at`, matched on the span itself or its resource.
    pub fn validate(&self, at: &str, problems: &mut Problems) -> Option<AttributeCondition> {
        let key = tracepipe_processor::config::required(format!("{at}.key"), &self.key, problems)?;
        let given = RawMatcher { equals: self.equals.as_ref(), regex: self.regex.as_deref(), min: self.min, max: self.max, bool: self.bool };
        let matcher = Matcher::validate(at, given, problems)?;
        Some(AttributeCondition { key, matcher, scope: AttributeScope::AnySpan })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurnRateAlert {
    severity: Option<String>,
    burn_rate: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    long: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    short: Option<Duration>,
}

/// OTLP span kinds by the names topology.yaml accepts (`server`, or `SPAN_KIND_SERVER`).
pub fn span_kind(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("span_kind_").unwrap_or(&name);
    Some(match name {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => return None,
    })
}

/// Reads and validates the `slos:` section (a list), reporting each problem with its path.
pub fn validate_slos(path: &str, value: Option<Value>, problems: &mut Problems) -> Vec<SloSpec> {
    let Some(value) = value else { return Vec::new() };
    let Some(raw) = read::<Vec<RawSlo>>(path, value, problems) else { return Vec::new() };
    let mut slos: Vec<SloSpec> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let at = format!("{path}[{index}]");
        let Some(slo) = validate_slo(&at, raw, problems) else { continue };
        if slos.iter().any(|other| other.name == slo.name) {
            problems.add(format!("{at}.name"), format!("`{}` names another SLO too", slo.name));
            continue;
        }
        slos.push(slo);
    }
    slos
}

fn validate_slo(at: &str, raw: RawSlo, problems: &mut Problems) -> Option<SloSpec> {
    let name = tracepipe_processor::config::required(format!("{at}.name"), &raw.name, problems);
    if let Some(name) = &name {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            problems.add(format!("{at}.name"), format!("`{name}` must be 1 to 128 letters, digits, `-`, `_` or `.`"));
        }
    }
    let service = tracepipe_processor::config::required(format!("{at}.service"), &raw.service, problems);
    let events = validate_events(&format!("{at}.events"), &raw.events, problems);
    let sli = match raw.sli {
        None => {
            problems.add(format!("{at}.sli"), "is required: availability, latency, bad_when or a mix");
            None
        }
        Some(sli) => validate_sli(&format!("{at}.sli"), sli, problems),
    };
    let objective = match raw.objective {
        None => {
            problems.add(format!("{at}.objective"), "is required: the percentage of good events, e.g. 99.9");
            None
        }
        // Rounded, so 99.9 is 0.999 rather than 0.9990000000000001 in metrics and rules.
        Some(percent) if percent > 0.0 && percent < 100.0 => Some(round12(percent / 100.0)),
        Some(percent) => {
            problems.add(format!("{at}.objective"), format!("must be a percentage above 0 and below 100, got {percent}"));
            None
        }
    };
    let window = match raw.window.as_deref().map(str::trim) {
        None => Some(SloWindow::Rolling(Duration::from_secs(28 * 86_400))),
        Some("calendar_month" | "month") => Some(SloWindow::CalendarMonth),
        Some(text) => match humantime::parse_duration(text) {
            Ok(window) if window >= Duration::from_secs(3600) && window <= Duration::from_secs(400 * 86_400) => Some(SloWindow::Rolling(window)),
            Ok(_) => {
                problems.add(format!("{at}.window"), format!("`{text}` must be between 1h and 400d"));
                None
            }
            Err(error) => {
                problems.add(format!("{at}.window"), format!("`{text}` is not a duration (e.g. 28d) or calendar_month: {error}"));
                None
            }
        },
    };
    let raw_alerting_given = raw.alerting.is_some();
    let alerting = match raw.alerting {
        None => default_alerting(),
        Some(alerts) => alerts.into_iter().enumerate().filter_map(|(index, alert)| validate_alert(&format!("{at}.alerting[{index}]"), alert, problems)).collect(),
    };
    let mut alerts_can_fire = true;
    if let Some(objective) = objective {
        // An error ratio cannot pass 1: a rate that would need more never fires.
        for (index, alert) in alerting.iter().enumerate() {
            if alert.burn_rate * (1.0 - objective) >= 1.0 {
                let at = if raw_alerting_given { format!("{at}.alerting[{index}].burn_rate") } else { format!("{at}.objective") };
                problems.add(at, format!("a burn rate of {} needs an error ratio above {:.2}, which cannot happen: the {} alert would never fire", alert.burn_rate, alert.burn_rate * (1.0 - objective), alert.severity.as_str()));
                alerts_can_fire = false;
            }
        }
    }
    if !alerts_can_fire {
        return None;
    }
    Some(SloSpec { name: name?, service: service?, description: raw.description, events: events?, sli: sli?, objective: objective?, window: window?, alerting })
}

pub(crate) fn validate_events(at: &str, raw: &RawEvents, problems: &mut Problems) -> Option<EventSelector> {
    let operation = match (&raw.operation, &raw.operation_regex) {
        (Some(_), Some(_)) => {
            problems.add(at, "takes operation or operation_regex, not both");
            return None;
        }
        (Some(name), None) => Some(Matcher::Equals(name.clone())),
        // Checked alone first, so a pattern cannot close the group that anchors it.
        (None, Some(pattern)) => match Regex::new(pattern).and_then(|_| Regex::new(&format!("^(?:{pattern})$"))) {
            Ok(re) => Some(Matcher::Regex(re)),
            Err(error) => {
                problems.add(format!("{at}.operation_regex"), format!("invalid regex: {error}"));
                return None;
            }
        },
        (None, None) => None,
    };
    let span_kind = match raw.span_kind.as_deref() {
        None => None,
        Some(name) => match span_kind(name) {
            Some(kind) => Some(kind),
            None => {
                problems.add(format!("{at}.span_kind"), format!("`{name}` is not server, client, producer, consumer or internal"));
                return None;
            }
        },
    };
    let mut attributes = Vec::new();
    for (index, condition) in raw.attributes.iter().enumerate() {
        attributes.push(condition.validate(&format!("{at}.attributes[{index}]"), problems)?);
    }
    Some(EventSelector { root: raw.root, operation, span_kind, attributes })
}

fn validate_sli(at: &str, raw: RawSli, problems: &mut Problems) -> Option<Sli> {
    if !raw.availability && raw.latency.is_none() && raw.bad_when.is_empty() {
        problems.add(at, "names no condition: give availability: true, latency (e.g. 300ms), bad_when, or a mix");
        return None;
    }
    if raw.latency.is_some_and(|latency| latency.is_zero()) {
        problems.add(format!("{at}.latency"), "must be longer than zero");
        return None;
    }
    let mut bad_when = Vec::new();
    for (index, condition) in raw.bad_when.iter().enumerate() {
        bad_when.push(condition.validate(&format!("{at}.bad_when[{index}]"), problems)?);
    }
    Some(Sli { availability: raw.availability, latency: raw.latency, bad_when })
}

fn validate_alert(at: &str, raw: RawBurnRateAlert, problems: &mut Problems) -> Option<BurnRateAlert> {
    let severity = match raw.severity.as_deref() {
        Some("page") => Some(AlertSeverity::Page),
        Some("ticket") => Some(AlertSeverity::Ticket),
        other => {
            problems.add(format!("{at}.severity"), format!("must be page or ticket, got {}", other.unwrap_or("nothing")));
            None
        }
    };
    let burn_rate = match raw.burn_rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => Some(rate),
        other => {
            problems.add(format!("{at}.burn_rate"), format!("must be a number above 0, got {}", other.map_or("nothing".to_string(), |r| r.to_string())));
            None
        }
    };
    let window = |field: &str, value: Option<Duration>, problems: &mut Problems| match value {
        Some(window) if window >= Duration::from_secs(60) && window.as_secs() % 60 == 0 => Some(window),
        Some(window) => {
            problems.add(format!("{at}.{field}"), format!("must be whole minutes, at least 1m, got {}", humantime::format_duration(window)));
            None
        }
        None => {
            problems.add(format!("{at}.{field}"), "is required (e.g. 1h)");
            None
        }
    };
    let (long, short) = (window("long", raw.long, problems), window("short", raw.short, problems));
    if let (Some(long), Some(short)) = (long, short) {
        if short >= long {
            problems.add(format!("{at}.short"), "must be shorter than long");
            return None;
        }
    }
    Some(BurnRateAlert { severity: severity?, burn_rate: burn_rate?, long: long?, short: short? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Vec<SloSpec>, Vec<String>) {
        let mut problems = Problems::default();
        let slos = validate_slos("slos", Some(serde_yaml_ng::from_str(yaml).unwrap()), &mut problems);
        (slos, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn an_slo_takes_the_workbook_alerts_by_default() {
        let (slos, problems) = parse(
            "- name: checkout-availability\n  service: checkout\n  events: { operation: POST /checkout, span_kind: server }\n  sli: { availability: true, latency: 800ms }\n  objective: 99.5\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let slo = &slos[0];
        assert_eq!(slo.objective, 0.995);
        assert_eq!(slo.window, SloWindow::Rolling(Duration::from_secs(28 * 86_400)));
        assert_eq!(slo.alerting, default_alerting());
        assert_eq!(slo.sli.latency, Some(Duration::from_millis(800)));
        assert_eq!(slo.events.span_kind, Some(2));
        assert!((slo.error_budget() - 0.005).abs() < 1e-12);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let (slos, problems) = parse(
            "- name: a\n  service: s\n  sli: {}\n  objective: 100\n  window: 5m\n  extra: 1\n- name: b\n  service: s\n  events: { span_kind: sideways, operation_regex: '(' }\n  sli: { latency: 0s }\n  objective: 99\n  alerting: [ { severity: pager, burn_rate: 0, long: 5m, short: 1h } ]\n- name: c\n  service: s\n  sli: { availability: true }\n  objective: 99\n  window: calendar_month\n- name: c\n  service: t\n  sli: { availability: true }\n  objective: 99\n- name: d\n  service: s\n  sli: { availability: true }\n  objective: 90\n- name: e\n  service: s\n  events: { operation_regex: 'a)|(?:b' }\n  sli: { availability: true }\n  objective: 99\n",
        );
        assert_eq!(slos.len(), 1, "{problems:?}");
        assert_eq!(slos[0].window, SloWindow::CalendarMonth);
        let expected = [
            "slos[0].extra: unknown key",
            "slos[0].sli: names no condition",
            "slos[0].objective: must be a percentage above 0 and below 100, got 100",
            "slos[0].window: `5m` must be between 1h and 400d",
            "slos[1].events.operation_regex: invalid regex",
            "slos[1].sli.latency: must be longer than zero",
            "slos[1].alerting[0].severity: must be page or ticket, got pager",
            "slos[1].alerting[0].burn_rate: must be a number above 0, got 0",
            "slos[1].alerting[0].short: must be shorter than long",
            "slos[3].name: `c` names another SLO too",
            "slos[4].objective: a burn rate of 14.4 needs an error ratio above 1.44",
            "slos[5].events.operation_regex: invalid regex",
        ];
        for expected in expected {
            assert!(problems.iter().any(|p| p.starts_with(expected)), "missing `{expected}` in {problems:#?}");
        }
    }
}
