//! Headers of dead-letter records. The record's key and value are the original ones; these say
//! which processor gave up on it, why, and where it came from.

pub const HEADER_PROCESSOR: &str = "tracepipe.dlq.processor";
pub const HEADER_REASON: &str = "tracepipe.dlq.reason";
/// A short stable kind of the reason (`decode`, `rejected_spans`, `output_rejected` refused by
/// the producer, `output_refused` refused by the broker).
pub const HEADER_KIND: &str = "tracepipe.dlq.kind";
pub const HEADER_SOURCE_TOPIC: &str = "tracepipe.dlq.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "tracepipe.dlq.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "tracepipe.dlq.source.offset";
/// For `output_refused`: the topic that refused the record (the record is the output itself,
/// and the source headers name the input position it was derived from).
pub const HEADER_OUTPUT_TOPIC: &str = "tracepipe.dlq.output.topic";
