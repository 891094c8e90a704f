//! Alert lifecycle: at most one open alert per key; `fire` opens it (once), `resolve` closes it
//! (once). Events queue in the book until [`AlertBook::emit`] publishes them, keyed by the alert
//! key, so one alert's events land in one partition, in order.

use rustc_hash::FxHashMap;
use tracepipe_processor::{Emitter, OutputId};
use tracepipe_schemas::analytics::{Alert, AlertDetails, AlertKind, AlertState, AlertSubject, Severity, ALERT_SCHEMA};

use crate::metrics;

pub struct AlertBook {
    source: &'static str,
    open: FxHashMap<String, Alert>,
    /// Events not yet published.
    pending: Vec<Alert>,
}

impl AlertBook {
    pub fn new(source: &'static str) -> Self {
        AlertBook { source, open: FxHashMap::default(), pending: Vec::new() }
    }

    pub fn key(kind: AlertKind, subject: &AlertSubject) -> String {
        match subject {
            AlertSubject::Operation { service, operation } => format!("{}:{service}:{operation}", kind.as_str()),
            AlertSubject::Edge { client, server, connection_type } => format!("{}:{client}->{server}:{connection_type}", kind.as_str()),
        }
    }

    pub fn is_open(&self, key: &str) -> bool {
        self.open.contains_key(key)
    }

    pub fn open_keys(&self) -> impl Iterator<Item = &str> {
        self.open.keys().map(String::as_str)
    }

    /// Opens an alert under `key` (usually [`AlertBook::key`]) and queues its event; `None` when
    /// one is already open.
    #[allow(clippy::too_many_arguments)]
    pub fn fire(&mut self, key: String, kind: AlertKind, severity: Severity, subject: AlertSubject, summary: String, details: AlertDetails, now_ms: u64) -> Option<Alert> {
        if self.open.contains_key(&key) {
            return None;
        }
        let alert = Alert {
            schema: ALERT_SCHEMA.into(),
            id: format!("{key}@{now_ms}"),
            key: key.clone(),
            kind,
            state: AlertState::Firing,
            severity,
            source: self.source.into(),
            opened_unix_ms: now_ms,
            event_unix_ms: now_ms,
            summary,
            subject,
            details,
        };
        metrics::ALERTS.with_label_values(&[self.source, kind.as_str(), "firing"]).inc();
        metrics::OPEN_ALERTS.with_label_values(&[self.source, kind.as_str()]).inc();
        self.open.insert(key, alert.clone());
        self.pending.push(alert.clone());
        Some(alert)
    }

    /// Resolves the open alert of `key`, if any, with the latest details, and queues the event.
    pub fn resolve(&mut self, key: &str, summary: String, details: Option<AlertDetails>, now_ms: u64) -> Option<Alert> {
        let mut alert = self.open.remove(key)?;
        alert.state = AlertState::Resolved;
        alert.event_unix_ms = now_ms;
        alert.summary = summary;
        if let Some(details) = details {
            alert.details = details;
        }
        metrics::ALERTS.with_label_values(&[self.source, alert.kind.as_str(), "resolved"]).inc();
        metrics::OPEN_ALERTS.with_label_values(&[self.source, alert.kind.as_str()]).dec();
        self.pending.push(alert.clone());
        Some(alert)
    }

    /// Publishes the queued events. They hold no input offset: alert state is not replayed, a
    /// condition that persists after a restart is raised again.
    pub fn emit(&mut self, output: OutputId, out: &mut Emitter) {
        for alert in self.pending.drain(..) {
            out.emit_holding(output, alert.key.as_bytes(), &serde_json::to_vec(&alert).expect("serializable"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracepipe_schemas::analytics::EdgeDetails;

    use super::*;

    #[test]
    fn one_open_alert_per_key_and_one_resolution() {
        let mut book = AlertBook::new("test");
        let subject = || AlertSubject::Edge { client: "a".into(), server: "b".into(), connection_type: String::new() };
        let details = || AlertDetails::Edge(EdgeDetails { calls: 0, first_seen_unix_ms: 1, last_seen_unix_ms: 2 });
        let key = AlertBook::key(AlertKind::EdgeVanished, &subject());
        let fired = book.fire(key.clone(), AlertKind::EdgeVanished, Severity::Warning, subject(), "gone".into(), details(), 10).unwrap();
        assert_eq!(fired.key, "edge_vanished:a->b:");
        assert!(book.fire(key, AlertKind::EdgeVanished, Severity::Warning, subject(), "gone".into(), details(), 11).is_none());
        let resolved = book.resolve(&fired.key, "back".into(), None, 20).unwrap();
        assert_eq!((resolved.state, resolved.id.as_str(), resolved.opened_unix_ms, resolved.event_unix_ms), (AlertState::Resolved, fired.id.as_str(), 10, 20));
        assert!(book.resolve(&fired.key, "back".into(), None, 21).is_none());
        let json = serde_json::to_value(&resolved).unwrap();
        assert_eq!(json["subject"]["client"], "a");
        assert_eq!(json["state"], "resolved");
        let back: Alert = serde_json::from_value(json).unwrap();
        assert_eq!(back, resolved);
    }
}
