//! Cohorts: the requests each (service, operation, span kind) served, split by the value of each
//! cohort attribute (by default `service.version` and `deployment.environment.name`, and the
//! variant of every feature flag the request evaluated), with an HDR latency histogram and an
//! error count per value and window ([`CohortRollup`]). Counted before sampling, so comparisons
//! of versions and variants (`/api/v1/compare`, canary verdicts) are computed from every request.
//!
//! A request is a server or consumer span, or a root of any kind. An attribute is read from the
//! span, then its resource; a flag's variant from the span's `feature_flag.evaluation` events,
//! as the attribute `feature_flag.<key>`. Each attribute keeps at most `max_values` values; later
//! ones count under the overflow label. At most `max_flags` flag keys are tracked.

use rustc_hash::FxHashMap;
use tracepipe_analytics::latency::{new_histogram, record_nanos, sparse, LatencyHistogram};
use tracepipe_analytics::transactions::text;
use tracepipe_analytics::{bounded_name, OVERFLOW};
use tracepipe_processor::SourcePartition;
use tracepipe_schemas::analytics::{CohortRollup, Rollup, ROLLUP_SCHEMA};

use crate::analysis::{in_key_order, Analysis, Names, ObservedTrace, Publisher, SegmentPublication, SegmentWindows, WindowRef};
use crate::series::{self, SeriesId};

/// `processors.analyzer.cohorts`.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortConfig {
    /// Span or resource attributes whose values split the series.
    pub attributes: Vec<String>,
    /// Split by the variants of evaluated feature flags too.
    pub feature_flags: bool,
    /// Values kept per attribute (and per flag).
    pub max_values: usize,
    /// Flag keys tracked.
    pub max_flags: usize,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig { attributes: vec!["service.version".into(), "deployment.environment.name".into()], feature_flags: true, max_values: 32, max_flags: 64 }
    }
}

impl CohortConfig {
    pub fn is_enabled(&self) -> bool {
        !self.attributes.is_empty() || self.feature_flags
    }
}

pub const FLAG_PREFIX: &str = "feature_flag.";

/// One attribute's values, interned up to the cap.
#[derive(Default)]
struct Values {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    overflow: Option<u32>,
}

impl Values {
    fn id(&mut self, value: &str, cap: usize) -> u32 {
        // Cut first, so values longer than a name may be that share their start are one value.
        let value = bounded_name(value);
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        if self.names.len() >= cap {
            return *self.overflow.get_or_insert_with(|| {
                self.names.push(OVERFLOW.into());
                (self.names.len() - 1) as u32
            });
        }
        let value: Box<str> = value.into();
        self.names.push(value.clone());
        let id = (self.names.len() - 1) as u32;
        self.ids.insert(value, id);
        id
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CohortKey {
    series: SeriesId,
    attribute: u32,
    value: u32,
}

struct CohortWindow {
    histogram_us: LatencyHistogram,
    errors: u64,
}

pub struct Cohorts {
    config: CohortConfig,
    /// Attribute names: the configured ones first, then `feature_flag.<key>` as flags appear.
    attributes: Vec<String>,
    flag_ids: FxHashMap<Box<str>, u32>,
    values: Vec<Values>,
    windows: SegmentWindows<FxHashMap<CohortKey, CohortWindow>>,
    /// Scratch: the (attribute, value) pairs of one span.
    found: Vec<(u32, u32)>,
    /// Scratch per trace: each resource's value of each attribute, once looked up.
    resource_ids: Vec<Option<u32>>,
    resource_done: Vec<bool>,
}

/// Cohort attributes at most (`cohorts.attributes`): a span's are looked up in one pass.
pub const MAX_ATTRIBUTES: usize = 16;

const SERVER: u8 = 2;
const CONSUMER: u8 = 5;

impl Cohorts {
    pub fn new(mut config: CohortConfig) -> Self {
        // The configuration refuses more; a config built in code is cut to fit.
        config.attributes.truncate(MAX_ATTRIBUTES);
        let attributes = config.attributes.clone();
        let values = attributes.iter().map(|_| Values::default()).collect();
        Cohorts { config, attributes, flag_ids: FxHashMap::default(), values, windows: SegmentWindows::default(), found: Vec::new(), resource_ids: Vec::new(), resource_done: Vec::new() }
    }

    fn flag_attribute(&mut self, key: &str) -> Option<u32> {
        if let Some(&id) = self.flag_ids.get(key) {
            return Some(id);
        }
        if self.flag_ids.len() >= self.config.max_flags {
            return None;
        }
        let id = self.attributes.len() as u32;
        self.attributes.push(format!("{FLAG_PREFIX}{}", bounded_name(key)));
        self.values.push(Values::default());
        self.flag_ids.insert(key.into(), id);
        Some(id)
    }
}

impl Analysis for Cohorts {
    fn observe(&mut self, trace: &ObservedTrace<'_, '_>, window: WindowRef, _names: &Names<'_>, _out: &mut Publisher<'_>) {
        let view = trace.view;
        let cap = self.config.max_values;
        let keys = self.config.attributes.len();
        self.resource_done.clear();
        self.resource_done.resize(view.resources.len(), false);
        self.resource_ids.clear();
        self.resource_ids.resize(view.resources.len() * keys, None);
        for (span, &(_, series)) in view.spans.iter().zip(trace.span_series) {
            if !(matches!(span.kind, SERVER | CONSUMER) || span.is_root()) {
                continue;
            }
            self.found.clear();
            // One pass over the span for its attributes and flags; each resource's values once
            // per trace.
            let mut on_span = [None; MAX_ATTRIBUTES];
            let mut flags: Vec<(&str, &str)> = Vec::new();
            let want_flags = self.config.feature_flags;
            span.scan(&self.config.attributes, &mut on_span[..keys], |key, variant| {
                if want_flags {
                    flags.push((key, variant));
                }
            });
            let resource = span.resource as usize;
            if !self.resource_done[resource] {
                for attribute in 0..keys {
                    let value = view.resource_attribute(span, &self.config.attributes[attribute]).and_then(label);
                    self.resource_ids[resource * keys + attribute] = value.map(|v| self.values[attribute].id(&v, cap));
                }
                self.resource_done[resource] = true;
            }
            for (attribute, value) in on_span[..keys].iter().enumerate() {
                let id = match value.and_then(label) {
                    Some(value) => Some(self.values[attribute].id(&value, cap)),
                    None => self.resource_ids[resource * keys + attribute],
                };
                if let Some(id) = id {
                    self.found.push((attribute as u32, id));
                }
            }
            for (key, variant) in flags {
                if let Some(attribute) = self.flag_attribute(key) {
                    let id = self.values[attribute as usize].id(variant, cap);
                    self.found.push((attribute, id));
                }
            }
            // A request counts once per attribute: a flag evaluated twice keeps its last variant.
            self.found.reverse();
            self.found.sort_by_key(|&(attribute, _)| attribute);
            self.found.dedup_by_key(|&mut (attribute, _)| attribute);
            if self.found.is_empty() {
                continue;
            }
            let duration = span.duration_nanos();
            let failed = span.is_error();
            let windows = self.windows.window(window);
            for &(attribute, value) in &self.found {
                let entry = windows.entry(CohortKey { series, attribute, value }).or_insert_with(|| CohortWindow { histogram_us: new_histogram(), errors: 0 });
                record_nanos(&mut entry.histogram_us, duration);
                entry.errors += u64::from(failed);
            }
        }
    }

    fn publish(&mut self, segment: &SegmentPublication<'_>, names: &Names<'_>, out: &mut Publisher<'_>) {
        let Some(mut state) = self.windows.for_publication(segment.segment, segment.closed) else {
            return;
        };
        for (start, cohorts) in state.windows() {
            for (key, counted) in in_key_order(cohorts) {
                let (operation, kind) = names.table.names(key.series);
                let attribute = &self.attributes[key.attribute as usize];
                let value = &self.values[key.attribute as usize].names[key.value as usize];
                let record = Rollup::Cohort(CohortRollup {
                    schema: ROLLUP_SCHEMA.into(),
                    window_start_unix_ms: start / 1_000_000,
                    window_seconds: segment.window_seconds,
                    service: operation.service.to_string(),
                    operation: operation.name.to_string(),
                    span_kind: series::kind_label(kind).into(),
                    attribute: attribute.clone(),
                    value: value.to_string(),
                    count: counted.histogram_us.len(),
                    errors: counted.errors,
                    histogram_us: sparse(&counted.histogram_us),
                    counted_in: segment.counted_in(start),
                });
                out.rollup(&format!("{}/{}", operation.service, operation.name), &record, "cohort");
            }
        }
    }

    fn release(&mut self, sources: &[SourcePartition]) {
        self.windows.release(sources);
    }
}

/// The value as a label; strings are borrowed, not copied.
fn label(value: tracepipe_schemas::trace_view::AttributeValue<'_>) -> Option<std::borrow::Cow<'_, str>> {
    match value.as_str() {
        Some(s) => Some(std::borrow::Cow::Borrowed(s)),
        None => text(value).map(std::borrow::Cow::Owned),
    }
}
