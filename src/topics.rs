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
