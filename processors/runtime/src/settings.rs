//! Connection and pipeline settings, already validated (the binary builds them from topology.yaml).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach Kafka. `client` settings apply to every client; `consumer` and `producer` ones to
/// that kind only. Any librdkafka property (SASL, SSL, timeouts, …) passes through unchanged and
/// overrides tracepipe's defaults, under either of its names where librdkafka has two.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub client: BTreeMap<String, String>,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

/// The librdkafka properties tracepipe sets that librdkafka also knows by another name. Given
/// both names, librdkafka applies them in the order it is handed them, which for a `ClientConfig`
/// is a hash map's: a user's value under one name must replace a default set under the other.
const ALIASES: [(&str, &str); 5] = [
    ("bootstrap.servers", "metadata.broker.list"),
    ("acks", "request.required.acks"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("compression.type", "compression.codec"),
    ("message.timeout.ms", "delivery.timeout.ms"),
];

fn other_name(key: &str) -> Option<&'static str> {
    ALIASES.iter().find_map(|&(name, alias)| if key == name { Some(alias) } else if key == alias { Some(name) } else { None })
}

/// Sets each of `settings`, first removing what was set under its other name.
fn override_defaults(config: &mut ClientConfig, settings: &BTreeMap<String, String>) {
    for (key, value) in settings {
        if let Some(other) = other_name(key) {
            config.remove(other);
        }
        config.set(key, value);
    }
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings { brokers: brokers.into(), ..Default::default() }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        config
    }

    /// Overrides `config`'s defaults with the settings for every client, then with those for
    /// its kind, which win.
    fn override_with(&self, mut config: ClientConfig, kind: &BTreeMap<String, String>) -> ClientConfig {
        override_defaults(&mut config, &self.client);
        override_defaults(&mut config, kind);
        config
    }

    /// Whether the producer settings (or the settings for every client) give `key`, under
    /// either of its names.
    pub fn sets_producer(&self, key: &str) -> bool {
        let given = |name: &str| self.producer.contains_key(name) || self.client.contains_key(name);
        given(key) || other_name(key).is_some_and(given)
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
        self.override_with(config, &self.consumer)
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
        self.override_with(config, &self.producer)
    }

    /// The most bytes the producer queues (`queue.buffering.max.kbytes`), as configured.
    pub fn producer_queue_bytes(&self) -> usize {
        let config = self.producer_config("size");
        config.get("queue.buffering.max.kbytes").and_then(|k| k.trim().parse::<usize>().ok()).unwrap_or(1_048_576).saturating_mul(1024)
    }

    pub fn admin_config(&self, client_id: &str) -> ClientConfig {
        self.override_with(self.base(client_id), &BTreeMap::new())
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
    /// Where and how much of its own work the pipeline traces; `None` traces nothing.
    pub self_trace: Option<crate::self_trace::SelfTraceSettings>,
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
            self_trace: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's setting replaces tracepipe's default under either of librdkafka's names for it;
    /// settings for every client beat a kind's defaults and lose to that kind's own settings.
    #[test]
    fn user_settings_override_defaults_under_either_name() {
        let mut kafka = KafkaSettings::new("127.0.0.1:9092");
        kafka.producer.insert("delivery.timeout.ms".into(), "5000".into());
        kafka.producer.insert("queue.buffering.max.ms".into(), "50".into());
        kafka.producer.insert("acks".into(), "1".into());
        kafka.client.insert("metadata.broker.list".into(), "kafka-1:9092".into());
        kafka.client.insert("compression.codec".into(), "zstd".into());
        kafka.client.insert("request.required.acks".into(), "all".into());
        kafka.client.insert("session.timeout.ms".into(), "30000".into());
        let producer = kafka.producer_config("test");
        assert_eq!(producer.get("message.timeout.ms"), None);
        assert_eq!(producer.get("delivery.timeout.ms"), Some("5000"));
        assert_eq!(producer.get("linger.ms"), None);
        assert_eq!(producer.get("bootstrap.servers"), None);
        assert_eq!(producer.get("metadata.broker.list"), Some("kafka-1:9092"));
        assert_eq!(producer.get("compression.type"), None, "a setting for every client beats a producer default");
        assert_eq!((producer.get("acks"), producer.get("request.required.acks")), (Some("1"), None), "the producer's own setting wins");
        assert!(kafka.sets_producer("message.timeout.ms"));
        assert!(kafka.sets_producer("compression.type"));
        assert!(!kafka.sets_producer("partitioner"));
        let consumer = kafka.consumer_config("group", "test");
        assert_eq!(consumer.get("metadata.broker.list"), Some("kafka-1:9092"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("30000"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
    }

    /// The librdkafka this build links has what production clusters ask for: TLS, SASL PLAIN,
    /// SCRAM and OAUTHBEARER with OIDC (libcurl), and every codec.
    #[test]
    fn librdkafka_is_built_with_tls_sasl_oidc_and_every_codec() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for feature in ["gzip", "snappy", "lz4", "zstd", "ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer", "oidc"] {
            assert!(features.split(',').any(|f| f == feature), "librdkafka lacks {feature}: {features}");
        }
        let mut kafka = KafkaSettings::new("127.0.0.1:9093");
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "tracepipe"),
            ("sasl.oauthbearer.client.secret", "secret"),
            ("sasl.oauthbearer.token.endpoint.url", "https://login.example.com/oauth2/token"),
        ] {
            kafka.client.insert(key.into(), value.into());
        }
        let producer: Result<rdkafka::producer::BaseProducer, _> = kafka.producer_config("test").create();
        assert!(producer.is_ok(), "an OIDC client is accepted: {:?}", producer.err());
    }
}
