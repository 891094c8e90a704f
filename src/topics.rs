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
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = topology.kafka.admin_config("tracepipe-admin").create().ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let resources: Vec<ResourceSpecifier<'_>> = topics.iter().map(|topic| ResourceSpecifier::Topic(topic)).collect();
    let described = match admin.describe_configs(&resources, &options).await {
        Ok(described) => described,
        Err(error) => {
            tracing::debug!(%error, ?topics, "the broker does not describe topic configs");
            return None;
        }
    };
    described
        .into_iter()
        .filter_map(|resource| resource.ok()?.get("max.message.bytes")?.value.as_deref()?.trim().parse::<usize>().ok())
        .min()
}
