//! Starting processors from the topology, for `tracepipe run` and `tracepipe up`.

use std::thread::JoinHandle;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracepipe_analyzer::{Analyzer, AnalyzerOutputs};
use tracepipe_assembler::{AssemblerConfig, TraceAssembler};
use tracepipe_dependencies::{Dependencies, DependenciesOutputs};
use tracepipe_router::Router;
use tracepipe_sampler::TailSampler;
use tracepipe_sink::{Sink, Store, StoreUrl};
use tracepipe_runtime::{Health, OutputId, Pipeline, PipelineExit, RuntimeError};

use crate::topology::Topology;

pub type PipelineHandle = JoinHandle<Result<PipelineExit, RuntimeError>>;

/// Starts processor `name` on its own thread.
pub fn spawn(topology: &Topology, name: &str, shutdown: &CancellationToken, health: &Health) -> anyhow::Result<PipelineHandle> {
    match name {
        "router" => {
            let spec = topology.router.as_ref().context("topology has no processors.router section")?;
            let router = Router::new(spec.inputs.iter().map(|(_, e)| *e).collect(), OutputId(0), spec.max_message_bytes);
            Ok(Pipeline::new(topology.router_pipeline(spec), router).spawn(shutdown.clone(), health.clone()))
        }
        "assembler" => {
            let spec = topology.assembler.as_ref().context("topology has no processors.assembler section")?;
            let assembler = TraceAssembler::new(spec.config.clone(), OutputId(0));
            let mut settings = topology.stage_pipeline(spec);
            spec.config.bound_kafka_buffers(&mut settings.kafka);
            Ok(Pipeline::new(settings, assembler).spawn(shutdown.clone(), health.clone()))
        }
        "sampler" => {
            let spec = topology.sampler.as_ref().context("topology has no processors.sampler section")?;
            let sampler = TailSampler::new(spec.config.clone(), OutputId(0));
            let mut settings = topology.stage_pipeline(spec);
            topology.assembler.as_ref().map_or_else(AssemblerConfig::default, |a| a.config.clone()).allow_whole_traces(&mut settings.kafka);
            Ok(Pipeline::new(settings, sampler).spawn(shutdown.clone(), health.clone()))
        }
        "analyzer" => {
            let spec = topology.analyzer.as_ref().context("topology has no processors.analyzer section")?;
            let analyzer = Analyzer::new(spec.stage.config.clone(), AnalyzerOutputs { rollups: OutputId(0), alerts: OutputId(1) });
            Ok(Pipeline::new(topology.analysis_pipeline(spec), analyzer).spawn(shutdown.clone(), health.clone()))
        }
        "dependencies" => {
            let spec = topology.dependencies.as_ref().context("topology has no processors.dependencies section")?;
            let dependencies = Dependencies::new(spec.stage.config.clone(), DependenciesOutputs { edges: OutputId(0), alerts: OutputId(1) });
            Ok(Pipeline::new(topology.analysis_pipeline(spec), dependencies).spawn(shutdown.clone(), health.clone()))
        }
        "sink" => {
            let spec = topology.sink.as_ref().context("topology has no processors.sink section")?;
            let store = open_store(&topology.storage.url)?;
            let sink = Sink::new(spec.config.clone(), store, spec.inputs.iter().map(|(_, kind)| *kind).collect());
            Ok(Pipeline::new(topology.sink_pipeline(spec), sink).spawn(shutdown.clone(), health.clone()))
        }
        other => anyhow::bail!("unknown processor `{other}` (this build has: {})", crate::topology::PROCESSORS.join(", ")),
    }
}

/// Opens (and migrates) the store on a thread of its own: PostgreSQL's blocking client runs its
/// own runtime, which may not start inside the caller's.
pub fn open_store(url: &StoreUrl) -> anyhow::Result<Store> {
    let url = url.clone();
    let described = match &url {
        StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        StoreUrl::Postgres(_) => "postgres".to_string(),
    };
    std::thread::spawn(move || Store::open(&url)).join().map_err(|_| anyhow::anyhow!("opening the store panicked"))?.with_context(|| format!("open store {described}"))
}

/// Starts the query server and UI; returns the address it listens on.
pub async fn start_query(topology: &Topology, shutdown: CancellationToken) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let spec = topology.query.as_ref().context("topology has no processors.query section")?;
    let url = topology.storage.url.clone();
    let store = tokio::task::spawn_blocking(move || open_store(&url)).await??;
    let bearer_token = spec.bearer_token_env.as_deref().and_then(|name| std::env::var(name).ok()).filter(|t| !t.is_empty());
    let listener = tokio::net::TcpListener::bind(spec.listen).await.with_context(|| format!("query server on {}", spec.listen))?;
    let addr = listener.local_addr()?;
    if bearer_token.is_some() {
        tracing::info!("api requests need the bearer token");
    }
    let config = tracepipe_query::QueryConfig { bearer_token, adaptive_sampling: spec.adaptive_sampling.clone() };
    Ok((addr, tracepipe_query::serve_on(listener, store, config, shutdown)))
}

/// Starts the OTLP receivers; returns where they listen.
pub async fn start_gateway(topology: &Topology, shutdown: CancellationToken) -> anyhow::Result<(tracepipe_gateway::Listening, tokio::task::JoinHandle<()>)> {
    let spec = topology.gateway.as_ref().context("topology has no processors.gateway section")?;
    Ok(tracepipe_gateway::start(&topology.kafka, &spec.output, spec.config.clone(), shutdown).await?)
}

/// Every processor the topology configures.
pub fn configured(topology: &Topology) -> Vec<&'static str> {
    let mut names = Vec::new();
    if topology.gateway.is_some() {
        names.push("gateway");
    }
    if topology.router.is_some() {
        names.push("router");
    }
    if topology.assembler.is_some() {
        names.push("assembler");
    }
    if topology.sampler.is_some() {
        names.push("sampler");
    }
    if topology.analyzer.is_some() {
        names.push("analyzer");
    }
    if topology.dependencies.is_some() {
        names.push("dependencies");
    }
    if topology.sink.is_some() {
        names.push("sink");
    }
    if topology.query.is_some() {
        names.push("query");
    }
    names
}
