use rdkafka::error::KafkaError;
use thiserror::Error;

/// Errors that stop a pipeline. Poison input never does (it goes to the DLQ); transient broker
/// errors are retried by librdkafka and logged. What is left is fatal: the process exits non-zero
/// so the orchestrator restarts it, and it resumes from the last committed position.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("invalid kafka client setting: {0}")]
    Config(#[source] KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error("output to {topic} failed after {attempts} attempts: {source}")]
    Delivery { topic: String, attempts: u32, source: KafkaError },
    #[error("fatal kafka error: {0}")]
    Fatal(KafkaError),
    #[error("{what} was refused ({code:?}): {detail}")]
    Refused { what: &'static str, code: rdkafka::error::RDKafkaErrorCode, detail: String },
    #[error("records cannot be read ({code:?}) and hold {}: {detail}; skipping them would lose what they hold, so the pipeline stops for an operator to decide (move the group's offset past them with kafka-consumer-groups --reset-offsets, or fix the producer)", if partitions.is_empty() { "a partition".to_string() } else { partitions.join(", ") })]
    Unreadable { code: rdkafka::error::RDKafkaErrorCode, partitions: Vec<String>, detail: String },
    #[error("drain did not finish within {0:?}; uncommitted input will be replayed")]
    DrainDeadline(std::time::Duration),
}
