//! What the processors that derive data from traces share: the structure of a trace and its
//! critical path ([`tree`]), latency histograms ([`latency`]), per-partition event-time windows ([`segments`]),
//! the alert lifecycle ([`alerts`]), conditions that select spans and traces ([`matcher`]), and
//! the label a capped series falls into ([`OVERFLOW`]).
//!
//! No Kafka here: the analyzer, the dependencies processor, the sampler and the query server all
//! link this crate.

pub mod alerts;
pub mod latency;
pub mod matcher;
mod metrics;
pub mod segments;
pub mod tree;

/// The label value a series takes once its cardinality cap is reached (service, operation, edge
/// peer or sampling key): its traffic is still counted, under this one name.
pub const OVERFLOW: &str = "__overflow__";
