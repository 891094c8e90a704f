//! Reading a topic from its beginning to its end, outside any consumer group: how a processor
//! that starts rebuilds state it published before (its open alerts, from the alerts topic).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

/// Why a topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {topic}: {source}")]
    Kafka { topic: String, source: rdkafka::error::KafkaError },
    #[error("reading {topic}: not at its end after {timeout:?}")]
    Timeout { topic: String, timeout: Duration },
}

/// Every record of `topic` from the beginning up to its end when the call started, as
/// (key, value), partition by partition in offset order. Offsets are not committed anywhere.
pub fn read_to_end(kafka: &KafkaSettings, topic: &str, timeout: Duration) -> Result<Vec<(Option<Vec<u8>>, Vec<u8>)>, ReplayError> {
    let error = |source| ReplayError::Kafka { topic: topic.to_string(), source };
    let deadline = Instant::now() + timeout;
    // A group id is required by librdkafka even when nothing is committed.
    let mut config = kafka.consumer_config("tracepipe-replay", "tracepipe-replay");
    config.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create().map_err(error)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(error)?;
    let partitions: Vec<i32> = metadata.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for partition in partitions {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (low, high) = consumer.fetch_watermarks(topic, partition, remaining).map_err(error)?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Offset(low)).map_err(error)?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment).map_err(error)?;
    while !ends.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReplayError::Timeout { topic: topic.to_string(), timeout });
        }
        match consumer.poll(remaining.min(Duration::from_millis(200))) {
            Some(Ok(message)) => {
                let partition = message.partition();
                if let Some(&end) = ends.get(&partition) {
                    if message.offset() < end {
                        records.push((message.key().map(<[u8]>::to_vec), message.payload().unwrap_or_default().to_vec()));
                    }
                    if message.offset() + 1 >= end {
                        ends.remove(&partition);
                    }
                }
            }
            Some(Err(e)) => return Err(error(e)),
            None => {}
        }
    }
    Ok(records)
}
