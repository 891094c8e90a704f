//! Two figures against Tansu, in one run:
//!
//! 1. The example shop (examples/shop_*.rs, release builds) without and with
//!    `tracepipe-instrument` at 100% sampling, spans exported to Kafka: requests per second and
//!    p99 latency of `GET /checkout/{item}` (frontend → HTTP → orders → Kafka → frontend), under
//!    the same closed-loop load. The runs alternate (off, on, off, on) and each figure is the
//!    better of its two runs.
//! 2. The OTLP gateway's intake: spans per second stored in `tracepipe.spans` (acknowledged by
//!    Kafka) over OTLP/HTTP protobuf and OTLP/gRPC, 16 concurrent exporters.
//!
//! Needs the release examples: `cargo build --release --examples` (`make bench` does it).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use support::{free_port, repo_path, Cluster, Process};

const CONCURRENCY: usize = 16;
const RUN: Duration = Duration::from_secs(10);
/// Alternating runs of each kind in the shop comparison.
const RUNS: usize = 3;

fn example(name: &str) -> PathBuf {
    let path = repo_path(&format!("target/release/examples/{name}"));
    assert!(path.exists(), "{} is missing: run `cargo build --release --examples` first", path.display());
    path
}

struct Figures {
    requests_per_second: f64,
    p99_ms: f64,
}

/// Starts the example `name` with `env`, on CPU 0 when `pinned`, and waits for its port.
fn spawn_service(cluster: &Cluster, name: &str, port: u16, pinned: bool, env: &[(&str, String)]) -> Process {
    let program = example(name);
    let program = program.to_str().unwrap();
    let dir = cluster.tansu.dir.path();
    let process = if pinned {
        Process::spawn_program_with_env("taskset", &["-c", "0", program], dir, name, env)
    } else {
        Process::spawn_program_with_env(program, &[], dir, name, env)
    };
    support::wait_for_port(port, &process);
    process
}

/// Starts both services with `instrumented`, drives them for `RUN`, stops them.
fn run_shop(cluster: &Cluster, instrumented: bool, pinned: bool) -> Figures {
    let (orders_port, frontend_port) = (free_port(), free_port());
    let flag = if instrumented { "on" } else { "off" };
    // Logging as a production service would (warnings only), so what is measured is tracing.
    let common = |port: u16| vec![("PORT", port.to_string()), ("KAFKA_BROKERS", cluster.brokers()), ("INSTRUMENT", flag.to_string()), ("RUST_LOG", "warn".to_string())];
    let mut orders = spawn_service(cluster, "shop_orders", orders_port, pinned, &common(orders_port));
    let mut env = common(frontend_port);
    env.push(("ORDERS_URL", format!("http://127.0.0.1:{orders_port}")));
    let mut frontend = spawn_service(cluster, "shop_frontend", frontend_port, pinned, &env);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let figures = runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{frontend_port}/checkout/");
        // Warm-up: connections, Kafka metadata, the consumer's group join.
        for i in 0..200 {
            client.get(format!("{url}{i}")).send().await.unwrap().error_for_status().unwrap();
        }
        let deadline = Instant::now() + RUN;
        let mut tasks = Vec::new();
        for worker in 0..CONCURRENCY {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    client.get(format!("{url}{i}")).send().await.unwrap().error_for_status().unwrap();
                    latencies.push(started.elapsed());
                    i += CONCURRENCY;
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        Figures { requests_per_second: latencies.len() as f64 / RUN.as_secs_f64(), p99_ms: p99.as_secs_f64() * 1e3 }
    });
    frontend.terminate();
    orders.terminate();
    figures
}

/// Gives the services a CPU of their own when there are two or more: this process, its load
/// generator and the broker (started after this) move to the others, so the broker's work on the
/// exported spans does not count as the instrumentation's. Returns whether it did.
fn pin_away_from_services_cpu() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return false;
    }
    let others = format!("1-{}", cpus - 1);
    let pid = std::process::id().to_string();
    let pinned = std::process::Command::new("taskset").args(["-a", "-p", "-c", &others, &pid]).output().is_ok_and(|o| o.status.success());
    if pinned {
        println!("services on CPU 0; load generator and broker on CPUs {others}");
    }
    pinned
}

fn shop_overhead() {
    let pinned = pin_away_from_services_cpu();
    let cluster = Cluster::start_batched_with(|yaml| yaml.replace("  tracepipe.spans:", "  orders.placed:    { partitions: 3, replication: 1 }\n  tracepipe.spans:"));
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..RUNS {
        off.push(run_shop(&cluster, false, pinned));
        on.push(run_shop(&cluster, true, pinned));
    }
    let best = |runs: &[Figures]| (runs.iter().map(|f| f.requests_per_second).fold(0.0, f64::max), runs.iter().map(|f| f.p99_ms).fold(f64::MAX, f64::min));
    let (off_rps, off_p99) = best(&off);
    let (on_rps, on_p99) = best(&on);
    println!("example shop, {CONCURRENCY} concurrent clients, {}s per run, best of {RUNS} (GET /checkout: HTTP call + Kafka hop):", RUN.as_secs());
    for (label, runs) in [("uninstrumented", &off), ("instrumented, 100% sampled", &on)] {
        let each: Vec<String> = runs.iter().map(|f| format!("{:.0} req/s p99 {:.2} ms", f.requests_per_second, f.p99_ms)).collect();
        println!("  {label:<28} runs: {}", each.join("; "));
    }
    println!("  throughput ratio {:.3} (overhead {:.1}%), p99 {off_p99:.2} ms -> {on_p99:.2} ms", on_rps / off_rps, (1.0 - on_rps / off_rps) * 100.0);
}

fn gateway_intake() {
    let cluster = Cluster::start_batched_with(|yaml| yaml);
    let gateway = support::Gateway::start(&cluster);
    let (grpc, http) = (gateway.grpc, gateway.http);
    let (requests, span_counts): (Vec<ExportTraceServiceRequest>, Vec<u64>) = support::export_requests(0, 64, 20).into_iter().unzip();
    let spans_per_request = span_counts.iter().sum::<u64>() as f64 / requests.len() as f64;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(requests.iter().map(|r| r.encode_to_vec()).collect());
    let requests = Arc::new(requests);
    println!("OTLP gateway into Tansu, {CONCURRENCY} concurrent exporters, {:.0} spans per request, {}s:", spans_per_request, RUN.as_secs());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    for protocol in ["http/protobuf", "grpc"] {
        let stored = Arc::new(AtomicU64::new(0));
        runtime.block_on(async {
            let deadline = Instant::now() + RUN;
            let mut tasks = Vec::new();
            for worker in 0..CONCURRENCY {
                let (bodies, requests, stored) = (bodies.clone(), requests.clone(), stored.clone());
                tasks.push(tokio::spawn(async move {
                    let http_client = reqwest::Client::new();
                    let mut grpc_client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap();
                    let mut i = worker;
                    while Instant::now() < deadline {
                        let index = i % bodies.len();
                        let ok = if protocol == "grpc" {
                            grpc_client.export(requests[index].clone()).await.is_ok()
                        } else {
                            let response = http_client.post(format!("http://127.0.0.1:{http}/v1/traces")).header("content-type", "application/x-protobuf").body(bodies[index].clone()).send().await.unwrap();
                            response.status().is_success()
                        };
                        if ok {
                            stored.fetch_add(1, Ordering::Relaxed);
                        }
                        i += CONCURRENCY;
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let accepted = stored.load(Ordering::Relaxed) as f64;
        println!("  {protocol:<14} {:>9.0} spans/s acknowledged ({:.0} requests/s)", accepted * spans_per_request / RUN.as_secs_f64(), accepted / RUN.as_secs_f64());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one part.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    if "shop_overhead".contains(&filter) || filter.is_empty() {
        shop_overhead();
    }
    if "gateway_intake".contains(&filter) || filter.is_empty() {
        gateway_intake();
    }
}
