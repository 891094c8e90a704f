//! The embedded Kafka-protocol broker of `tracepipe up`: librdkafka's in-process mock cluster,
//! reachable at a fixed address by forwarding it to the mock's own bootstrap port (clients then
//! follow the metadata to the mock's loopback ports).

use std::net::SocketAddr;

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::topology::Topology;

pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster with every topic of the topology.
    pub fn start(topology: &Topology) -> anyhow::Result<EmbeddedBroker> {
        let cluster = MockCluster::new(1).context("start the embedded broker")?;
        for (name, spec) in &topology.topics {
            cluster.create_topic(name, spec.partitions, 1).with_context(|| format!("create topic {name}"))?;
        }
        Ok(EmbeddedBroker { cluster })
    }

    /// The mock's own bootstrap address.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Accepts connections on `listen` and forwards each to the mock's bootstrap broker.
    pub async fn forward(&self, listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
        let target = self.bootstrap_servers();
        let listener = TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
        let local = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let target = target.clone();
                tokio::spawn(async move {
                    match TcpStream::connect(&target).await {
                        Ok(mut outbound) => {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(error) => tracing::warn!(%error, %target, "embedded broker unreachable"),
                    }
                });
            }
        });
        Ok(local)
    }
}
