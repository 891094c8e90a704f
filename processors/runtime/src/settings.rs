//! Connection and pipeline settings, already validated (the binary builds them from topology.yaml).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach Kafka. `client` settings apply to every client; `consumer` and `producer` ones to
/// that kind only. Any librdkafka property (SASL, SSL, timeouts, …) passes through unchanged and
/// overrides tracepipe's defaults.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub client: BTreeMap<String, String>,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings { brokers: brokers.into(), ..Default::default() }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    pub fn consumer_config(&self, group: &str, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("group.id", group)
            // Offsets are stored and committed by the pipeline only (see the crate docs).
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Bounded prefetch (librdkafka's default is 64 MiB per consumer) ...
            .set("queued.max.messages.kbytes", "32768")
            // ... refilled soon after it drains: by default a partition whose queue was full
            // waits a whole second before its next fetch, which caps a small queue's throughput
            // (the assembler's, sized by its memory budget, at a third of what it takes).
            .set("fetch.queue.backoff.ms", "20")
            .set("statistics.interval.ms", "5000");
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
    }

    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // The Java client's key hashing, so tracepipe and JVM producers agree on partitions.
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.messages", "200000")
            // Bounded outputs in memory (librdkafka's default is 1 GiB); full means backpressure.
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "120000");
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
    }

    pub fn admin_config(&self, client_id: &str) -> ClientConfig {
        self.base(client_id)
    }
}

/// What one pipeline (one processor instance) reads and writes.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub kafka: KafkaSettings,
    pub group: String,
    /// Input topic names; [`crate::SourcePartition::input`] indexes this list.
    pub inputs: Vec<String>,
    /// Output topic names; [`crate::OutputId`] indexes this list.
    pub outputs: Vec<String>,
    pub dlq_topic: String,
    pub commit_interval: Duration,
    /// Unacknowledged outputs above which no more input is taken.
    pub max_in_flight: usize,
    /// How long shutdown may take to drain; keep it below the session timeout.
    pub drain_deadline: Duration,
    /// Attempts to deliver one output before the pipeline gives up (fatal).
    pub delivery_attempts: u32,
}

impl PipelineSettings {
    pub fn new(kafka: KafkaSettings, group: impl Into<String>, inputs: Vec<String>, outputs: Vec<String>, dlq_topic: impl Into<String>) -> Self {
        PipelineSettings {
            kafka,
            group: group.into(),
            inputs,
            outputs,
            dlq_topic: dlq_topic.into(),
            commit_interval: Duration::from_secs(1),
            max_in_flight: 50_000,
            drain_deadline: Duration::from_secs(8),
            delivery_attempts: 5,
        }
    }
}
