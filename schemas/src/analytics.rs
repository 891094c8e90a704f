//! The JSON records the analyzer and the dependencies processor publish: rollups
//! (`tracepipe.rollups`), edge windows (`tracepipe.edges`) and alerts (`tracepipe.alerts`).
//!
//! Each record names its schema and version in `schema`. Windows are aligned to their length
//! (`window_start_unix_ms` is a multiple of `window_seconds` × 1000) and hold what one processor
//! instance saw of that window: with several instances, records of the same window and key are
//! partial and add up (counts, sums and the sparse latency histograms all merge exactly).

use serde::{Deserialize, Serialize};

pub const ROLLUP_SCHEMA: &str = "tracepipe.rollup/v1";
pub const EDGE_SCHEMA: &str = "tracepipe.edge/v1";
pub const ALERT_SCHEMA: &str = "tracepipe.alert/v1";

/// A latency histogram as (bucket value in microseconds, count) pairs, ascending; the buckets are
/// HDR buckets with two significant digits, so recording each value `count` times rebuilds it.
pub type SparseHistogram = Vec<(u64, u64)>;

/// Where a windowed record was counted: a segment of one input partition (the records from one
/// advance of the partition's event-time watermark to the next, see `tracepipe_analytics::segments`).
/// With the window and the series it is the record's identity ([`Rollup::record_key`],
/// [`EdgeWindow::record_key`]): a replay publishes the same records under the same keys.
/// `records` orders the versions of one key: a segment published while still open covers fewer
/// records than when it closes, and the version covering more replaces the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedIn {
    pub topic: String,
    pub partition: i32,
    /// The segment's first offset.
    pub first_offset: i64,
    /// The segment's first record's timestamp, when it had one: two incarnations of a topic
    /// (an embedded broker restarted) both start at offset 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp_ms: Option<i64>,
    /// Input records the segment covered when this was published.
    pub records: u64,
    /// The window is behind the partition's watermark: the traces in this record came late.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

impl CountedIn {
    fn key(&self) -> (&str, i32, i64, Option<i64>) {
        (&self.topic, self.partition, self.first_offset, self.first_timestamp_ms)
    }
}

/// A key of parts, written as a JSON array so that no value can run into the next.
fn key_of(parts: impl Serialize) -> String {
    serde_json::to_string(&parts).expect("keys serialize")
}

/// A record of `tracepipe.rollups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rollup {
    Operation(OperationRollup),
    Bottlenecks(BottleneckRollup),
    ErrorGroup(ErrorGroupRollup),
    ErrorTrace(ErrorTrace),
    Slo(SloRollup),
    Transaction(TransactionRollup),
    FunnelJourney(FunnelJourney),
    Cohort(CohortRollup),
}

impl Rollup {
    /// What the record describes, as a key the store upserts by, and how much input it covers
    /// (a larger version of a key replaces a smaller one). `None` for windowed records published
    /// before they carried [`CountedIn`].
    pub fn record_key(&self) -> Option<(String, u64)> {
        fn counted(c: &Option<CountedIn>) -> Option<((&str, i32, i64, Option<i64>), u64)> {
            c.as_ref().map(|c| (c.key(), c.records))
        }
        match self {
            Rollup::Operation(r) => counted(&r.counted_in).map(|(at, n)| (key_of(("operation", r.window_start_unix_ms, &r.span_kind, &r.service, &r.operation, at)), n)),
            Rollup::Bottlenecks(r) => counted(&r.counted_in).map(|(at, n)| (key_of(("bottlenecks", r.window_start_unix_ms, &r.span_kind, &r.service, &r.operation, at)), n)),
            Rollup::ErrorGroup(r) => counted(&r.counted_in).map(|(at, n)| (key_of(("error_group", r.window_start_unix_ms, &r.group, at)), n)),
            Rollup::ErrorTrace(r) => Some((key_of(("error_trace", &r.trace_id, &r.root_cause_span_id)), 0)),
            Rollup::Slo(r) => counted(&r.counted_in).map(|(at, n)| (key_of(("slo", r.window_start_unix_ms, &r.slo, at)), n)),
            Rollup::Transaction(r) => counted(&r.counted_in).map(|(at, n)| (key_of(("transaction", r.window_start_unix_ms, &r.transaction, &r.split, at)), n)),
            // A journey is what its steps make it: a replay that rebuilds it with fewer steps
            // (its later steps were committed already) does not replace the whole one.
            Rollup::FunnelJourney(r) => Some((key_of(("funnel_journey", &r.funnel, &r.correlation, r.started_unix_nanos)), r.reached.len() as u64)),
            Rollup::Cohort(r) => {
                counted(&r.counted_in).map(|(at, n)| (key_of(("cohort", r.window_start_unix_ms, &r.span_kind, &r.service, &r.operation, &r.attribute, &r.value, at)), n))
            }
        }
    }
}

/// Latency and errors of the requests one (service, operation, span kind) served over one window
/// that carried one value of a cohort attribute (`service.version`, `deployment.environment.name`,
/// a feature flag's variant): what comparisons of versions and variants are computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    pub service: String,
    pub operation: String,
    pub span_kind: String,
    /// The attribute (`feature_flag.<key>` for a flag's variant).
    pub attribute: String,
    /// Its value, the overflow label past the attribute's cap.
    pub value: String,
    pub count: u64,
    pub errors: u64,
    pub histogram_us: SparseHistogram,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// Latency and errors of one (service, operation, span kind) over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    pub service: String,
    pub operation: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ... as the OpenTelemetry span-metrics connector names them.
    pub span_kind: String,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub histogram_us: SparseHistogram,
    /// For the spans that serve a request (server and consumer spans), how many satisfied and
    /// tolerated their service's Apdex threshold; the rest of `count` frustrated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apdex: Option<ApdexCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// Apdex's three classes of requests against a threshold T: satisfied (no error, at most T),
/// tolerating (no error, at most 4T), frustrated (slower, or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApdexCounts {
    pub threshold_ms: u64,
    pub satisfied: u64,
    pub tolerating: u64,
}

impl ApdexCounts {
    /// (satisfied + tolerating / 2) / total: 1 when every request satisfied, 0 when none did.
    pub fn score(&self, total: u64) -> Option<f64> {
        (total > 0).then(|| (self.satisfied as f64 + self.tolerating as f64 / 2.0) / total as f64)
    }
}

/// What makes one endpoint slow: its critical path time split by (service, operation), ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BottleneckRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    /// The endpoint: the service and operation of a trace's root, or of a messaging consumer span
    /// (which starts its own asynchronous part of the trace).
    pub service: String,
    pub operation: String,
    /// The endpoint span's kind: one operation can be a server root and a messaging consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_kind: Option<String>,
    pub traces: u64,
    /// `traces` each weighted by 1 / the head-sampling probability its root recorded
    /// (`sampler.param`): an estimate of how many traces the services started. Absent in rollups
    /// written before it existed; read it as `traces` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusted_traces: Option<f64>,
    /// Sum of the endpoint's durations; the contributors' `critical_path_ms` add up to it.
    pub total_ms: f64,
    pub contributors: Vec<Contributor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    pub service: String,
    pub operation: String,
    /// Self time on the critical path, summed over the window's traces.
    pub critical_path_ms: f64,
    /// `critical_path_ms` / the endpoint's `total_ms`.
    pub share: f64,
}

/// Error traces whose root cause falls in one group, over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorGroupRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    /// Stable id of the group: hex of a hash of the four fields below.
    pub group: String,
    pub service: String,
    pub operation: String,
    pub exception_type: String,
    /// The message with numbers, ids and quoted values replaced by placeholders.
    pub message: String,
    pub count: u64,
    pub exemplar_trace_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// One SLO's events over one window: how many there were and how many were good, by its SLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    pub slo: String,
    pub service: String,
    pub total: u64,
    pub good: u64,
    /// A few traces with bad events, for the alert that links to them.
    pub bad_exemplar_trace_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// One business transaction of topology.yaml's `transactions:` over one window, for one value of
/// its split attribute: the requests that entered it, their value metrics and their steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionRollup {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    pub transaction: String,
    /// The split attribute's value; empty without a split, the overflow label past its cap.
    pub split: String,
    /// Entry spans that matched the transaction's entry rule.
    pub count: u64,
    /// Entries whose span failed.
    pub errors: u64,
    /// Entries with every step present: the transaction traced end to end.
    pub complete: u64,
    pub sum_ms: f64,
    pub max_ms: f64,
    /// The entry spans' durations.
    pub histogram_us: SparseHistogram,
    pub metrics: Vec<ValueStats>,
    pub counts_by: Vec<ValueCounts>,
    /// In the order the transaction defines them.
    pub steps: Vec<StepStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// A numeric attribute over a transaction's entries (e.g. `order.amount`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueStats {
    pub name: String,
    pub attribute: String,
    /// Entries that carried the attribute as a number.
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Values of zero and above in hundredths ([`VALUE_HISTOGRAM_SCALE`]), as HDR buckets with
    /// two significant digits; negative values count in the sum, min and max only.
    pub histogram: SparseHistogram,
}

/// What [`ValueStats::histogram`] records a value as: `value` × this, rounded.
pub const VALUE_HISTOGRAM_SCALE: f64 = 100.0;

/// Entries per value of one attribute (e.g. `payment.method`), capped in cardinality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueCounts {
    pub attribute: String,
    /// (value, entries), by value; entries without the attribute are not counted.
    pub values: Vec<(String, u64)>,
}

/// One named step of a transaction: the entries where a span matched it, its latency and failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub histogram_us: SparseHistogram,
}

/// One journey of a funnel (topology.yaml's `funnels:`): the traces that carried one value of its
/// correlation attribute within its join window, and how far through the steps they went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelJourney {
    pub schema: String,
    pub funnel: String,
    pub correlation: String,
    /// When its first step started.
    pub started_unix_nanos: u64,
    /// The steps it reached, in funnel order, each no earlier than the one before.
    pub reached: Vec<JourneyStep>,
    pub steps: u32,
    /// `complete` (every step), `join_window` (the window passed), `evicted` (memory ran short).
    pub closed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyStep {
    pub at_unix_nanos: u64,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
}

/// A record of `tracepipe.funnel-steps`, keyed by funnel and correlation value so that one
/// journey's steps meet in one partition: a span of a trace matched a funnel's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelStep {
    pub schema: String,
    pub funnel: String,
    pub step: u32,
    pub correlation: String,
    pub at_unix_nanos: u64,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
}

pub const FUNNEL_STEP_SCHEMA: &str = "tracepipe.funnel-step/v1";

impl FunnelStep {
    /// The record key: every step of one journey goes to one partition.
    pub fn key(funnel: &str, correlation: &str) -> String {
        key_of((funnel, correlation))
    }
}

/// The root cause of one failed trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorTrace {
    pub schema: String,
    pub trace_id: String,
    /// The deepest error span not explained by an erroring child.
    pub root_cause_span_id: String,
    pub service: String,
    pub operation: String,
    pub group: String,
    pub end_unix_ms: u64,
}

/// A record of `tracepipe.edges`: calls from one service (or node) to another over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeWindow {
    pub schema: String,
    pub window_start_unix_ms: u64,
    pub window_seconds: u64,
    pub client: String,
    pub server: String,
    /// Empty for a call between two instrumented services; `messaging_system`, `database` or
    /// `virtual_node` as the OpenTelemetry service-graph connector labels them.
    pub connection_type: String,
    pub calls: u64,
    pub errors: u64,
    pub client_histogram_us: SparseHistogram,
    /// Empty when the server side is not instrumented (virtual nodes).
    pub server_histogram_us: SparseHistogram,
    pub client_p50_ms: f64,
    pub client_p99_ms: f64,
    pub server_p50_ms: f64,
    pub server_p99_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
}

/// A record of `tracepipe.alerts`, keyed by [`Alert::key`]: every event of one alert goes to one
/// partition, in order. One alert is open per key; it is `firing` once and `resolved` once.
impl EdgeWindow {
    /// As [`Rollup::record_key`].
    pub fn record_key(&self) -> Option<(String, u64)> {
        let c = self.counted_in.as_ref()?;
        Some((key_of(("edge", self.window_start_unix_ms, &self.connection_type, &self.client, &self.server, c.key())), c.records))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    /// `{kind}:{subject}`, e.g. `latency_anomaly:checkout:POST /checkout`.
    pub key: String,
    /// Unique per episode: the key and the time it opened.
    pub id: String,
    pub kind: AlertKind,
    pub state: AlertState,
    pub severity: Severity,
    pub source: String,
    pub opened_unix_ms: u64,
    pub event_unix_ms: u64,
    pub summary: String,
    pub subject: AlertSubject,
    pub details: AlertDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    LatencyAnomaly,
    ErrorSpike,
    EdgeAppeared,
    EdgeVanished,
    SloBurnRate,
    CanaryVerdict,
    Regression,
    ForecastBreach,
}

impl AlertKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::LatencyAnomaly => "latency_anomaly",
            AlertKind::ErrorSpike => "error_spike",
            AlertKind::EdgeAppeared => "edge_appeared",
            AlertKind::EdgeVanished => "edge_vanished",
            AlertKind::SloBurnRate => "slo_burn_rate",
            AlertKind::CanaryVerdict => "canary_verdict",
            AlertKind::Regression => "regression",
            AlertKind::ForecastBreach => "forecast_breach",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// What the alert is about: an operation, or an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AlertSubject {
    Operation { service: String, operation: String },
    Edge { client: String, server: String, connection_type: String },
    Slo { slo: String, service: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AlertDetails {
    Latency(LatencyDetails),
    Errors(ErrorDetails),
    Edge(EdgeDetails),
    Slo(SloBurnDetails),
    Canary(CanaryDetails),
    Regression(RegressionDetails),
    Forecast(ForecastDetails),
}

/// Percentiles of an endpoint's duration over some traces.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyDetails {
    /// The baseline: medians over the learned past windows.
    pub baseline: LatencySummary,
    /// The windows that were anomalous (the latest one when resolved).
    pub current: LatencySummary,
    /// The (service, operation) whose self time on the endpoint's critical path grew most.
    pub root_cause: Option<RootCause>,
    pub exemplar_trace_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub service: String,
    pub operation: String,
    /// Mean self time on the critical path per trace, before and now.
    pub baseline_ms: f64,
    pub current_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetails {
    pub group: String,
    pub exception_type: String,
    pub message: String,
    /// Errors of the group per detection window: the baseline's mean, and now.
    pub baseline_per_window: f64,
    pub current_per_window: u64,
    pub window_seconds: u64,
    pub exemplar_trace_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeDetails {
    /// Calls seen over the last window.
    pub calls: u64,
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
}

/// A canary's verdict: a new value of a cohort attribute (a new `service.version`) of one
/// operation compared with the incumbent on a fixed schedule (`tracepipe_health::canary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryDetails {
    pub attribute: String,
    pub baseline_value: String,
    pub candidate_value: String,
    /// `better`, `worse`, `no_significant_difference` or `not_enough_data`.
    pub verdict: String,
    /// The deciding evaluation of the schedule, and the schedule's length.
    pub evaluation: u32,
    pub evaluations: u32,
    pub alpha_per_evaluation: f64,
    pub candidate_since_unix_ms: u64,
    pub evaluated_until_unix_ms: u64,
    pub baseline_requests: u64,
    pub candidate_requests: u64,
    pub baseline_error_ratio: f64,
    pub candidate_error_ratio: f64,
    /// Mann-Whitney's p-value and the Hodges-Lehmann shift (candidate − baseline) with its interval.
    pub latency_p_value: Option<f64>,
    pub shift_ms: Option<f64>,
    pub shift_low_ms: Option<f64>,
    pub shift_high_ms: Option<f64>,
    /// The shift relative to the baseline's median.
    pub relative_shift: Option<f64>,
    pub errors_p_value: Option<f64>,
    pub evidence: Vec<String>,
}

/// A recent rise of an operation's p99 or error ratio found by change-point detection, with what
/// changed then (`tracepipe_health::changepoints`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionDetails {
    /// `p99` (ms) or `error_ratio`.
    pub metric: String,
    /// The start of the first bucket at the new level.
    pub changed_at_unix_ms: u64,
    /// Medians of the metric before and after.
    pub level_before: f64,
    pub level_after: f64,
    pub change: f64,
    pub p_value: f64,
    /// Cohort values that appeared or took over then, in words.
    pub what_changed: Vec<String>,
}

/// A series forecast to cross a threshold within a horizon, or an SLO's error budget forecast to run
/// out within one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastDetails {
    /// `p99` (ms), `error_ratio`, … or `error_budget` for an SLO.
    pub metric: String,
    pub threshold: f64,
    pub horizon_seconds: u64,
    /// When the forecast crosses the threshold (the budget runs out).
    pub crossing_unix_ms: u64,
    /// The forecast at the crossing with its 95% interval (for a budget: what is left now).
    pub forecast: f64,
    pub forecast_lower: Option<f64>,
    pub forecast_upper: Option<f64>,
    /// The model, or how the crossing was projected.
    pub model: String,
    /// The model's backtest sMAPE, when it was backtested.
    pub backtest_smape: Option<f64>,
}

/// Why an SLO alert fires: the burn rates of its alerting windows, and what is left of the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloBurnDetails {
    /// `page` or `ticket`.
    pub slo_severity: String,
    /// The fraction of good events aimed for, e.g. 0.999.
    pub objective: f64,
    pub burn_windows: Vec<BurnWindow>,
    /// The fraction of the SLO window's error budget not yet spent (below zero once overspent).
    pub error_budget_remaining: f64,
    /// When the budget runs out if the last hour's burn rate goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_exhausted_unix_ms: Option<u64>,
    pub exemplar_trace_ids: Vec<String>,
}

/// One multiwindow alert condition: both windows must burn faster than `burn_rate_threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnWindow {
    pub long_seconds: u64,
    pub short_seconds: u64,
    pub burn_rate_threshold: f64,
    pub long_burn_rate: f64,
    pub short_burn_rate: f64,
    pub exceeded: bool,
}
