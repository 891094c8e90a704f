//! The processors this build has, one entry each: its name (which is also its section under
//! `processors:` in topology.yaml), the type its section validates into (that processor's
//! crate's `config.rs`), and how it is started. Adding a processor is adding its entry and its
//! [`ProcessorSpec::start`].
//!
//! A processor's outputs are bound to topics by name here ([`PipelineOutputs::bind`]): the
//! analyzer's `rollups` output is the topic its section names under `output`, and so on.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_yaml_ng::Value;
use tokio_util::sync::CancellationToken;
use tracepipe_analyzer::config::AnalyzerSpec;
use tracepipe_analyzer::{Analyzer, AnalyzerConfig, AnalyzerOutputs};
use tracepipe_assembler::config::AssemblerSpec;
use tracepipe_assembler::{AssemblerConfig, TraceAssembler};
use tracepipe_dependencies::config::DependenciesSpec;
use tracepipe_dependencies::{Dependencies, DependenciesOutputs};
use tracepipe_funnels::config::FunnelsSpec;
use tracepipe_funnels::FunnelJoin;
use tracepipe_gateway::config::GatewaySpec;
use tracepipe_processor::config::{Problems, Section, SectionConfig};
use tracepipe_query::config::QuerySpec;
use tracepipe_router::config::RouterSpec;
use tracepipe_router::Router;
use tracepipe_runtime::{Health, Pipeline, PipelineExit, RuntimeError};
use tracepipe_sampler::config::SamplerSpec;
use tracepipe_sampler::TailSampler;
use tracepipe_sink::{Sink, SinkSpec};
use tracepipe_slo::config::SloEvaluatorSpec;
use tracepipe_slo::SloEvaluator;
use tracepipe_trends::config::TrendsSpec;
use tracepipe_trends::TrendsEvaluator;
use tracepipe_schemas::analytics::Alert;
use tracepipe_store::{Store, StoreUrl};

use crate::topology::{PipelineOutputs, Topology};

/// Every processor, in the order `tracepipe up` starts them and `validate` lists them.
pub const PROCESSORS: &[ProcessorEntry] = &[
    entry::<GatewaySpec>("gateway"),
    entry::<RouterSpec>("router"),
    entry::<AssemblerSpec>("assembler"),
    entry::<SamplerSpec>("sampler"),
    entry::<AnalyzerSpec>("analyzer"),
    entry::<DependenciesSpec>("dependencies"),
    entry::<SinkSpec>("sink"),
    entry::<FunnelsSpec>("funnels"),
    entry::<SloEvaluatorSpec>("slo"),
    entry::<TrendsSpec>("trends"),
    entry::<QuerySpec>("query"),
];

pub struct ProcessorEntry {
    pub name: &'static str,
    /// Validates the processor's section (at `section.path`) into its [`ProcessorSpec`].
    pub configure: fn(&Section<'_>, Value, &mut Problems) -> Option<Box<dyn ProcessorSpec>>,
}

const fn entry<S: SectionConfig + ProcessorSpec>(name: &'static str) -> ProcessorEntry {
    ProcessorEntry { name, configure: configure::<S> }
}

fn configure<S: SectionConfig + ProcessorSpec>(section: &Section<'_>, value: Value, problems: &mut Problems) -> Option<Box<dyn ProcessorSpec>> {
    section.parse::<S>(value, problems).map(|spec| Box::new(spec) as Box<dyn ProcessorSpec>)
}

pub type PipelineHandle = JoinHandle<Result<PipelineExit, RuntimeError>>;
type Starting<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Started>> + Send + 'a>>;

/// A running processor.
pub enum Started {
    /// A Kafka pipeline on a thread of its own.
    Pipeline(PipelineHandle),
    /// A server on the async runtime, with the lines that tell a person where it listens. One
    /// that `drains` is awaited at shutdown: it hands Kafka what it accepted.
    Server { task: tokio::task::JoinHandle<()>, banner: Vec<String>, drains: bool },
}

/// What a processor is started with.
#[derive(Clone, Copy)]
pub struct StartContext<'a> {
    pub topology: &'a Topology,
    pub shutdown: &'a CancellationToken,
    pub health: &'a Health,
}

/// A processor's validated section, which knows how to start the processor.
pub trait ProcessorSpec: std::any::Any + Debug + Send + Sync {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a>;
}

async fn pipeline<P: tracepipe_runtime::Processor>(mut settings: PipelineOutputs, processor: P, context: StartContext<'_>) -> anyhow::Result<Started> {
    fit_batches_to_topics(&mut settings, context.topology).await;
    Ok(Started::Pipeline(Pipeline::new(settings.0, processor).spawn(context.shutdown.clone(), context.health.clone())))
}

/// The broker refuses a whole produce batch larger than its topic's `max.message.bytes`, small
/// records and all. Unless `batch.size` is set, the producer's batches are kept within the
/// smallest limit of the pipeline's outputs and its dead-letter topic, so a refusal names only a
/// record that is itself too large (which librdkafka sends in a batch of its own).
async fn fit_batches_to_topics(settings: &mut PipelineOutputs, topology: &Topology) {
    let producer = &settings.0.kafka.producer;
    if producer.contains_key("batch.size") {
        return;
    }
    let mut topics: Vec<&str> = settings.0.outputs.iter().map(String::as_str).collect();
    topics.push(&settings.0.dlq_topic);
    let Some(limit) = crate::topics::max_message_bytes(topology, &topics).await else { return };
    // librdkafka's default batch.size; a batch also holds its framing, which this leaves room for.
    let batch_size = limit.saturating_sub(BATCH_FRAMING_BYTES).clamp(1, 1_000_000);
    if batch_size < 1_000_000 {
        tracing::info!(topics = ?topics, max_message_bytes = limit, batch_size, "producer batches kept within the smallest max.message.bytes of the outputs");
        settings.0.kafka.producer.insert("batch.size".to_string(), batch_size.to_string());
    }
}

/// Room a produce batch keeps for its record-batch header and per-record framing.
const BATCH_FRAMING_BYTES: usize = 1 << 10;

impl ProcessorSpec for RouterSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let mut settings = context.topology.pipeline(&self.consumer, self.inputs.iter().map(|(topic, _)| topic.clone()).collect());
            let spans = settings.bind(&self.output);
            // Spans enter tracepipe through the router or the gateway: each chooses what of its
            // intake is followed.
            settings.0.self_trace = context.topology.self_trace(true);
            let router = Router::new(self.inputs.iter().map(|(_, encoding)| *encoding).collect(), spans, self.max_message_bytes);
            pipeline(settings, router, context).await
        })
    }
}

impl ProcessorSpec for AssemblerSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            check_memory_limit(self.config.memory_budget_bytes, container_memory_limit())?;
            let mut settings = context.topology.pipeline(&self.consumer, vec![self.input.clone()]);
            let traces = settings.bind(&self.output);
            let config = fit_traces_to_topics(self.config.clone(), context.topology, &self.output).await;
            let kafka = &mut settings.0.kafka;
            config.bound_kafka_buffers(&mut kafka.consumer, &mut kafka.producer);
            pipeline(settings, TraceAssembler::new(config, traces), context).await
        })
    }
}

/// The memory limit of the container (cgroup) this process runs in, and the file that says so.
fn container_memory_limit() -> Option<(u64, &'static str)> {
    // cgroup v2, then v1; v1 reports no limit as a number near i64::MAX.
    for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().parse::<u64>().ok().filter(|&limit| limit < 1 << 60).map(|limit| (limit, path));
        }
    }
    None
}

/// The assembler holds up to `memory_budget` of traces and Kafka buffers; the process needs a
/// quarter more for everything else (allocator slack, the other threads, the binary). A budget
/// the container cannot hold would be found by the OOM killer, in the middle of a busy hour.
fn check_memory_limit(budget: usize, limit: Option<(u64, &str)>) -> anyhow::Result<()> {
    let Some((limit, source)) = limit else { return Ok(()) };
    let needed = budget as u64 / 4 * 5;
    anyhow::ensure!(
        needed <= limit,
        "processors.assembler.memory_budget ({}) needs a memory limit of at least {} (the budget and a quarter), but this container's is {} ({source}): raise the limit or lower the budget",
        bytesize::ByteSize(budget as u64).display().iec(),
        bytesize::ByteSize(needed).display().iec(),
        bytesize::ByteSize(limit).display().iec()
    );
    Ok(())
}

/// Cuts traces into fragments that the topics they go to take: if the broker says the assembler's
/// output topic (or the sampler's, which forwards the same records) takes smaller records than a
/// whole `max_trace_bytes` trace, `max_trace_bytes` is lowered to fit, and it says so. A topic left
/// at Kafka's 1 MB default then gets fragments, not records it refuses.
async fn fit_traces_to_topics(mut config: AssemblerConfig, topology: &Topology, output: &str) -> AssemblerConfig {
    let mut topics = vec![output.to_string()];
    if let Some(sampler) = topology.processor::<SamplerSpec>() {
        topics.push(sampler.output.clone());
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let Some(limit) = crate::topics::max_message_bytes(topology, &names).await else { return config };
    let overhead = tracepipe_schemas::split::MAX_CHUNK_BYTES + (64 << 10);
    let smallest_trace = 64 << 10;
    if limit < overhead + smallest_trace {
        // A fragment overshoots max_trace_bytes by at most one router chunk, so below this the
        // largest fragments are refused: they go to the dead-letter topic with the broker's reason.
        tracing::error!(
            topics = ?names,
            max_message_bytes = limit,
            needed = overhead + smallest_trace,
            "the broker takes records of at most {limit} bytes on these topics, less than the {} the assembler's fragments can reach: the largest go to the dead-letter topic (raise the topics' max.message.bytes)",
            overhead + smallest_trace
        );
    }
    let fits = limit.saturating_sub(overhead).max(smallest_trace);
    if fits < config.max_trace_bytes {
        tracing::warn!(
            topics = ?names,
            max_message_bytes = limit,
            max_trace_bytes = fits,
            "the broker takes records of at most {limit} bytes on these topics: traces are cut into fragments of {fits} bytes (raise the topics' max.message.bytes to keep traces whole)"
        );
        config.max_trace_bytes = fits;
    }
    config
}

impl ProcessorSpec for SamplerSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let mut settings = context.topology.pipeline(&self.consumer, vec![self.input.clone()]);
            let sampled = settings.bind(&self.output);
            // The sampler forwards the assembler's records as they are.
            let assembler = context.topology.processor::<AssemblerSpec>().map_or_else(AssemblerConfig::default, |a| a.config.clone());
            assembler.allow_whole_traces(&mut settings.0.kafka.producer);
            // SLO exemplars follow the analyzer's windows, as it names them.
            let analyzer = context.topology.processor::<AnalyzerSpec>().map_or_else(AnalyzerConfig::default, |a| a.config.clone());
            let windows = tracepipe_sampler::slo_exemplars::ExemplarWindows { window: analyzer.window, lateness: analyzer.lateness };
            let sampler = TailSampler::new(self.config.clone(), sampled).with_slo_exemplars(context.topology.slos.clone(), windows);
            pipeline(settings, sampler, context).await
        })
    }
}

impl ProcessorSpec for AnalyzerSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let open = open_alerts(context.topology, &self.alerts, "analyzer").await?;
            let mut settings = context.topology.pipeline(&self.consumer, vec![self.input.clone()]);
            let outputs = AnalyzerOutputs { rollups: settings.bind(&self.output), alerts: settings.bind(&self.alerts) };
            let mut analyzer = Analyzer::with_open_alerts(self.config.clone(), outputs, open, unix_now())
                .with_slos(context.topology.slos.clone())
                .with_transactions(context.topology.transactions.clone());
            if let Some(topic) = &self.funnel_steps {
                let output = settings.bind(topic);
                analyzer = analyzer.with_funnels(context.topology.funnels.clone(), output);
            }
            pipeline(settings, analyzer, context).await
        })
    }
}

impl ProcessorSpec for FunnelsSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let funnels = context.topology.funnels.clone();
            if funnels.is_empty() {
                tracing::info!("no funnels are defined under funnels: in topology.yaml; the funnels processor has nothing to join");
            }
            let mut settings = context.topology.pipeline(&self.consumer, vec![self.input.clone()]);
            let output = settings.bind(&self.output);
            pipeline(settings, FunnelJoin::new(funnels, self.config.clone(), output), context).await
        })
    }
}

impl ProcessorSpec for DependenciesSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let open = open_alerts(context.topology, &self.alerts, "dependencies").await?;
            let mut settings = context.topology.pipeline(&self.consumer, vec![self.input.clone()]);
            let outputs = DependenciesOutputs { edges: settings.bind(&self.output), alerts: settings.bind(&self.alerts) };
            pipeline(settings, Dependencies::with_open_alerts(self.config.clone(), outputs, open, unix_now()), context).await
        })
    }
}

/// The alerts of `source` still firing on `topic`: what the processor's last run left open.
async fn open_alerts(topology: &Topology, topic: &str, source: &'static str) -> anyhow::Result<Vec<Alert>> {
    let kafka = topology.kafka.clone();
    let name = topic.to_string();
    let records = tokio::task::spawn_blocking(move || tracepipe_runtime::read_to_end(&kafka, &name, ALERT_REPLAY_TIMEOUT)).await??;
    let mut unreadable = 0usize;
    let events: Vec<Alert> = records
        .iter()
        .filter_map(|(_, value)| serde_json::from_slice::<Alert>(value).map_err(|_| unreadable += 1).ok())
        .collect();
    if unreadable > 0 {
        tracing::warn!(processor = source, topic, records = unreadable, "records of the alerts topic that are not alert events were left out of the restored alerts");
    }
    let open = tracepipe_analytics::alerts::latest_open(source, events);
    if !open.is_empty() {
        tracing::info!(processor = source, alerts = open.len(), "open alerts restored from the alerts topic");
    }
    Ok(open)
}

/// How long a starting processor may take to read the alerts topic.
const ALERT_REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl ProcessorSpec for SinkSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let store = open_store(&context.topology.storage.url, context.shutdown).await?;
            let settings = context.topology.pipeline(&self.consumer, self.inputs.iter().map(|(topic, _)| topic.clone()).collect());
            let sink = Sink::new(self.sink_config(context.topology.storage.retention), store, self.inputs.iter().map(|(_, kind)| *kind).collect());
            pipeline(settings, sink, context).await
        })
    }
}

impl ProcessorSpec for SloEvaluatorSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let slos = context.topology.slos.clone();
            if slos.is_empty() {
                tracing::info!("no SLOs are defined under slos: in topology.yaml; the SLO evaluator has nothing to evaluate");
            }
            let store = open_store(&context.topology.storage.url, context.shutdown).await?;
            let open = open_alerts(context.topology, &self.alerts, "slo").await?;
            let publisher = tracepipe_runtime::publish::Publisher::new(&context.topology.kafka, "slo", self.alerts.clone(), Duration::from_secs(30))?;
            let evaluator = SloEvaluator::new(slos, store, publisher, self.interval, open, unix_now() / 1_000_000);
            let health = context.health.clone();
            health.register("slo");
            let shutdown = context.shutdown.clone();
            let task = tokio::spawn(evaluator.run(shutdown, health));
            Ok(Started::Server { task, banner: Vec::new(), drains: true })
        })
    }
}

impl ProcessorSpec for TrendsSpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let store = open_store(&context.topology.storage.url, context.shutdown).await?;
            let open = open_alerts(context.topology, &self.alerts, "trends").await?;
            let publisher = tracepipe_runtime::publish::Publisher::new(&context.topology.kafka, "trends", self.alerts.clone(), Duration::from_secs(30))?;
            let evaluator = TrendsEvaluator::new(self, context.topology.slos.clone(), store, publisher, open, unix_now() / 1_000_000);
            let health = context.health.clone();
            health.register("trends");
            let task = tokio::spawn(evaluator.run(context.shutdown.clone(), health));
            Ok(Started::Server { task, banner: Vec::new(), drains: true })
        })
    }
}

impl ProcessorSpec for QuerySpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let store = open_store(&context.topology.storage.url, context.shutdown).await?;
            let bearer_token = self.bearer_token_env.as_deref().and_then(|name| std::env::var(name).ok()).filter(|t| !t.is_empty());
            let listener = tokio::net::TcpListener::bind(self.listen).await.with_context(|| format!("query server on {}", self.listen))?;
            let addr = listener.local_addr()?;
            if bearer_token.is_some() {
                tracing::info!("api requests need the bearer token");
            }
            let config = tracepipe_query::QueryConfig {
                bearer_token,
                adaptive_sampling: self.adaptive_sampling.clone(),
                slos: context.topology.slos.clone(),
                transactions: context.topology.transactions.clone(),
                funnels: context.topology.funnels.clone(),
            };
            let server = tracepipe_query::serve_on(listener, store, config, context.shutdown.clone());
            let task = tokio::spawn(async move {
                match server.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(%error, "the query server failed"),
                    Err(error) => tracing::error!(%error, "the query server panicked"),
                }
            });
            Ok(Started::Server { task, banner: vec![format!("ui:      http://{addr}/")], drains: false })
        })
    }
}

impl ProcessorSpec for GatewaySpec {
    fn start<'a>(&'a self, context: StartContext<'a>) -> Starting<'a> {
        Box::pin(async move {
            let config = tracepipe_gateway::GatewayConfig { self_trace: context.topology.self_trace(true), ..self.config.clone() };
            let (listening, task) = tracepipe_gateway::start(&context.topology.kafka, &self.output, config, context.shutdown.clone()).await?;
            let mut banner = Vec::new();
            if let Some(addr) = listening.grpc {
                banner.push(format!("otlp:    grpc://{addr} (OTLP/gRPC)"));
            }
            if let Some(addr) = listening.http {
                banner.push(format!("otlp:    http://{addr}/v1/traces (OTLP/HTTP)"));
            }
            context.health.register("gateway");
            context.health.set_ready("gateway", true);
            Ok(Started::Server { task, banner, drains: true })
        })
    }
}

/// Opens (and migrates) the store on a thread of its own, outside the async runtime: PostgreSQL's
/// blocking client runs a runtime of its own, which may not start inside another.
pub async fn open_store(url: &StoreUrl, shutdown: &CancellationToken) -> anyhow::Result<Store> {
    let described = match url {
        StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        StoreUrl::Postgres(_) => "postgres".to_string(),
    };
    // A database that does not answer yet (starting, restarting) is waited for, as a process
    // started before its database would be in a deployment; anything else is an error now.
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = url.clone();
        let (opened, open) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("store-open".into()).spawn(move || opened.send(Store::open(&attempt)))?;
        let outcome = open.await.map_err(|_| anyhow::anyhow!("opening the store panicked"))?;
        match outcome {
            Err(error) if error.database_not_answering_yet() && !shutdown.is_cancelled() => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "the store does not answer yet; waiting for it");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting for the store ({described})"),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            outcome => return outcome.with_context(|| format!("open store {described}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assembler_budget_must_fit_the_container_with_a_quarter_to_spare() {
        let budget = 256 << 20;
        assert!(check_memory_limit(budget, None).is_ok(), "no limit, nothing to check");
        assert!(check_memory_limit(budget, Some((320 << 20, "/sys/fs/cgroup/memory.max"))).is_ok());
        let error = check_memory_limit(budget, Some((300 << 20, "/sys/fs/cgroup/memory.max"))).unwrap_err().to_string();
        assert_eq!(
            error,
            "processors.assembler.memory_budget (256.0 MiB) needs a memory limit of at least 320.0 MiB (the budget and a quarter), but this container's is 300.0 MiB (/sys/fs/cgroup/memory.max): raise the limit or lower the budget"
        );
    }
}
