//! The dependencies processor: the live service graph, from the structure of every assembled trace.
//!
//! Edges, as the OpenTelemetry service-graph connector pairs spans:
//! - a client span and its server child: `client service → server service`;
//! - a producer span and the consumer spans that are its children or link to it (a Kafka hop):
//!   connection type `messaging_system`;
//! - a client span with no server child (the peer is not instrumented): a virtual node named, as
//!   the Collector's servicegraph connector names it, by the first of `virtual_node_peer_attributes`
//!   the span or its resource has (`peer.service`, `db.name`, `db.namespace`, `db.system`,
//!   `db.system.name` by default); connection type `database` for a database call (a `db.system`,
//!   `db.system.name`, `db.name` or `db.namespace` attribute), else `virtual_node`.
//!
//! Prometheus: `traces_service_graph_request_total`, `..._failed_total`,
//! `..._server_seconds` and `..._client_seconds` histograms, labelled client, server,
//! connection_type. Windows of calls, errors and latency histograms go to `tracepipe.edges`
//! ([`EdgeWindow`]), holding their input offsets like the analyzer's rollups. Alerts: an edge
//! first seen after the learning period (`edge_appeared`, resolved once it has been present for
//! the learning period), and a learned edge without calls for `vanish_after` (`edge_vanished`,
//! resolved when calls come back).

pub mod config;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram as PromHistogram, IntCounter};
use rustc_hash::FxHashMap;
use tracepipe_analytics::alerts::AlertBook;
use tracepipe_analytics::latency::{new_histogram, quantile_ms, record_nanos, sparse, LatencyHistogram};
use tracepipe_analytics::OVERFLOW;
use tracepipe_analytics::tree::TraceTree;
use tracepipe_analytics::segments::{InputTopics, SegmentInfo, Segments};
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::analytics::{AlertDetails, AlertKind, AlertSubject, CountedIn, EdgeDetails, EdgeWindow, Severity, EDGE_SCHEMA};
use tracepipe_schemas::trace_view::{kind, SpanView, TraceView};

#[derive(Debug, Clone, PartialEq)]
pub struct DependenciesConfig {
    pub window: Duration,
    pub lateness: Duration,
    pub max_edges: usize,
    /// Edges seen within this long of start are the learned topology; later ones raise
    /// `edge_appeared`.
    pub learning: Duration,
    /// A learned edge without calls for this long raises `edge_vanished`.
    pub vanish_after: Duration,
    /// A client span nothing instrumented answered names its peer by the first of these it has.
    pub virtual_node_peer_attributes: Vec<String>,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        DependenciesConfig {
            window: Duration::from_secs(60),
            lateness: Duration::from_secs(30),
            max_edges: 10_000,
            learning: Duration::from_secs(300),
            vanish_after: Duration::from_secs(300),
            virtual_node_peer_attributes: VIRTUAL_NODE_PEER_ATTRIBUTES.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DependenciesOutputs {
    pub edges: OutputId,
    pub alerts: OutputId,
}

/// How long a partition may be quiet before its open segment is published as it stands.
const QUIET_PARTITION: Duration = Duration::from_secs(5);

pub const MESSAGING: &str = "messaging_system";
pub const DATABASE: &str = "database";
pub const VIRTUAL_NODE: &str = "virtual_node";

type EdgeId = u32;

struct Edge {
    client: Arc<str>,
    server: Arc<str>,
    connection_type: &'static str,
    requests: IntCounter,
    failed: IntCounter,
    client_seconds: PromHistogram,
    server_seconds: PromHistogram,
    calls: u64,
    first_seen: UnixNanos,
    last_seen: UnixNanos,
    /// Part of the learned topology (seen during learning, or present for the learning period).
    learned: bool,
}

struct EdgeAccumulator {
    calls: u64,
    errors: u64,
    client_us: LatencyHistogram,
    server_us: LatencyHistogram,
}

#[derive(Default)]
struct EdgeWindows {
    edges: FxHashMap<EdgeId, EdgeAccumulator>,
}

/// One call found in a trace.
struct Call<'a> {
    client: &'a str,
    server: &'a str,
    connection_type: &'static str,
    client_nanos: u64,
    server_nanos: Option<u64>,
    failed: bool,
}

pub struct Dependencies {
    config: DependenciesConfig,
    outputs: DependenciesOutputs,
    tree: TraceTree,
    edges: Vec<Edge>,
    by_name: FxHashMap<Box<str>, EdgeId>,
    key: String,
    links: Vec<([u8; 8], u32)>,
    /// The edge of each call of the trace being analyzed.
    call_edges: Vec<EdgeId>,
    windows: Segments<EdgeWindows>,
    /// Input topic names, by input index, as records name them.
    topics: InputTopics,
    histograms: Vec<LatencyHistogram>,
    book: AlertBook,
    started: Option<UnixNanos>,
}

/// The node a client span talked to when nothing instrumented answered, and the connection type,
/// as the OpenTelemetry Collector's servicegraph connector names them: the first of
/// `peer_attributes` the span (or its resource) has, `database` when the span is a database call.
fn virtual_peer<'a>(view: &TraceView<'a>, span: &SpanView<'a>, peer_attributes: &[String]) -> Option<(&'a str, &'static str)> {
    let text = |key: &str| span.attribute(key).or_else(|| view.resource_attribute(span, key)).and_then(|value| value.as_str()).filter(|name| !name.is_empty());
    let name = peer_attributes.iter().find_map(|key| text(key))?;
    let database = span.peer.db_system.is_some() || span.peer.db_namespace.is_some() || DATABASE_ATTRIBUTES.iter().any(|key| text(key).is_some());
    Some((name, if database { DATABASE } else { VIRTUAL_NODE }))
}

/// Attributes that make a client span a database call.
const DATABASE_ATTRIBUTES: [&str; 4] = ["db.system", "db.system.name", "db.name", "db.namespace"];

/// The servicegraph connector's default `virtual_node_peer_attributes`.
pub const VIRTUAL_NODE_PEER_ATTRIBUTES: [&str; 5] = ["peer.service", "db.name", "db.namespace", "db.system", "db.system.name"];

/// Every call in the trace, in span order.
fn find_calls<'a>(view: &TraceView<'a>, tree: &TraceTree, links: &[([u8; 8], u32)], peer_attributes: &[String], mut on_call: impl FnMut(Call<'a>)) {
    let spans = &view.spans;
    for (i, span) in spans.iter().enumerate() {
        match span.kind {
            kind::CLIENT => {
                let mut paired = false;
                for &c in tree.children(i as u32) {
                    let server = &spans[c as usize];
                    if server.kind == kind::SERVER {
                        paired = true;
                        on_call(Call {
                            client: view.service(span),
                            server: view.service(server),
                            connection_type: "",
                            client_nanos: span.duration_nanos(),
                            server_nanos: Some(server.duration_nanos()),
                            failed: span.is_error() || server.is_error(),
                        });
                    }
                }
                if !paired {
                    match virtual_peer(view, span, peer_attributes) {
                        Some((server, connection_type)) => on_call(Call {
                            client: view.service(span),
                            server,
                            connection_type,
                            client_nanos: span.duration_nanos(),
                            server_nanos: None,
                            failed: span.is_error(),
                        }),
                        None => metrics::UNPAIRED.with_label_values(&["client"]).inc(),
                    }
                }
            }
            kind::PRODUCER => {
                let children = tree.children(i as u32).iter().copied().filter(|&c| spans[c as usize].kind == kind::CONSUMER);
                let start = links.partition_point(|(id, _)| *id < span.span_id);
                let linked = links[start..]
                    .iter()
                    .take_while(|(id, _)| *id == span.span_id)
                    .map(|(_, c)| *c)
                    .filter(|&c| spans[c as usize].kind == kind::CONSUMER && tree.parent(c) != Some(i as u32));
                let mut paired = false;
                for c in children.chain(linked) {
                    paired = true;
                    let consumer = &spans[c as usize];
                    on_call(Call {
                        client: view.service(span),
                        server: view.service(consumer),
                        connection_type: MESSAGING,
                        client_nanos: span.duration_nanos(),
                        server_nanos: Some(consumer.duration_nanos()),
                        failed: span.is_error() || consumer.is_error(),
                    });
                }
                if !paired {
                    metrics::UNPAIRED.with_label_values(&["producer"]).inc();
                }
            }
            kind::SERVER | kind::CONSUMER if tree.parent(i as u32).is_none() && span.parent_span_id.is_some() && span.link.is_none() => {
                // Its client or producer is not in this part of the trace.
                metrics::UNPAIRED.with_label_values(&[if span.kind == kind::SERVER { "server" } else { "consumer" }]).inc();
            }
            _ => {}
        }
    }
}

impl Dependencies {
    pub fn new(config: DependenciesConfig, outputs: DependenciesOutputs) -> Self {
        Self::with_open_alerts(config, outputs, Vec::new(), 0)
    }

    /// A processor that continues the alerts that were open when the last one stopped (the
    /// latest firing events of the alerts topic from source `dependencies`): an appeared edge
    /// resolves once it has been present for the learning period, counted from when it was first
    /// seen; a vanished edge stays open until it has calls again.
    pub fn with_open_alerts(config: DependenciesConfig, outputs: DependenciesOutputs, open_alerts: Vec<tracepipe_schemas::analytics::Alert>, now: UnixNanos) -> Self {
        let mut dependencies = Dependencies {
            tree: TraceTree::default(),
            edges: Vec::new(),
            by_name: FxHashMap::default(),
            key: String::new(),
            links: Vec::new(),
            call_edges: Vec::new(),
            windows: Segments::new(config.window, config.lateness),
            topics: InputTopics::default(),
            histograms: Vec::new(),
            book: AlertBook::new("dependencies"),
            started: None,
            config,
            outputs,
        };
        for alert in &open_alerts {
            let (AlertSubject::Edge { client, server, connection_type }, AlertDetails::Edge(details)) = (&alert.subject, &alert.details) else {
                continue;
            };
            let connection_type = [MESSAGING, DATABASE, VIRTUAL_NODE].into_iter().find(|t| t == connection_type).unwrap_or("");
            let id = dependencies.edge(client, server, connection_type, now);
            let edge = &mut dependencies.edges[id as usize];
            edge.first_seen = details.first_seen_unix_ms.saturating_mul(1_000_000);
            edge.last_seen = details.last_seen_unix_ms.saturating_mul(1_000_000);
            edge.learned = alert.kind == AlertKind::EdgeVanished;
        }
        dependencies.book.restore(open_alerts, now / 1_000_000);
        dependencies
    }

    fn edge(&mut self, client: &str, server: &str, connection_type: &'static str, now: UnixNanos) -> EdgeId {
        let (client, server) = (tracepipe_analytics::bounded_name(client), tracepipe_analytics::bounded_name(server));
        self.key.clear();
        for part in [client, server, connection_type] {
            self.key.push_str(part);
            self.key.push('\u{0}');
        }
        if let Some(&id) = self.by_name.get(self.key.as_str()) {
            return id;
        }
        let (client, server) = if self.edges.len() >= self.config.max_edges {
            metrics::OVERFLOW.inc();
            self.key.clear();
            self.key.push_str(OVERFLOW);
            if let Some(&id) = self.by_name.get(self.key.as_str()) {
                return id;
            }
            (OVERFLOW, OVERFLOW)
        } else {
            (client, server)
        };
        let labels = [client, server, connection_type];
        let learned = now < self.started.unwrap_or(now) + self.config.learning.as_nanos() as u64;
        let id = self.edges.len() as EdgeId;
        self.edges.push(Edge {
            client: client.into(),
            server: server.into(),
            connection_type,
            requests: metrics::REQUESTS.with_label_values(&labels),
            failed: metrics::FAILED.with_label_values(&labels),
            client_seconds: metrics::CLIENT_SECONDS.with_label_values(&labels),
            server_seconds: metrics::SERVER_SECONDS.with_label_values(&labels),
            calls: 0,
            first_seen: now,
            last_seen: now,
            learned,
        });
        self.by_name.insert(self.key.as_str().into(), id);
        metrics::EDGES.set(self.edges.len() as i64);
        if !learned {
            let edge = &self.edges[id as usize];
            let subject = AlertSubject::Edge { client: client.into(), server: server.into(), connection_type: connection_type.into() };
            let key = AlertBook::key(AlertKind::EdgeAppeared, &subject);
            let summary = format!("new dependency: {} -> {}{}", edge.client, edge.server, type_suffix(connection_type));
            let details = AlertDetails::Edge(EdgeDetails { calls: 1, first_seen_unix_ms: now / 1_000_000, last_seen_unix_ms: now / 1_000_000 });
            self.book.fire(key, AlertKind::EdgeAppeared, Severity::Info, subject, summary, details, now / 1_000_000);
        }
        id
    }

    /// Finds the calls of one trace, read from `at` of `topic` (stamped `timestamp_ms` by the
    /// assembler), and counts them in the trace's window of the partition's segment.
    fn analyze(&mut self, view: &TraceView<'_>, topic: &str, at: SourceOffset, timestamp_ms: Option<i64>, now: UnixNanos, out: &mut Emitter) {
        let spans = &view.spans;
        metrics::TRACES.inc();
        if spans.is_empty() {
            return;
        }
        self.topics.note(at.source.input, topic);
        self.started.get_or_insert(now);
        self.tree.build(spans);
        self.links.clear();
        self.links.extend(spans.iter().enumerate().filter_map(|(i, s)| s.link.map(|l| (l, i as u32))));
        self.links.sort_unstable();
        let event_time = tracepipe_analytics::segments::event_time(spans[view.root().unwrap_or(0)].start_unix_nano, timestamp_ms);
        let mut calls = Vec::new();
        find_calls(view, &self.tree, &self.links, &self.config.virtual_node_peer_attributes, |call| calls.push(call));
        for call in &calls {
            let id = self.edge(call.client, call.server, call.connection_type, now);
            let edge = &mut self.edges[id as usize];
            edge.last_seen = now;
            edge.calls += 1;
            edge.requests.inc();
            if call.failed {
                edge.failed.inc();
            }
            edge.client_seconds.observe(call.client_nanos as f64 / 1e9);
            if let Some(server) = call.server_nanos {
                edge.server_seconds.observe(server as f64 / 1e9);
            }
            self.call_edges.push(id);
        }
        // Every trace moves its partition's event time, calls or not; its calls count in the
        // window of its start.
        let histograms = &mut self.histograms;
        let (closed, window, _) = self.windows.observe(at, timestamp_ms, event_time, now);
        for (call, id) in calls.iter().zip(self.call_edges.drain(..)) {
            let acc = window.edges.entry(id).or_insert_with(|| EdgeAccumulator {
                calls: 0,
                errors: 0,
                client_us: histograms.pop().unwrap_or_else(new_histogram),
                server_us: histograms.pop().unwrap_or_else(new_histogram),
            });
            acc.calls += 1;
            acc.errors += u64::from(call.failed);
            record_nanos(&mut acc.client_us, call.client_nanos);
            if let Some(server) = call.server_nanos {
                record_nanos(&mut acc.server_us, server);
            }
        }
        if let Some(closed) = closed {
            let info = closed.info();
            let hold = Some(SourceOffset { source: info.source, offset: info.first_offset });
            let length = self.windows.length_nanos();
            for (start, windows) in &closed.windows {
                publish_edges(&self.edges, &self.topics, self.outputs.edges, length, &info, *start, windows, hold, out);
            }
            for (_, windows) in closed.windows {
                for (_, mut acc) in windows.edges {
                    acc.client_us.reset();
                    acc.server_us.reset();
                    self.histograms.push(acc.client_us);
                    self.histograms.push(acc.server_us);
                }
            }
        }
    }

    /// Publishes open segments as they stand: every one, or those of quiet partitions.
    fn publish_open(&mut self, now: UnixNanos, quiet: Option<Duration>, out: &mut Emitter) {
        let length = self.windows.length_nanos();
        let open: Vec<&mut tracepipe_analytics::segments::Segment<EdgeWindows>> = match quiet {
            Some(quiet) => self.windows.take_idle(now, quiet).collect(),
            None => self.windows.take_unpublished().collect(),
        };
        for segment in open {
            let info = segment.info();
            for (start, windows) in &segment.windows {
                publish_edges(&self.edges, &self.topics, self.outputs.edges, length, &info, *start, windows, None, out);
            }
        }
    }

    /// Appeared edges that stayed become learned; learned edges without calls vanish.
    fn check_topology(&mut self, now: UnixNanos) {
        let learning = self.config.learning.as_nanos() as u64;
        let vanish_after = self.config.vanish_after.as_nanos() as u64;
        let now_ms = now / 1_000_000;
        for edge in &mut self.edges {
            let subject = || AlertSubject::Edge { client: edge.client.to_string(), server: edge.server.to_string(), connection_type: edge.connection_type.into() };
            let details = |calls| AlertDetails::Edge(EdgeDetails { calls, first_seen_unix_ms: edge.first_seen / 1_000_000, last_seen_unix_ms: edge.last_seen / 1_000_000 });
            if !edge.learned && now >= edge.first_seen + learning {
                edge.learned = true;
                let key = AlertBook::key(AlertKind::EdgeAppeared, &subject());
                let summary = format!("dependency {} -> {}{} is part of the topology now", edge.client, edge.server, type_suffix(edge.connection_type));
                self.book.resolve(&key, summary, None, now_ms);
            }
            let vanished_key = AlertBook::key(AlertKind::EdgeVanished, &subject());
            let silent = now >= edge.last_seen + vanish_after;
            if edge.learned && silent && !self.book.is_open(&vanished_key) {
                let summary = format!("dependency {} -> {}{}: no calls for {} s", edge.client, edge.server, type_suffix(edge.connection_type), (now - edge.last_seen) / 1_000_000_000);
                self.book.fire(vanished_key, AlertKind::EdgeVanished, Severity::Warning, subject(), summary, details(0), now_ms);
            } else if !silent && self.book.is_open(&vanished_key) {
                let summary = format!("dependency {} -> {}{}: calls again", edge.client, edge.server, type_suffix(edge.connection_type));
                self.book.resolve(&vanished_key, summary, Some(details(1)), now_ms);
            }
        }
    }
}

/// One window of a segment as [`EdgeWindow`]s: `hold` is a closed segment's first offset, `None`
/// for an open one published as it stands.
#[allow(clippy::too_many_arguments)]
fn publish_edges(
    edges: &[Edge],
    topics: &InputTopics,
    output: OutputId,
    length: u64,
    segment: &SegmentInfo,
    start: UnixNanos,
    windows: &EdgeWindows,
    hold: Option<SourceOffset>,
    out: &mut Emitter,
) {
    let mut ids: Vec<&EdgeId> = windows.edges.keys().collect();
    ids.sort_unstable();
    for id in ids {
        let acc = &windows.edges[id];
        let edge = &edges[*id as usize];
        let record = EdgeWindow {
            schema: EDGE_SCHEMA.into(),
            window_start_unix_ms: start / 1_000_000,
            window_seconds: length / 1_000_000_000,
            client: edge.client.to_string(),
            server: edge.server.to_string(),
            connection_type: edge.connection_type.into(),
            calls: acc.calls,
            errors: acc.errors,
            client_histogram_us: sparse(&acc.client_us),
            server_histogram_us: sparse(&acc.server_us),
            client_p50_ms: quantile_ms(&acc.client_us, 0.5),
            client_p99_ms: quantile_ms(&acc.client_us, 0.99),
            server_p50_ms: quantile_ms(&acc.server_us, 0.5),
            server_p99_ms: quantile_ms(&acc.server_us, 0.99),
            counted_in: Some(CountedIn {
                topic: topics.name(segment.source.input).to_string(),
                partition: segment.source.partition,
                first_offset: segment.first_offset,
                first_timestamp_ms: segment.first_timestamp_ms,
                records: segment.records,
                late: start < segment.watermark_start,
            }),
        };
        let key = format!("{}->{}", edge.client, edge.server);
        out.emit_holding(output, key.as_bytes(), &serde_json::to_vec(&record).expect("serializable"), hold);
        metrics::EDGE_WINDOWS.inc();
    }
}

fn type_suffix(connection_type: &str) -> String {
    if connection_type.is_empty() {
        String::new()
    } else {
        format!(" ({connection_type})")
    }
}

impl Processor for Dependencies {
    fn name(&self) -> &'static str {
        "dependencies"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let view = TraceView::parse(input.payload).map_err(|e| Poison::new("decode", format!("tracepipe.v1.AssembledTrace: {e}")))?;
        let at = SourceOffset { source: input.source, offset: input.offset };
        self.analyze(&view, input.topic, at, input.timestamp_ms, now, out);
        self.book.emit(self.outputs.alerts, out);
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }

    fn on_tick(&mut self, now: UnixNanos, out: &mut Emitter) {
        self.check_topology(now);
        self.book.emit(self.outputs.alerts, out);
        self.publish_open(now, Some(QUIET_PARTITION), out);
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.windows.low_watermark(source)
    }

    /// Nothing is published for revoked partitions: their next owner replays their open
    /// segments from the committed position.
    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }

    /// Publishes the open segments as they stand; they still hold their positions.
    fn drain(&mut self, now: UnixNanos, out: &mut Emitter) {
        self.publish_open(now, None, out);
    }
}

#[doc(hidden)]
pub mod testing {
    //! Entry points for tests and benchmarks that drive the processor without Kafka.
    use super::*;

    /// Records come from partition 0 of `tracepipe.traces`, at consecutive offsets.
    pub fn analyze(dependencies: &mut Dependencies, payload: &[u8], now: UnixNanos) -> Result<(), Poison> {
        let view = TraceView::parse(payload).map_err(|e| Poison::new("decode", e.to_string()))?;
        let at = SourceOffset { source: SourcePartition { input: 0, partition: 0 }, offset: dependencies.windows.observed as i64 };
        dependencies.analyze(&view, "tracepipe.traces", at, None, now, &mut Emitter::default());
        Ok(())
    }

    /// The edges seen so far: (client, server, connection type, calls).
    pub fn edges(dependencies: &Dependencies) -> Vec<(String, String, String, u64)> {
        dependencies.edges.iter().map(|e| (e.client.to_string(), e.server.to_string(), e.connection_type.to_string(), e.calls)).collect()
    }
}
