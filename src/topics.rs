//! `tracepipe topics create`: creates the topology's topics, idempotently.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::topology::Topology;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopicsCreated {
    pub created: Vec<String>,
    pub existing: Vec<String>,
}

pub async fn create(topology: &Topology) -> anyhow::Result<TopicsCreated> {
    let admin: AdminClient<DefaultClientContext> = topology.kafka.admin_config("tracepipe-admin").create().context("create admin client")?;
    let configs: Vec<Vec<(String, String)>> = topology
        .topics
        .values()
        .map(|spec| {
            let mut config: Vec<(String, String)> = spec.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if let Some(retention) = spec.retention {
                config.push(("retention.ms".into(), retention.as_millis().to_string()));
            }
            config
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topology
        .topics
        .iter()
        .zip(&configs)
        .map(|((name, spec), config)| {
            let mut topic = NewTopic::new(name, spec.partitions, TopicReplication::Fixed(spec.replication));
            for (key, value) in config {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))).request_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await.context("create topics")?;
    let mut outcome = TopicsCreated::default();
    for result in results {
        match result {
            Ok(name) => outcome.created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => outcome.existing.push(name),
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(outcome)
}

/// The smallest `max.message.bytes` the broker reports for `topics`, if it reports any: the
/// largest record all of them take.
pub async fn max_message_bytes(topology: &Topology, topics: &[&str]) -> Option<usize> {
    let limits = topic_limits(topology).await;
    topics.iter().filter_map(|topic| limits.get(*topic).copied()).min()
}

/// Each topology topic's `max.message.bytes` as the broker reports it, asked once per broker
/// list and process: every processor that starts asks, and a broker that does not answer
/// (the embedded one) costs the request timeout once, not once per processor.
async fn topic_limits(topology: &Topology) -> std::sync::Arc<std::collections::BTreeMap<String, usize>> {
    use rdkafka::admin::ResourceSpecifier;
    type Limits = std::sync::Arc<std::collections::BTreeMap<String, usize>>;
    static DESCRIBED: std::sync::Mutex<Vec<(String, std::sync::Arc<tokio::sync::OnceCell<Limits>>)>> = std::sync::Mutex::new(Vec::new());
    let brokers = topology.kafka.brokers.clone();
    let cell = {
        let mut described = DESCRIBED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match described.iter().find(|(b, _)| *b == brokers) {
            Some((_, cell)) => cell.clone(),
            None => {
                let cell = std::sync::Arc::new(tokio::sync::OnceCell::new());
                described.push((brokers, cell.clone()));
                cell
            }
        }
    };
    cell.get_or_init(|| async {
        let Ok(admin) = topology.kafka.admin_config("tracepipe-admin").create::<AdminClient<DefaultClientContext>>() else { return Limits::default() };
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let names: Vec<&str> = topology.topics.keys().map(String::as_str).collect();
        let resources: Vec<ResourceSpecifier<'_>> = names.iter().map(|topic| ResourceSpecifier::Topic(topic)).collect();
        let described = match admin.describe_configs(&resources, &options).await {
            Ok(described) => described,
            Err(error) => {
                tracing::debug!(%error, "the broker does not describe topic configs");
                return Limits::default();
            }
        };
        let limits = described
            .into_iter()
            .filter_map(|resource| {
                let resource = resource.ok()?;
                let name = match &resource.specifier {
                    rdkafka::admin::OwnedResourceSpecifier::Topic(name) => name.clone(),
                    _ => return None,
                };
                Some((name, resource.get("max.message.bytes")?.value.as_deref()?.trim().parse::<usize>().ok()?))
            })
            .collect();
        std::sync::Arc::new(limits)
    })
    .await
    .clone()
}

/// `tracepipe topics manifest`: the topology's topics as Strimzi `KafkaTopic` resources, so that a
/// cluster run by the Strimzi operator gets its topics from topology.yaml, the one place they are
/// written. A topic name that is not a Kubernetes object name (`otlp_spans`) keeps its name in
/// `spec.topicName` under a resource name that is.
pub fn manifest(topology: &Topology, cluster: &str, namespace: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::from("# Generated by `tracepipe topics manifest` from topology.yaml; edit that file, not this one.\n");
    for (name, spec) in &topology.topics {
        let mut config = serde_json::Map::new();
        if let Some(retention) = spec.retention {
            config.insert("retention.ms".into(), (retention.as_millis() as u64).into());
        }
        for (key, value) in &spec.config {
            // Strimzi takes numbers and booleans as such; Kafka reads every value as text anyway.
            let value = value.parse::<i64>().map(serde_json::Value::from).or_else(|_| value.parse::<bool>().map(serde_json::Value::from)).unwrap_or_else(|_| value.clone().into());
            config.insert(key.clone(), value);
        }
        let resource = resource_name(name);
        let mut metadata = serde_json::json!({ "name": resource, "labels": { "strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "tracepipe" } });
        if let Some(namespace) = namespace {
            metadata["namespace"] = namespace.into();
        }
        let mut topic_spec = serde_json::json!({ "partitions": spec.partitions, "replicas": spec.replication, "config": config });
        if resource != *name {
            topic_spec["topicName"] = name.clone().into();
        }
        let object = serde_json::json!({ "apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic", "metadata": metadata, "spec": topic_spec });
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object).context("write a KafkaTopic")?);
    }
    Ok(out)
}

/// A Kubernetes object name (RFC 1123 subdomain: lower case, digits, `-` and `.`) for a topic.
fn resource_name(topic: &str) -> String {
    let name: String = topic
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    name.trim_matches(|c| c == '-' || c == '.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn every_topic_becomes_a_kafka_topic_with_its_partitions_replicas_and_config() {
        let topology = Topology::from_yaml(crate::topology::DEFAULT_TOPOLOGY).unwrap();
        let text = manifest(&topology, "events", Some("tracing")).unwrap();
        let objects: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text).map(|doc| serde_json::Value::deserialize(doc).unwrap()).collect();
        assert_eq!(objects.len(), topology.topics.len());
        let otlp = objects.iter().find(|o| o["spec"]["topicName"] == "otlp_spans").expect("otlp_spans keeps its name");
        assert_eq!(otlp["metadata"]["name"], "otlp-spans");
        assert_eq!(otlp["metadata"]["namespace"], "tracing");
        assert_eq!(otlp["metadata"]["labels"]["strimzi.io/cluster"], "events");
        assert_eq!(otlp["spec"]["partitions"], 6);
        assert_eq!(otlp["spec"]["config"]["retention.ms"], 86_400_000u64);
        let traces = objects.iter().find(|o| o["metadata"]["name"] == "tracepipe.traces").unwrap();
        assert!(traces["spec"].get("topicName").is_none());
        assert_eq!(traces["spec"]["config"]["max.message.bytes"], 10_485_760);
        assert_eq!(resource_name("Jaeger_Spans_"), "jaeger-spans");
    }
}
