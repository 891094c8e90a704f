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
    #[error("drain did not finish within {0:?}; uncommitted input will be replayed")]
    DrainDeadline(std::time::Duration),
}
