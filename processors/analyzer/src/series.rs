//! Interned (service, operation) names and (service, operation, span kind) series, cardinality
//! capped; every analysis names its series by them.
//!
//! A span is looked up by borrowed names (two hash lookups, no allocation); names are copied once,
//! when first seen, cut to `MAX_NAME_BYTES`. Past `max_operations_per_service` a service's new operations count under the
//! operation `__overflow__`; past `max_series` new series count under service and operation
//! `__overflow__`. Either way the span is counted, and so is the overflow.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::metrics;

use tracepipe_analytics::OVERFLOW;

/// A (service, operation) pair.
pub type OperationId = u32;
/// A (service, operation, span kind) triple.
pub type SeriesId = u32;

const NO_SERIES: u32 = u32::MAX;

pub struct Operation {
    pub service: Arc<str>,
    pub name: Arc<str>,
    series: [SeriesId; 6],
}

pub struct Series {
    pub operation: OperationId,
    pub kind: u8,
}

struct ServiceEntry {
    operations: FxHashMap<Box<str>, OperationId>,
}

pub struct SeriesTable {
    services: FxHashMap<Box<str>, ServiceEntry>,
    pub operations: Vec<Operation>,
    pub series: Vec<Series>,
    max_series: usize,
    max_operations_per_service: usize,
}

pub fn kind_label(kind: u8) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

impl SeriesTable {
    pub fn new(max_series: usize, max_operations_per_service: usize) -> Self {
        SeriesTable {
            services: FxHashMap::default(),
            operations: Vec::new(),
            series: Vec::new(),
            max_series: max_series.max(1),
            max_operations_per_service: max_operations_per_service.max(1),
        }
    }

    /// The operation of `service` named `name`, interned on first sight (or the overflow one).
    pub fn operation(&mut self, service: &str, name: &str) -> OperationId {
        let (service, name) = (tracepipe_analytics::bounded_name(service), tracepipe_analytics::bounded_name(name));
        if let Some(&id) = self.services.get(service).and_then(|s| s.operations.get(name)) {
            return id;
        }
        self.intern_operation(service, name)
    }

    #[cold]
    fn intern_operation(&mut self, service: &str, name: &str) -> OperationId {
        let over_total = self.series.len() >= self.max_series;
        let (service, name, limit) = match self.services.get(service) {
            _ if over_total => (OVERFLOW, OVERFLOW, "max_series"),
            Some(entry) if entry.operations.len() >= self.max_operations_per_service => (service, OVERFLOW, "max_operations_per_service"),
            None if self.services.len() >= self.max_series => (OVERFLOW, OVERFLOW, "max_series"),
            _ => (service, name, ""),
        };
        if !limit.is_empty() {
            metrics::OVERFLOW_SPANS.with_label_values(&[limit]).inc();
        }
        let operations = self.operations.len() as OperationId;
        let entry = self.services.entry(service.into()).or_insert_with(|| ServiceEntry { operations: FxHashMap::default() });
        if let Some(&id) = entry.operations.get(name) {
            return id;
        }
        entry.operations.insert(name.into(), operations);
        self.operations.push(Operation { service: service.into(), name: name.into(), series: [NO_SERIES; 6] });
        operations
    }

    /// The series of `operation` with span kind `kind`.
    pub fn series(&mut self, mut operation: OperationId, kind: u8) -> SeriesId {
        let kind = if kind < 6 { kind } else { 0 };
        let id = self.operations[operation as usize].series[kind as usize];
        if id != NO_SERIES {
            return id;
        }
        if self.series.len() >= self.max_series && &*self.operations[operation as usize].name != OVERFLOW {
            metrics::OVERFLOW_SPANS.with_label_values(&["max_series"]).inc();
            operation = self.intern_operation(OVERFLOW, OVERFLOW);
            let id = self.operations[operation as usize].series[kind as usize];
            if id != NO_SERIES {
                return id;
            }
        }
        let id = self.series.len() as SeriesId;
        self.series.push(Series { operation, kind });
        self.operations[operation as usize].series[kind as usize] = id;
        metrics::SERIES.set(self.series.len() as i64);
        id
    }

    pub fn names(&self, series: SeriesId) -> (&Operation, u8) {
        let s = &self.series[series as usize];
        (&self.operations[s.operation as usize], s.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinality_is_capped_with_overflow_series() {
        let mut table = SeriesTable::new(50, 10);
        for i in 0..1_000 {
            let op = table.operation("svc", &format!("op-{i}"));
            table.series(op, 2);
        }
        assert_eq!(table.operations.len(), 11, "ten operations and the service's overflow");
        assert_eq!(&*table.operations[10].name, OVERFLOW);
        for i in 0..1_000 {
            let op = table.operation(&format!("svc-{i}"), "op");
            table.series(op, 2);
        }
        assert!(table.series.len() <= 50 + 6, "{} series", table.series.len());
        let over = table.operation("svc-999", "op");
        assert_eq!((&*table.operations[over as usize].service, &*table.operations[over as usize].name), (OVERFLOW, OVERFLOW));
    }
}
