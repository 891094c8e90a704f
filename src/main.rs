use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracepipe::embedded::EmbeddedBroker;
use tracepipe::loadgen::{self, Limits, LoadgenOptions, Scenario};
use tracepipe::registry::{PipelineHandle, StartContext, Started, PROCESSORS};
use tracepipe::topology::{Topology, DEFAULT_TOPOLOGY};
use tracepipe_gateway::config::GatewaySpec;
use tracepipe_query::config::QuerySpec;
use tracepipe_runtime::{AdminServer, Health, KafkaSettings, RuntimeError};
use tracepipe_schemas::Encoding;
use tracing::{error, info, warn};

/// Exit codes: distinct so an orchestrator and a person can tell what happened.
const EXIT_RUNTIME: u8 = 1;
const EXIT_INVALID_CONFIG: u8 = 2;
const EXIT_KAFKA_FATAL: u8 = 3;
const EXIT_DRAIN_DEADLINE: u8 = 4;
/// An address to listen on is taken or not allowed (the admin server, the query server, the
/// OTLP receivers, the embedded broker).
const EXIT_PORT: u8 = 5;

/// The demo scenario `tracepipe up --demo` plays.
const DEMO_SCENARIO: &str = include_str!("../tests/scenarios/small.yaml");

#[derive(Parser)]
#[command(name = "tracepipe", version, about = "Kafka-native distributed-tracing analytics pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct TopologyArgs {
    /// topology.yaml to use (default: the one built in, same as the repository's topology.yaml).
    #[arg(long, short = 't', env = "TRACEPIPE_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// Kafka bootstrap servers, overriding kafka.brokers of the topology.
    #[arg(long, env = "TRACEPIPE_BROKERS")]
    brokers: Option<String>,
    /// Admin server address (/metrics, /healthz, /ready), overriding admin.listen.
    #[arg(long, env = "TRACEPIPE_ADMIN")]
    admin: Option<SocketAddr>,
    /// Storage URL (sqlite://PATH or postgres://…), overriding storage.url.
    #[arg(long, env = "TRACEPIPE_STORAGE_URL")]
    storage: Option<String>,
    /// Query server and UI address, overriding processors.query.listen.
    #[arg(long, env = "TRACEPIPE_QUERY_LISTEN")]
    query_listen: Option<SocketAddr>,
    /// OTLP/gRPC receiver address, overriding processors.gateway.grpc_listen.
    #[arg(long, env = "TRACEPIPE_OTLP_GRPC_LISTEN")]
    otlp_grpc_listen: Option<SocketAddr>,
    /// OTLP/HTTP receiver address, overriding processors.gateway.http_listen.
    #[arg(long, env = "TRACEPIPE_OTLP_HTTP_LISTEN")]
    otlp_http_listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on embedded defaults: a Kafka-protocol broker on 127.0.0.1:9092
    /// (unless --brokers is given), every processor, the admin server, optional demo traffic.
    Up {
        #[command(flatten)]
        topology: TopologyArgs,
        /// Address the embedded broker is reachable at.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// Publish demo traffic from the built-in scenario.
        #[arg(long)]
        demo: bool,
        /// Spans per second of demo traffic.
        #[arg(long, default_value_t = 500.0)]
        demo_rate: f64,
    },
    /// One processor against Kafka (one Deployment each in Kubernetes).
    Run {
        /// Its name, as its section under `processors:` is named (an unknown one lists them).
        #[arg(value_parser = processor_name)]
        processor: String,
        #[command(flatten)]
        topology: TopologyArgs,
    },
    /// Check a topology file; prints every problem with its path and exits non-zero if any.
    Validate {
        #[arg(default_value = "topology.yaml")]
        file: PathBuf,
    },
    /// Topic administration.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Service-level objectives.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Synthetic traffic from a scenario file, with a ground-truth file.
    Loadgen {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, env = "TRACEPIPE_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topic to write to (default: the scenario's, else the encoding's usual topic).
        #[arg(long)]
        topic: Option<String>,
        /// otlp_proto, otlp_json, jaeger_proto or zipkin_json (default: the scenario's).
        #[arg(long)]
        encoding: Option<Encoding>,
        /// Spans per second (default: the scenario's; 0 for as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Stop after this many traces.
        #[arg(long)]
        traces: Option<u64>,
        /// Stop after this many spans (the last trace is completed).
        #[arg(long)]
        spans: Option<u64>,
        /// Stop after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Where to write the ground truth JSON.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// librdkafka producer settings, KEY=VALUE (repeatable).
        #[arg(long = "set", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the topology's topics; existing ones are left as they are.
    Create {
        #[command(flatten)]
        topology: TopologyArgs,
        /// Every topic's replication factor, overriding the topology's (e.g. 1 on a one-broker cluster).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=32))]
        replication: Option<i32>,
    },
    /// Write the topology's topics as Strimzi KafkaTopic resources (for `k8s/`).
    Manifest {
        #[command(flatten)]
        topology: TopologyArgs,
        /// The Strimzi Kafka cluster the topics belong to (the `strimzi.io/cluster` label).
        #[arg(long, default_value = "tracepipe")]
        cluster: String,
        /// The namespace to put them in (default: none, as kustomize sets it).
        #[arg(long)]
        namespace: Option<String>,
        /// Where to write them (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SloCommand {
    /// Write the topology's SLOs as Prometheus recording and alerting rules (Sloth's names),
    /// computed from the span metrics; what they cannot express is printed on stderr.
    Rules {
        #[command(flatten)]
        topology: TopologyArgs,
        /// Where to write them (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

fn processor_name(text: &str) -> Result<String, String> {
    match PROCESSORS.iter().find(|entry| entry.name == text) {
        Some(entry) => Ok(entry.name.to_string()),
        None => Err(format!("this build has: {}", PROCESSORS.iter().map(|entry| entry.name).collect::<Vec<_>>().join(", "))),
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

fn load_topology(args: &TopologyArgs) -> Result<Topology, ExitCode> {
    let loaded = match &args.topology {
        Some(path) => Topology::load(path),
        None => Topology::from_yaml(DEFAULT_TOPOLOGY).map_err(|p| anyhow::anyhow!("built-in topology is invalid:\n{p}")),
    };
    match loaded {
        Ok(mut topology) => {
            if let Some(brokers) = &args.brokers {
                topology.kafka.brokers = brokers.clone();
            }
            // TRACEPIPE_KAFKA_SASL_PASSWORD=… sets sasl.password for every client: how a
            // container gets Kafka credentials from a Secret without a topology of its own.
            for (name, value) in std::env::vars() {
                if let Some(property) = kafka_property_from_env(&name) {
                    topology.kafka.client.insert(property, value);
                }
            }
            if let Some(admin) = args.admin {
                topology.admin_listen = admin;
            }
            if let Some(url) = &args.storage {
                match tracepipe_store::StoreUrl::parse(url) {
                    Ok(url) => topology.storage.url = url,
                    Err(error) => {
                        eprintln!("--storage: {error}");
                        return Err(ExitCode::from(EXIT_INVALID_CONFIG));
                    }
                }
            }
            if let (Some(listen), Some(query)) = (args.query_listen, topology.processor_mut::<QuerySpec>()) {
                query.listen = listen;
            }
            if let Some(gateway) = topology.processor_mut::<GatewaySpec>() {
                if let Some(listen) = args.otlp_grpc_listen {
                    gateway.config.grpc_listen = Some(listen);
                }
                if let Some(listen) = args.otlp_http_listen {
                    gateway.config.http_listen = Some(listen);
                }
            }
            Ok(topology)
        }
        Err(error) => {
            eprintln!("{error:#}");
            Err(ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

/// The librdkafka property an environment variable `TRACEPIPE_KAFKA_<PROPERTY>` sets: lower case,
/// `_` read as `.` (librdkafka's property names have no underscores). The variables Kubernetes
/// defines for a Service named `tracepipe-kafka...` (a Strimzi cluster named `tracepipe` in the
/// same namespace: `TRACEPIPE_KAFKA_BOOTSTRAP_SERVICE_HOST`, `..._PORT_9092_TCP`) are not
/// properties, and librdkafka would refuse them.
fn kafka_property_from_env(name: &str) -> Option<String> {
    let property = name.strip_prefix("TRACEPIPE_KAFKA_")?;
    if is_service_link(property) {
        tracing::debug!(variable = name, "a Kubernetes service link, not a Kafka property");
        return None;
    }
    (!property.is_empty()).then(|| property.to_ascii_lowercase().replace('_', "."))
}

/// Whether `name` has the shape of a variable Kubernetes defines for a Service:
/// `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<PORT NAME>]`, `<SVC>_PORT` and
/// `<SVC>_PORT_<N>_<PROTOCOL>[_PROTO|_PORT|_ADDR]`.
fn is_service_link(name: &str) -> bool {
    // `_PORT` at the end covers `<SVC>_SERVICE_PORT` too.
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT_") || name.ends_with("_PORT") || name == "PORT" {
        return true;
    }
    let parts: Vec<&str> = name.split('_').collect();
    parts.windows(3).any(|w| w[0] == "PORT" && !w[1].is_empty() && w[1].bytes().all(|b| b.is_ascii_digit()) && matches!(w[2], "TCP" | "UDP" | "SCTP"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Slo { command: SloCommand::Rules { topology, output } } => {
            let topology = match load_topology(&topology) {
                Ok(t) => t,
                Err(code) => return code,
            };
            if topology.slos.is_empty() {
                eprintln!("the topology defines no SLOs (slos: in topology.yaml)");
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            let (rules, notes) = tracepipe_slo::rules::prometheus_rules(&topology.slos);
            for note in &notes {
                eprintln!("note: {note}");
            }
            match output {
                None => print!("{rules}"),
                Some(path) => {
                    if let Err(error) = std::fs::write(&path, rules) {
                        eprintln!("cannot write {}: {error}", path.display());
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Command::Topics { command: TopicsCommand::Create { topology, replication } } => {
            let mut topology = match load_topology(&topology) {
                Ok(t) => t,
                Err(code) => return code,
            };
            if let Some(replication) = replication {
                topology.topics.values_mut().for_each(|topic| topic.replication = replication);
            }
            match runtime.block_on(tracepipe::topics::create(&topology)) {
                Ok(outcome) => {
                    for name in &outcome.created {
                        println!("created {name}");
                    }
                    for name in &outcome.existing {
                        println!("exists  {name}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
        Command::Topics { command: TopicsCommand::Manifest { topology, cluster, namespace, output } } => {
            let topology = match load_topology(&topology) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let written = tracepipe::topics::manifest(&topology, &cluster, namespace.as_deref()).and_then(|text| match &output {
                Some(path) => std::fs::write(path, text).with_context(|| format!("write {}", path.display())),
                None => Ok(print!("{text}")),
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            }
        }
        Command::Run { processor, topology } => {
            let topology = match load_topology(&topology) {
                Ok(t) => t,
                Err(code) => return code,
            };
            runtime.block_on(serve(topology, vec![processor], None))
        }
        Command::Up { topology, listen, demo, demo_rate } => {
            let brokers_given = topology.brokers.is_some();
            let topology = match load_topology(&topology) {
                Ok(t) => t,
                Err(code) => return code,
            };
            runtime.block_on(up(topology, brokers_given, listen, demo.then_some(demo_rate)))
        }
        Command::Loadgen { scenario, brokers, topic, encoding, rate, traces, spans, duration, truth, settings } => {
            let result = (|| {
                let text = std::fs::read_to_string(&scenario).with_context(|| format!("read {}", scenario.display()))?;
                let scenario = Scenario::from_yaml(&text)?;
                let mut kafka = KafkaSettings::new(brokers);
                kafka.producer.extend(settings);
                let options = LoadgenOptions { kafka, topic, encoding, rate, limits: Limits { traces, spans, duration }, truth };
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                runtime.spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    on_signal.cancel();
                });
                let truth = loadgen::run(scenario, options, &shutdown)?;
                println!(
                    "{} traces, {} spans in {} messages to {} ({})",
                    truth.trace_count, truth.span_count, truth.message_count, truth.topic, truth.encoding
                );
                anyhow::Ok(())
            })();
            result.map_or_else(fail, |()| ExitCode::SUCCESS)
        }
    }
}

fn is_listen_error(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::PermissionDenied)
}

fn listen_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "another program listens on that port (`ss -ltnp` shows which); stop it or choose another address",
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges; choose a port of 1024 or more",
        _ => "that address is not one of this machine's; use 127.0.0.1, 0.0.0.0 or an address the machine has",
    }
}

/// `what` cannot listen on `addr`: says so, with the setting that moves it, and exits with
/// [`EXIT_PORT`].
fn cannot_listen(what: &str, addr: SocketAddr, error: &std::io::Error, setting: &str) -> ExitCode {
    eprintln!("error: {what} cannot listen on {addr}: {error}\n{} (set {setting})", listen_hint(error));
    ExitCode::from(EXIT_PORT)
}

/// Whether a Kafka-protocol broker answers at `addr` (a metadata request within 3 s).
fn kafka_answers(addr: SocketAddr) -> bool {
    let consumer: Result<rdkafka::consumer::BaseConsumer, _> = rdkafka::ClientConfig::new().set("bootstrap.servers", addr.to_string()).set("log_level", "0").create();
    consumer.is_ok_and(|consumer| rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(3)).is_ok())
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_RUNTIME)
}

fn validate(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{}: cannot read: {error}", file.display());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    match Topology::from_yaml(&text) {
        Ok(topology) => {
            println!("{}: valid ({} topics, processors: {})", file.display(), topology.topics.len(), topology.configured().collect::<Vec<_>>().join(", "));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems.iter() {
                eprintln!("{}: {problem}", file.display());
            }
            eprintln!("{} problems", problems.len());
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
}

/// The least share of records `up --demo` follows through the pipeline (`self_tracing.ratio`).
const DEMO_SELF_TRACING_RATIO: f64 = 0.1;

async fn up(mut topology: Topology, brokers_given: bool, listen: SocketAddr, demo_rate: Option<f64>) -> ExitCode {
    let shutdown = CancellationToken::new();
    // The demo shows tracepipe's own work too: its services in the map, its traces in search. It
    // follows a tenth of the records at least, so that within its first minute some of the few it
    // follows are of traces the sampler keeps, and so reach the sink.
    if demo_rate.is_some() && topology.topics.contains_key(&topology.self_tracing.topic) {
        topology.self_tracing.enabled = true;
        topology.self_tracing.ratio = topology.self_tracing.ratio.max(DEMO_SELF_TRACING_RATIO);
    }
    // The mock cluster is not Send; it lives on this task until the end of `up`.
    let mut embedded = None;
    if !brokers_given && (topology.kafka.brokers == "127.0.0.1:9092" || topology.kafka.brokers.is_empty()) {
        let broker = match EmbeddedBroker::start(&topology) {
            Ok(b) => b,
            Err(error) => return fail(error),
        };
        match broker.forward(listen, shutdown.clone()).await {
            Ok(addr) => info!(%addr, "embedded kafka-protocol broker listening"),
            Err(error) => {
                let io = error.chain().find_map(|cause| cause.downcast_ref::<std::io::Error>());
                if io.is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse) {
                    let taken_by_kafka = tokio::task::spawn_blocking(move || kafka_answers(listen)).await.unwrap_or(false);
                    if taken_by_kafka {
                        eprintln!(
                            "error: {listen} is already taken by a Kafka broker, so the embedded one cannot listen there.\n\
                             To run tracepipe against that Kafka: tracepipe up --brokers {listen} (topics are created if missing).\n\
                             To keep the embedded broker, stop the other one or give it another address: tracepipe up --listen 127.0.0.1:19092"
                        );
                    } else {
                        eprintln!("error: the embedded Kafka broker cannot listen on {listen}: another program (not a Kafka broker) listens there.\nStop it, or give the embedded broker another address: tracepipe up --listen 127.0.0.1:19092");
                    }
                    return ExitCode::from(EXIT_PORT);
                }
                if let Some(io) = io.filter(|io| is_listen_error(io)) {
                    return cannot_listen("the embedded Kafka broker", listen, io, "--listen");
                }
                return fail(error);
            }
        }
        println!("kafka:   {listen} (embedded; bootstrap {})", broker.bootstrap_servers());
        topology.kafka.brokers = broker.bootstrap_servers();
        embedded = Some(broker);
    } else {
        match tracepipe::topics::create(&topology).await {
            Ok(outcome) => info!(created = ?outcome.created, "topics ready"),
            Err(error) => return fail(error),
        }
        println!("kafka:   {}", topology.kafka.brokers);
    }
    let demo = demo_rate.map(|rate| {
        let kafka = topology.kafka.clone();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("demo-traffic".into())
            .spawn(move || {
                let scenario = Scenario::from_yaml(DEMO_SCENARIO)?;
                let options = LoadgenOptions { kafka, topic: None, encoding: None, rate: Some(rate), limits: Limits::default(), truth: None };
                loadgen::run(scenario, options, &shutdown)
            })
            .expect("spawn demo thread")
    });
    let names = topology.configured().map(str::to_string).collect();
    let code = serve(topology, names, Some(shutdown.clone())).await;
    if let Some(demo) = demo {
        match demo.join() {
            Ok(Ok(truth)) => info!(traces = truth.trace_count, spans = truth.span_count, "demo traffic stopped"),
            Ok(Err(error)) => warn!(error = %format!("{error:#}"), "demo traffic failed"),
            Err(_) => warn!("demo traffic panicked"),
        }
    }
    drop(embedded);
    code
}

/// Runs processors and the admin server until a signal or a fatal error.
async fn serve(topology: Topology, names: Vec<String>, shutdown: Option<CancellationToken>) -> ExitCode {
    let shutdown = shutdown.unwrap_or_default();
    let health = Health::default();
    let admin = match AdminServer::start(topology.admin_listen, health.clone(), shutdown.clone()).await {
        Ok(admin) => admin,
        Err(error) => return cannot_listen("the admin server (/metrics, /healthz, /ready)", topology.admin_listen, &error, "--admin or admin.listen"),
    };
    println!("metrics: http://{}/metrics", admin.local_addr);
    let context = StartContext { topology: &topology, shutdown: &shutdown, health: &health };
    let mut pipelines: Vec<(String, PipelineHandle)> = Vec::new();
    let mut servers: Vec<(String, tokio::task::JoinHandle<()>, bool)> = Vec::new();
    // A signal while processors are still starting stops the ones that started, as cleanly as later.
    let signal = terminated();
    tokio::pin!(signal);
    let mut signalled = false;
    for name in &names {
        let starting = async {
            match topology.processor_named(name) {
                Some(spec) => spec.start(context).await,
                None if PROCESSORS.iter().any(|entry| entry.name == name) => Err(anyhow::anyhow!("topology has no processors.{name} section")),
                None => {
                    let known: Vec<&str> = PROCESSORS.iter().map(|entry| entry.name).collect();
                    Err(anyhow::anyhow!("unknown processor `{name}` (this build has: {})", known.join(", ")))
                }
            }
        };
        let started = tokio::select! {
            started = starting => started,
            _ = &mut signal => {
                info!(processor = %name, "shutting down while starting");
                signalled = true;
                break;
            }
        };
        match started {
            Ok(Started::Pipeline(handle)) => pipelines.push((name.clone(), handle)),
            Ok(Started::Server { task, banner, drains }) => {
                for line in banner {
                    println!("{line}");
                }
                servers.push((name.clone(), task, drains));
            }
            Err(error) => {
                shutdown.cancel();
                eprintln!("error: {error:#}");
                if let Some(io) = error.chain().find_map(|cause| cause.downcast_ref::<std::io::Error>()).filter(|io| is_listen_error(io)) {
                    eprintln!("{}", listen_hint(io));
                    return ExitCode::from(EXIT_PORT);
                }
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        }
    }
    // Stop on a signal, or as soon as any pipeline or server ends (a fatal error ends it early).
    if !signalled {
        tokio::select! {
            _ = &mut signal => info!("shutting down"),
            _ = wait_for_any_exit(&pipelines) => warn!("a pipeline stopped; shutting down"),
            name = wait_for_any_server(&servers) => warn!(processor = %name, "a server stopped; shutting down"),
        }
    }
    shutdown.cancel();
    // A server that drains (the gateway) stops taking requests and flushes what it queued.
    for (_, task, drains) in servers {
        if drains {
            let _ = task.await;
        }
    }
    let mut code = ExitCode::SUCCESS;
    for (name, handle) in pipelines {
        match handle.join() {
            Ok(Ok(_)) => info!(processor = %name, "stopped"),
            Ok(Err(error)) => {
                error!(processor = %name, %error, "stopped with error");
                code = ExitCode::from(match error {
                    RuntimeError::DrainDeadline(_) => EXIT_DRAIN_DEADLINE,
                    RuntimeError::Config(_) => EXIT_INVALID_CONFIG,
                    _ => EXIT_KAFKA_FATAL,
                });
            }
            Err(_) => code = ExitCode::from(EXIT_RUNTIME),
        }
    }
    code
}

async fn wait_for_any_server(servers: &[(String, tokio::task::JoinHandle<()>, bool)]) -> String {
    loop {
        if let Some((name, _, _)) = servers.iter().find(|(_, task, _)| task.is_finished()) {
            return name.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_any_exit(handles: &[(String, PipelineHandle)]) {
    loop {
        if handles.iter().any(|(_, h)| h.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_from_the_environment_but_not_service_links() {
        assert_eq!(kafka_property_from_env("TRACEPIPE_KAFKA_SASL_PASSWORD").as_deref(), Some("sasl.password"));
        assert_eq!(kafka_property_from_env("TRACEPIPE_KAFKA_SASL_KERBEROS_SERVICE_NAME").as_deref(), Some("sasl.kerberos.service.name"));
        assert_eq!(kafka_property_from_env("TRACEPIPE_KAFKA_SSL_CA_LOCATION").as_deref(), Some("ssl.ca.location"));
        assert_eq!(kafka_property_from_env("TRACEPIPE_BROKERS"), None);
        assert_eq!(kafka_property_from_env("TRACEPIPE_KAFKA_"), None);
        // What Kubernetes defines for Strimzi's Services of a cluster named `tracepipe`.
        for link in [
            "TRACEPIPE_KAFKA_BOOTSTRAP_SERVICE_HOST",
            "TRACEPIPE_KAFKA_BOOTSTRAP_SERVICE_PORT",
            "TRACEPIPE_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_REPLICATION",
            "TRACEPIPE_KAFKA_BOOTSTRAP_PORT",
            "TRACEPIPE_KAFKA_BOOTSTRAP_PORT_9092_TCP",
            "TRACEPIPE_KAFKA_BOOTSTRAP_PORT_9092_TCP_PROTO",
            "TRACEPIPE_KAFKA_BOOTSTRAP_PORT_9092_TCP_PORT",
            "TRACEPIPE_KAFKA_BOOTSTRAP_PORT_9092_TCP_ADDR",
            "TRACEPIPE_KAFKA_BROKERS_SERVICE_HOST",
        ] {
            assert_eq!(kafka_property_from_env(link), None, "{link}");
        }
    }
}
