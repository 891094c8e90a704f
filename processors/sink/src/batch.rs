//! Rows waiting to be written, decoded from the sink's four inputs, and how one batch is written.
//!
//! Every table has a natural key, so writing a batch twice changes nothing: spans by
//! (trace id, span id), traces by trace id, alert events by (alert id, state), error traces by
//! (trace id, root-cause span id), and edge windows and rollups by what they describe: their
//! window, series and the input segment they were counted in (`Rollup::record_key`). A window
//! published again with more of its segment replaces the smaller version; the same version again
//! changes nothing. Windows from different segments, partitions or instances are different rows and
//! add up. A record from before records carried their segment is keyed by its Kafka position.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracepipe_schemas::analytics::{Alert, EdgeWindow, Rollup};
use tracepipe_schemas::v1::AssembledTrace;

use tracepipe_store::jaeger::{self, is_valid_span_id};
use tracepipe_store::{Param, StoreError, Transaction};

pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service: String,
    pub operation: String,
    pub span_kind: &'static str,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
    pub tags: String,
    pub body: String,
}

pub struct TraceRow {
    pub trace_id: String,
    pub start_us: i64,
    pub sampling_rule: String,
    pub adjusted_count: f64,
    pub truncated: bool,
}

pub struct WindowRow {
    /// What the record describes ([`Rollup::record_key`], [`EdgeWindow::record_key`]).
    pub key: String,
    /// Input records the version covers: of two versions of one key, the larger is kept.
    pub coverage: u64,
    pub window_start_ms: i64,
    /// Edges: client, server, connection type. Rollups: kind, service, operation.
    pub labels: [String; 3],
    /// Rollups: the events counted and the good ones (an SLO's), zero for other kinds.
    pub counts: [i64; 2],
    pub body: String,
}

pub struct AlertRow {
    pub id: String,
    pub state: &'static str,
    pub key: String,
    pub kind: &'static str,
    pub event_ms: i64,
    pub body: String,
}

/// Rows written per table by one flush: (attempted, inserted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub spans: (u64, u64),
    pub traces: (u64, u64),
    pub edges: (u64, u64),
    pub rollups: (u64, u64),
    pub alerts: (u64, u64),
}

impl Written {
    pub fn add(&mut self, other: Written) {
        for (total, part) in [(&mut self.spans, other.spans), (&mut self.traces, other.traces), (&mut self.edges, other.edges), (&mut self.rollups, other.rollups), (&mut self.alerts, other.alerts)] {
            total.0 += part.0;
            total.1 += part.1;
        }
    }
}

#[derive(Default)]
pub struct Batch {
    pub spans: Vec<SpanRow>,
    pub traces: Vec<TraceRow>,
    /// (service, operation, kind) → latest start seen; deduplicated here because one upsert
    /// statement may not touch a row twice on PostgreSQL.
    pub operations: HashMap<(String, String, &'static str), i64>,
    pub edges: WindowRows,
    pub rollups: WindowRows,
    pub alerts: Vec<AlertRow>,
}

/// Window rows of one table, one per key: PostgreSQL refuses an upsert that touches a row twice.
#[derive(Default)]
pub struct WindowRows {
    rows: Vec<WindowRow>,
    by_key: HashMap<String, usize>,
}

impl WindowRows {
    fn add(&mut self, row: WindowRow) {
        match self.by_key.get(&row.key) {
            Some(&i) if self.rows[i].coverage <= row.coverage => self.rows[i] = row,
            Some(_) => {}
            None => {
                self.by_key.insert(row.key.clone(), self.rows.len());
                self.rows.push(row);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.by_key.clear();
    }

    /// Moves the last `n` rows into a table of their own.
    fn split_off_last(&mut self, n: usize) -> WindowRows {
        let rows = self.rows.split_off(self.rows.len() - n);
        for row in &rows {
            self.by_key.remove(&row.key);
        }
        let by_key = rows.iter().enumerate().map(|(i, row)| (row.key.clone(), i)).collect();
        WindowRows { rows, by_key }
    }
}

/// Why an input record could not be read (the record goes to the dead-letter topic).
#[derive(Debug)]
pub struct Unreadable(pub String);

impl Batch {
    pub fn rows(&self) -> usize {
        self.spans.len() + self.traces.len() + self.edges.len() + self.rollups.len() + self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    pub fn clear(&mut self) {
        self.spans.clear();
        self.traces.clear();
        self.operations.clear();
        self.edges.clear();
        self.rollups.clear();
        self.alerts.clear();
    }

    /// Adds a sampled trace (an `AssembledTrace`); returns the spans skipped for invalid ids.
    pub fn add_trace(&mut self, payload: &[u8]) -> Result<u64, Unreadable> {
        let trace = AssembledTrace::decode(payload).map_err(|e| Unreadable(format!("not an AssembledTrace: {e}")))?;
        if trace.trace_id.len() != 16 || trace.trace_id.iter().all(|&b| b == 0) {
            return Err(Unreadable(format!("trace id of {} bytes{}", trace.trace_id.len(), if trace.trace_id.len() == 16 { ", all zero" } else { "" })));
        }
        let trace_id = hex::encode(&trace.trace_id);
        let mut skipped = 0;
        let mut trace_start = i64::MAX;
        for resource_spans in &trace.resource_spans {
            let process = jaeger::process(resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    if !is_valid_span_id(&span.span_id) {
                        skipped += 1;
                        continue;
                    }
                    let row = self.span_row(span, &trace_id, &process, scope_spans.scope.as_ref().map(|s| (s.name.as_str(), s.version.as_str())));
                    trace_start = trace_start.min(row.start_us);
                    let key = (row.service.clone(), row.operation.clone(), row.span_kind);
                    let seen = self.operations.entry(key).or_insert(row.start_us);
                    *seen = (*seen).max(row.start_us);
                    self.spans.push(row);
                }
            }
        }
        if trace_start != i64::MAX {
            self.traces.push(TraceRow {
                trace_id,
                start_us: trace_start,
                sampling_rule: trace.sampling_rule,
                adjusted_count: if trace.adjusted_count > 0.0 { trace.adjusted_count } else { 1.0 },
                truncated: trace.truncated,
            });
        }
        Ok(skipped)
    }

    fn span_row(&self, span: &Span, trace_id: &str, process: &jaeger::Process, scope: Option<(&str, &str)>) -> SpanRow {
        let mut body = jaeger::span_body(span, trace_id, process);
        if let Some((name, version)) = scope.filter(|(name, _)| !name.is_empty()) {
            body.tags.push(jaeger::KeyValue::string("otel.scope.name", name));
            if !version.is_empty() {
                body.tags.push(jaeger::KeyValue::string("otel.scope.version", version));
            }
        }
        let start_us = (span.start_time_unix_nano / 1_000) as i64;
        SpanRow {
            trace_id: trace_id.to_string(),
            span_id: hex::encode(&span.span_id),
            parent_span_id: if is_valid_span_id(&span.parent_span_id) { hex::encode(&span.parent_span_id) } else { String::new() },
            service: process.service_name.clone(),
            operation: span.name.clone(),
            span_kind: jaeger::span_kind_name(span.kind),
            start_us,
            duration_us: (span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000) as i64,
            error: jaeger::is_error(span),
            tags: jaeger::search_text(&body),
            body: serde_json::to_string(&body).expect("span bodies serialize"),
        }
    }

    /// Adds an edge window; `position` (topic/partition/offset) keys one that does not say
    /// where it was counted.
    pub fn add_edge(&mut self, position: String, payload: &[u8]) -> Result<(), Unreadable> {
        let edge: EdgeWindow = serde_json::from_slice(payload).map_err(|e| Unreadable(format!("not an edge window: {e}")))?;
        let (key, coverage) = edge.record_key().unwrap_or((position, 0));
        self.edges.add(WindowRow {
            key,
            coverage,
            window_start_ms: edge.window_start_unix_ms as i64,
            labels: [edge.client, edge.server, edge.connection_type],
            counts: [0, 0],
            body: String::from_utf8_lossy(payload).into_owned(),
        });
        Ok(())
    }

    /// Adds a rollup; `position` (topic/partition/offset) keys one that does not say where it
    /// was counted.
    pub fn add_rollup(&mut self, position: String, payload: &[u8]) -> Result<(), Unreadable> {
        let rollup: Rollup = serde_json::from_slice(payload).map_err(|e| Unreadable(format!("not a rollup: {e}")))?;
        let (key, coverage) = rollup.record_key().unwrap_or((position, 0));
        let mut counts = [0, 0];
        let (kind, at_ms, service, operation) = match rollup {
            Rollup::Operation(r) => ("operation", r.window_start_unix_ms, r.service, r.operation),
            Rollup::Bottlenecks(r) => ("bottlenecks", r.window_start_unix_ms, r.service, r.operation),
            Rollup::ErrorGroup(r) => ("error_group", r.window_start_unix_ms, r.service, r.operation),
            Rollup::ErrorTrace(r) => ("error_trace", r.end_unix_ms, r.service, r.operation),
            Rollup::Slo(r) => {
                counts = [i64::try_from(r.total).unwrap_or(i64::MAX), i64::try_from(r.good).unwrap_or(i64::MAX)];
                ("slo", r.window_start_unix_ms, r.service, r.slo)
            }
            Rollup::Transaction(r) => {
                counts = [i64::try_from(r.count).unwrap_or(i64::MAX), i64::try_from(r.complete).unwrap_or(i64::MAX)];
                ("transaction", r.window_start_unix_ms, r.transaction, r.split)
            }
            Rollup::FunnelJourney(r) => {
                let complete = r.reached.len() == r.steps as usize;
                counts = [r.reached.len() as i64, i64::from(complete)];
                ("funnel_journey", r.started_unix_nanos / 1_000_000, r.funnel, r.correlation)
            }
            Rollup::Cohort(r) => {
                counts = [i64::try_from(r.count).unwrap_or(i64::MAX), i64::try_from(r.count.saturating_sub(r.errors)).unwrap_or(i64::MAX)];
                ("cohort", r.window_start_unix_ms, r.service, r.operation)
            }
        };
        self.rollups.add(WindowRow {
            key,
            coverage,
            window_start_ms: at_ms as i64,
            labels: [kind.to_string(), service, operation],
            counts,
            body: String::from_utf8_lossy(payload).into_owned(),
        });
        Ok(())
    }

    pub fn add_alert(&mut self, payload: &[u8]) -> Result<(), Unreadable> {
        let alert: Alert = serde_json::from_slice(payload).map_err(|e| Unreadable(format!("not an alert: {e}")))?;
        self.alerts.push(AlertRow {
            id: alert.id,
            state: match alert.state {
                tracepipe_schemas::analytics::AlertState::Firing => "firing",
                tracepipe_schemas::analytics::AlertState::Resolved => "resolved",
            },
            key: alert.key,
            kind: alert.kind.as_str(),
            event_ms: alert.event_unix_ms as i64,
            body: String::from_utf8_lossy(payload).into_owned(),
        });
        Ok(())
    }

    /// Adds the rows of `other` (a batch that was not written) to this one.
    pub fn absorb(&mut self, other: Batch) {
        self.spans.extend(other.spans);
        self.traces.extend(other.traces);
        for (operation, last_seen) in other.operations {
            let seen = self.operations.entry(operation).or_insert(last_seen);
            *seen = (*seen).max(last_seen);
        }
        for row in other.edges.rows {
            self.edges.add(row);
        }
        for row in other.rollups.rows {
            self.rollups.add(row);
        }
        self.alerts.extend(other.alerts);
    }

    /// Splits the batch in two of about half its rows each (the operations seen go with the
    /// first), to find the row a store refuses among them.
    pub fn split(mut self) -> (Batch, Batch) {
        let mut second = Batch::default();
        let mut to_move = self.rows() / 2;
        let mut take = |len: usize| {
            let n = to_move.min(len);
            to_move -= n;
            n
        };
        let n = take(self.alerts.len());
        second.alerts = self.alerts.split_off(self.alerts.len() - n);
        let n = take(self.rollups.len());
        second.rollups = self.rollups.split_off_last(n);
        let n = take(self.edges.len());
        second.edges = self.edges.split_off_last(n);
        let n = take(self.traces.len());
        second.traces = self.traces.split_off(self.traces.len() - n);
        let n = take(self.spans.len());
        second.spans = self.spans.split_off(self.spans.len() - n);
        (self, second)
    }

    /// What the one row of a batch is, for a log line: its table and its key.
    pub fn describe(&self) -> (&'static str, String) {
        if let Some(s) = self.spans.first() {
            ("spans", format!("span {} of trace {} ({} {:?})", s.span_id, s.trace_id, s.service, s.operation))
        } else if let Some(t) = self.traces.first() {
            ("traces", format!("trace {}", t.trace_id))
        } else if let Some(e) = self.edges.rows.first() {
            ("edges", format!("edge window {}", e.key))
        } else if let Some(r) = self.rollups.rows.first() {
            ("rollups", format!("rollup {}", r.key))
        } else if let Some(a) = self.alerts.first() {
            ("alerts", format!("alert {} {}", a.id, a.state))
        } else {
            ("operations", format!("operations {:?}", self.operations.keys().collect::<Vec<_>>()))
        }
    }

    /// Writes every row in one transaction.
    pub fn write(&self, tx: &mut Transaction<'_>) -> Result<Written, StoreError> {
        let mut written = Written::default();
        let mut params: Vec<Param<'_>> = Vec::with_capacity(self.spans.len() * 11);
        for s in &self.spans {
            params.extend([
                Param::Text(&s.trace_id),
                Param::Text(&s.span_id),
                Param::Text(&s.parent_span_id),
                Param::Text(&s.service),
                Param::Text(&s.operation),
                Param::Text(s.span_kind),
                Param::Int(s.start_us),
                Param::Int(s.duration_us),
                Param::Int(i64::from(s.error)),
                Param::Text(&s.tags),
                Param::Text(&s.body),
            ]);
        }
        let inserted = tx.insert(
            "spans",
            &["trace_id", "span_id", "parent_span_id", "service", "operation", "span_kind", "start_us", "duration_us", "error", "tags", "body"],
            "ON CONFLICT (trace_id, span_id) DO NOTHING",
            &params,
        )?;
        written.spans = (self.spans.len() as u64, inserted);

        params.clear();
        for t in &self.traces {
            params.extend([Param::Text(&t.trace_id), Param::Int(t.start_us), Param::Text(&t.sampling_rule), Param::Real(t.adjusted_count), Param::Int(i64::from(t.truncated))]);
        }
        let inserted = tx.insert("traces", &["trace_id", "start_us", "sampling_rule", "adjusted_count", "truncated"], "ON CONFLICT (trace_id) DO NOTHING", &params)?;
        written.traces = (self.traces.len() as u64, inserted);

        params.clear();
        for ((service, operation, kind), last_seen) in &self.operations {
            params.extend([Param::Text(service), Param::Text(operation), Param::Text(kind), Param::Int(*last_seen)]);
        }
        tx.insert(
            "operations",
            &["service", "operation", "span_kind", "last_seen_us"],
            "ON CONFLICT (service, operation, span_kind) DO UPDATE SET last_seen_us = excluded.last_seen_us WHERE excluded.last_seen_us > operations.last_seen_us",
            &params,
        )?;

        written.edges = write_windows(tx, "edges", ["client", "server", "connection_type"], None, &self.edges)?;
        written.rollups = write_windows(tx, "rollups", ["kind", "service", "operation"], Some(["total", "good"]), &self.rollups)?;

        params.clear();
        for a in &self.alerts {
            params.extend([Param::Text(&a.id), Param::Text(a.state), Param::Text(&a.key), Param::Text(a.kind), Param::Int(a.event_ms), Param::Text(&a.body)]);
        }
        let inserted = tx.insert("alerts", &["id", "state", "alert_key", "kind", "event_ms", "body"], "ON CONFLICT (id, state) DO NOTHING", &params)?;
        written.alerts = (self.alerts.len() as u64, inserted);
        Ok(written)
    }
}

/// Upserts window rows by key: a version covering more input replaces the stored one. `counts`
/// names the columns of [`WindowRow::counts`], for a table that has them.
fn write_windows(tx: &mut Transaction<'_>, table: &str, labels: [&str; 3], counts: Option<[&str; 2]>, rows: &WindowRows) -> Result<(u64, u64), StoreError> {
    let mut params: Vec<Param<'_>> = Vec::with_capacity(rows.len() * 9);
    for r in &rows.rows {
        params.extend([
            Param::Text(&r.key),
            Param::Int(i64::try_from(r.coverage).unwrap_or(i64::MAX)),
            Param::Int(r.window_start_ms),
            Param::Text(&r.labels[0]),
            Param::Text(&r.labels[1]),
            Param::Text(&r.labels[2]),
            Param::Text(&r.body),
        ]);
        if counts.is_some() {
            params.extend([Param::Int(r.counts[0]), Param::Int(r.counts[1])]);
        }
    }
    let mut columns = vec!["record_key", "coverage", "window_start_ms", labels[0], labels[1], labels[2], "body"];
    let mut updates = "coverage = excluded.coverage, body = excluded.body".to_string();
    if let Some(counts) = counts {
        columns.extend(counts);
        for column in counts {
            updates.push_str(&format!(", {column} = excluded.{column}"));
        }
    }
    let on_conflict = format!("ON CONFLICT (record_key) DO UPDATE SET {updates} WHERE excluded.coverage > {table}.coverage");
    let written = tx.insert(table, &columns, &on_conflict, &params)?;
    Ok((rows.len() as u64, written))
}
