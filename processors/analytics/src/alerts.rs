//! Alert lifecycle: at most one open alert per key; `fire` opens it (once), `resolve` closes it
//! (once). Events queue in the book until [`AlertBook::emit`] publishes them, keyed by the alert
//! key, so one alert's events land in one partition, in order.
//!
//! A processor that restarts rebuilds its open alerts from the alerts topic ([`AlertBook::restore`],
//! [`latest_open`]). A restored alert stays open while its condition is seen again (a `fire` of its
//! key confirms it), resolves the usual way once the condition clears, and resolves by itself if
//! nothing confirms it within a grace period ([`AlertBook::expire_unconfirmed`]): no alert stays
//! open for ever because the process that raised it went away.

use rustc_hash::FxHashMap;
use tracepipe_processor::{Emitter, OutputId};
use tracepipe_schemas::analytics::{Alert, AlertDetails, AlertKind, AlertState, AlertSubject, Severity, ALERT_SCHEMA};

use crate::metrics;

pub struct AlertBook {
    source: &'static str,
    open: FxHashMap<String, Alert>,
    /// Restored alerts not confirmed since, and when (processing time) they were restored.
    unconfirmed: FxHashMap<String, u64>,
    /// Events not yet published.
    pending: Vec<Alert>,
}

/// Of alert events read in topic order, the alerts from `source` still firing: the last event of
/// each alert id, those of them that are firing, and of several such under one key (two instances
/// each raised it) the newest.
pub fn latest_open(source: &str, events: impl IntoIterator<Item = Alert>) -> Vec<Alert> {
    let mut latest: std::collections::BTreeMap<String, Alert> = std::collections::BTreeMap::new();
    for alert in events.into_iter().filter(|a| a.source == source) {
        latest.insert(alert.id.clone(), alert);
    }
    let mut open: std::collections::BTreeMap<String, Alert> = std::collections::BTreeMap::new();
    for alert in latest.into_values().filter(|a| a.state == AlertState::Firing) {
        match open.get(&alert.key) {
            Some(newer) if newer.opened_unix_ms >= alert.opened_unix_ms => {}
            _ => {
                open.insert(alert.key.clone(), alert);
            }
        }
    }
    open.into_values().collect()
}

impl AlertBook {
    pub fn new(source: &'static str) -> Self {
        AlertBook { source, open: FxHashMap::default(), unconfirmed: FxHashMap::default(), pending: Vec::new() }
    }

    /// Opens alerts that were firing when this processor last stopped, unconfirmed, at `now_ms`
    /// (processing time). Publishes nothing.
    pub fn restore(&mut self, alerts: Vec<Alert>, now_ms: u64) {
        for alert in alerts {
            metrics::OPEN_ALERTS.with_label_values(&[self.source, alert.kind.as_str()]).inc();
            self.unconfirmed.insert(alert.key.clone(), now_ms);
            self.open.insert(alert.key.clone(), alert);
        }
    }

    /// The open alert of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Alert> {
        self.open.get(key)
    }

    /// Resolves restored alerts nothing confirmed within `grace_ms` of their restoring.
    pub fn expire_unconfirmed(&mut self, now_ms: u64, grace_ms: u64) {
        let expired: Vec<String> = self.unconfirmed.iter().filter(|(_, &since)| now_ms >= since.saturating_add(grace_ms)).map(|(key, _)| key.clone()).collect();
        for key in expired {
            self.unconfirmed.remove(&key);
            if let Some(summary) = self.open.get(&key).map(|a| format!("{} (not seen again since the processor restarted)", a.summary)) {
                self.resolve(&key, summary, None, now_ms);
            }
        }
    }

    pub fn key(kind: AlertKind, subject: &AlertSubject) -> String {
        match subject {
            AlertSubject::Operation { service, operation } => format!("{}:{service}:{operation}", kind.as_str()),
            AlertSubject::Edge { client, server, connection_type } => format!("{}:{client}->{server}:{connection_type}", kind.as_str()),
            AlertSubject::Slo { slo, service } => format!("{}:{service}:{slo}", kind.as_str()),
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
            // A restored alert whose condition is seen again stays open.
            self.unconfirmed.remove(&key);
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
        self.unconfirmed.remove(key);
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

    /// The queued events, for a caller that publishes them itself.
    pub fn take_pending(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.pending)
    }

    /// Puts back events taken with [`AlertBook::take_pending`] that could not be published, ahead
    /// of any queued since.
    pub fn requeue(&mut self, mut events: Vec<Alert>) {
        events.append(&mut self.pending);
        self.pending = events;
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

    #[test]
    fn restored_alerts_are_the_firing_ids_and_an_unconfirmed_one_expires() {
        let subject = || AlertSubject::Edge { client: "a".into(), server: "b".into(), connection_type: String::new() };
        let details = || AlertDetails::Edge(EdgeDetails { calls: 0, first_seen_unix_ms: 1, last_seen_unix_ms: 2 });
        let key = AlertBook::key(AlertKind::EdgeVanished, &subject());
        // Two instances raise the same key; the first resolves its own, the second is killed.
        let (mut a, mut b) = (AlertBook::new("test"), AlertBook::new("test"));
        let first = a.fire(key.clone(), AlertKind::EdgeVanished, Severity::Warning, subject(), "gone".into(), details(), 100).unwrap();
        let second = b.fire(key.clone(), AlertKind::EdgeVanished, Severity::Warning, subject(), "gone".into(), details(), 105).unwrap();
        let resolved = a.resolve(&key, "back".into(), None, 110).unwrap();
        let open = latest_open("test", [first, second.clone(), resolved]);
        assert_eq!(open.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [second.id.as_str()], "the second instance's alert is still open");
        let mut restarted = AlertBook::new("test");
        restarted.restore(open, 200);
        restarted.expire_unconfirmed(250, 100);
        assert!(restarted.is_open(&key), "within the grace");
        restarted.expire_unconfirmed(300, 100);
        assert!(!restarted.is_open(&key), "resolved once nothing confirmed it");
        assert_eq!(restarted.pending.len(), 1);
        assert_eq!((restarted.pending[0].id.as_str(), restarted.pending[0].state), (second.id.as_str(), AlertState::Resolved));
    }
}
