//! Starting processors from the topology, for `tracepipe run` and `tracepipe up`.

use std::thread::JoinHandle;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracepipe_analyzer::{Analyzer, AnalyzerOutputs};
use tracepipe_assembler::TraceAssembler;
use tracepipe_dependencies::{Dependencies, DependenciesOutputs};
use tracepipe_router::Router;
use tracepipe_sampler::TailSampler;
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
            Ok(Pipeline::new(topology.stage_pipeline(spec), assembler).spawn(shutdown.clone(), health.clone()))
        }
        "sampler" => {
            let spec = topology.sampler.as_ref().context("topology has no processors.sampler section")?;
            let sampler = TailSampler::new(spec.config.clone(), OutputId(0));
            Ok(Pipeline::new(topology.stage_pipeline(spec), sampler).spawn(shutdown.clone(), health.clone()))
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
        other => anyhow::bail!("unknown processor `{other}` (this build has: {})", crate::topology::PROCESSORS.join(", ")),
    }
}

/// Every processor the topology configures.
pub fn configured(topology: &Topology) -> Vec<&'static str> {
    let mut names = Vec::new();
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
    names
}
