//! Error groups: a failed trace's root-cause span grouped by (service, operation, exception type,
//! normalized message). Normalizing replaces what varies between occurrences of one error —
//! numbers, hex ids and UUIDs, quoted values — so they group together. Groups are capped; past the
//! cap new ones count under an `__overflow__` group.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::metrics;
use tracepipe_analytics::OVERFLOW;

const MAX_MESSAGE: usize = 256;

/// `message` with the parts that vary replaced: `<n>` for numbers, `<id>` for hex ids and UUIDs
/// (8+ hex digits with at least one digit), `<str>` for quoted values.
pub fn normalize_message(message: &str, out: &mut String) {
    out.clear();
    let bytes = message.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_MESSAGE {
        let b = bytes[i];
        if b == b'"' || b == b'\'' {
            if let Some(close) = bytes[i + 1..].iter().position(|&c| c == b) {
                out.push_str("<str>");
                i += close + 2;
                continue;
            }
        }
        if b.is_ascii_alphanumeric() {
            // A word of letters, digits, and the dashes of UUIDs.
            let start = i;
            let joins = |i: usize, c: u8, next: u8| match c {
                b'-' => next.is_ascii_hexdigit(),
                b'.' => bytes[i - 1].is_ascii_digit() && next.is_ascii_digit(),
                _ => false,
            };
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || (i + 1 < bytes.len() && joins(i, bytes[i], bytes[i + 1]))) {
                i += 1;
            }
            let word = &message[start..i];
            let digits = word.bytes().filter(u8::is_ascii_digit).count();
            let hex = word.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
            if digits == word.len() || (digits > 0 && word.bytes().all(|c| c.is_ascii_digit() || c == b'.' )) {
                out.push_str("<n>");
            } else if hex && digits > 0 && word.len() >= 8 {
                out.push_str("<id>");
            } else if digits > 0 && word.bytes().next().is_some_and(|c| c.is_ascii_digit()) && word.trim_start_matches(|c: char| c.is_ascii_digit()).len() <= 3 {
                // A quantity with a unit: 30s, 250ms, 5xx stays as a unit on a number.
                out.push_str("<n>");
                out.push_str(word.trim_start_matches(|c: char| c.is_ascii_digit()));
            } else {
                out.push_str(word);
            }
            continue;
        }
        let ch = message[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
}

/// A stable 64-bit FNV-1a hash: group ids must be the same on every instance and every run.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

pub type GroupId = u32;

pub struct ErrorGroup {
    pub id: String,
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub exception_type: Arc<str>,
    pub message: Arc<str>,
}

pub struct ErrorGroups {
    by_hash: FxHashMap<u64, GroupId>,
    pub groups: Vec<ErrorGroup>,
    max_groups: usize,
    normalized: String,
}

impl ErrorGroups {
    pub fn new(max_groups: usize) -> Self {
        ErrorGroups { by_hash: FxHashMap::default(), groups: Vec::new(), max_groups: max_groups.max(1), normalized: String::new() }
    }

    pub fn group(&mut self, service: &str, operation: &str, exception_type: &str, message: &str) -> GroupId {
        let (service, operation, exception_type) = (tracepipe_analytics::bounded_name(service), tracepipe_analytics::bounded_name(operation), tracepipe_analytics::bounded_name(exception_type));
        normalize_message(tracepipe_analytics::bounded_name(message), &mut self.normalized);
        let hash = stable_hash(&[service, operation, exception_type, &self.normalized]);
        if let Some(&id) = self.by_hash.get(&hash) {
            return id;
        }
        if self.groups.len() >= self.max_groups {
            metrics::OVERFLOW_SPANS.with_label_values(&["max_error_groups"]).inc();
            let hash = stable_hash(&[OVERFLOW]);
            if let Some(&id) = self.by_hash.get(&hash) {
                return id;
            }
            return self.insert(hash, OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW);
        }
        let normalized = std::mem::take(&mut self.normalized);
        let id = self.insert(hash, service, operation, exception_type, &normalized);
        self.normalized = normalized;
        id
    }

    fn insert(&mut self, hash: u64, service: &str, operation: &str, exception_type: &str, message: &str) -> GroupId {
        let id = self.groups.len() as GroupId;
        self.groups.push(ErrorGroup {
            id: format!("{hash:016x}"),
            service: service.into(),
            operation: operation.into(),
            exception_type: exception_type.into(),
            message: message.into(),
        });
        self.by_hash.insert(hash, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(message: &str) -> String {
        let mut out = String::new();
        normalize_message(message, &mut out);
        out
    }

    #[test]
    fn varying_parts_are_replaced() {
        assert_eq!(normalized("order 12345 not found"), "order <n> not found");
        assert_eq!(normalized("user 'alice' has no cart 9f86d081884c7d65"), "user <str> has no cart <id>");
        assert_eq!(normalized("request 123e4567-e89b-12d3-a456-426614174000 failed"), "request <id> failed");
        assert_eq!(normalized("timed out after 30s (limit 2.5)"), "timed out after <n>s (limit <n>)");
        assert_eq!(normalized("SELECT orders timed out"), "SELECT orders timed out");
        assert_eq!(normalized("naïve café"), "naïve café");
        assert!(normalized(&"x ".repeat(10_000)).len() <= MAX_MESSAGE + 8);
    }

    #[test]
    fn groups_are_stable_and_capped() {
        let mut groups = ErrorGroups::new(3);
        let a = groups.group("svc", "op", "Timeout", "after 10 ms");
        assert_eq!(groups.group("svc", "op", "Timeout", "after 20 ms"), a);
        assert_eq!(groups.groups[a as usize].id, format!("{:016x}", stable_hash(&["svc", "op", "Timeout", "after <n> ms"])));
        for i in 0..100 {
            groups.group("svc", &format!("op{i}"), "E", "m");
        }
        assert!(groups.groups.len() <= 4);
    }
}
