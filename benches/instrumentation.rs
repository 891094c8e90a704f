//! Two figures against Tansu, in one run:
//!
//! 1. The example shop (examples/shop_*.rs, release builds) without and with
//!    `tracepipe-instrument` (spans exported to Kafka) on `GET /checkout/{item}` (frontend → HTTP
//!    → orders → Kafka, and the frontend consuming the event), in two profiles: `reference`,
//!    services doing a typical request's work (SQLite queries over a few thousand rows, pricing,
//!    JSON of a few kilobytes), at 100% and at parent-based 10% sampling; and `thin`, services
//!    doing nearly nothing else, at 100%, the worst case for instrumentation's share:
//!    - saturated, 16 clients in a closed loop: requests per second, and the CPU time both
//!      services spent per request (from /proc/PID/stat, all threads, the Kafka clients' and the
//!      exporter's included) with their CPU utilization, near 100% when they are the bottleneck;
//!    - at a fixed rate every mode sustains (open loop, latency counted from when each request
//!      was due, so a stall is not hidden): p50 and p99 latency and CPU per request; the
//!      uninstrumented runs' own p99 spread is printed beside it.
//!    The services share one CPU, the load generator and broker the other. Every run has a
//!    broker of its own (one that piles up the earlier runs' records slows down as it goes); the
//!    runs alternate, each round starting with another mode, and each figure is the median of
//!    its runs. A run in which the services' SDKs dropped spans (queue full) says how many, from
//!    the count the SDK logs as it stops: such a run traced less than it claims to.
//! 2. The OTLP gateway's intake: spans per second stored in `tracepipe.spans` (acknowledged by
//!    Kafka) over OTLP/HTTP protobuf and OTLP/gRPC, 16 concurrent exporters.
//!
//! Needs the release examples: `cargo build --release --examples` (`make bench` does it).
//! Instructions per request, against the standard OpenTelemetry Rust stack too, are
//! `make bench-instructions` (benches/instrumentation_instructions.sh).

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
const RUNS: usize = 5;

/// A profile of the example shop and the requests per second of its fixed-rate phase: a rate
/// every mode sustains with room to spare (a sixth to a ninth of what the uninstrumented services
/// sustain on one CPU), so latency is the services' own, not a queue's.
struct Profile {
    name: &'static str,
    fixed_rate: u32,
}

const REFERENCE: Profile = Profile { name: "reference", fixed_rate: 250 };
const THIN: Profile = Profile { name: "thin", fixed_rate: 1_000 };

/// How the services are traced in a run: `INSTRUMENT`, and `OTEL_TRACES_SAMPLER` with its
/// argument.
#[derive(Clone, Copy)]
struct Mode {
    label: &'static str,
    instrument: &'static str,
    sampler: &'static str,
    ratio: &'static str,
}

const OFF: Mode = Mode { label: "uninstrumented", instrument: "off", sampler: "", ratio: "" };
const FULL: Mode = Mode { label: "instrumented, 100% sampled", instrument: "on", sampler: "parentbased_always_on", ratio: "" };
const TENTH: Mode = Mode { label: "instrumented, parent-based 10%", instrument: "on", sampler: "parentbased_traceidratio", ratio: "0.1" };

fn example(name: &str) -> PathBuf {
    let path = repo_path(&format!("target/release/examples/{name}"));
    assert!(path.exists(), "{} is missing: run `cargo build --release --examples` first", path.display());
    path
}

struct Figures {
    /// Saturated: requests per second, CPU µs per request, CPU utilization (1.0 = one CPU).
    requests_per_second: f64,
    cpu_us_per_request: f64,
    cpu_utilization: f64,
    /// At the profile's fixed rate: latency percentiles (ms) and CPU µs per request.
    fixed_p50_ms: f64,
    fixed_p99_ms: f64,
    fixed_cpu_us_per_request: f64,
    /// Spans the services' SDKs dropped (queue full), as they log it when they stop: a run that
    /// drops spans did less than 100% of the tracing it is meant to measure.
    spans_dropped: u64,
}

/// The dropped-span count the OpenTelemetry SDK logs at shutdown (`dropped_span_count=N`).
fn spans_dropped(log: &str) -> u64 {
    log.match_indices("dropped_span_count")
        .filter_map(|(at, key)| {
            let rest = &log[at + key.len()..];
            let digits: String = rest.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time (user + system, all threads) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the command
    // name, in clock ticks of USER_HZ, which Linux fixes at 100 a second for user space.
    (ticks(11) + ticks(12)) / 100.0
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

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// A broker of its own, both services in `mode` and `profile`, then the saturated and the
/// fixed-rate phase, each `RUN` long.
fn run_shop(mode: Mode, profile: &Profile, pinned: bool) -> Figures {
    let cluster = shop_cluster();
    let (orders_port, frontend_port) = (free_port(), free_port());
    // Logging as a production service would (warnings only), so what is measured is tracing.
    let common = |port: u16| {
        vec![
            ("PORT", port.to_string()),
            ("KAFKA_BROKERS", cluster.brokers()),
            ("INSTRUMENT", mode.instrument.to_string()),
            ("SHOP_PROFILE", profile.name.to_string()),
            ("OTEL_TRACES_SAMPLER", mode.sampler.to_string()),
            ("OTEL_TRACES_SAMPLER_ARG", mode.ratio.to_string()),
            ("RUST_LOG", "warn".to_string()),
        ]
    };
    let fixed_rate = profile.fixed_rate;
    let mut orders = spawn_service(&cluster, "shop_orders", orders_port, pinned, &common(orders_port));
    let mut env = common(frontend_port);
    env.push(("ORDERS_URL", format!("http://127.0.0.1:{orders_port}")));
    let mut frontend = spawn_service(&cluster, "shop_frontend", frontend_port, pinned, &env);
    let pids = [frontend.pid(), orders.pid()];
    let cpu = || pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let figures = runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{frontend_port}/checkout/");
        // Warm-up: connections, Kafka metadata, the consumer's group join.
        for i in 0..200 {
            client.get(format!("{url}{i}")).send().await.unwrap().error_for_status().unwrap();
        }

        // Saturated: CONCURRENCY clients, each sending its next request when the last returns.
        let cpu_before = cpu();
        let started = Instant::now();
        let deadline = started + RUN;
        let mut tasks = Vec::new();
        for worker in 0..CONCURRENCY {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = worker;
                while Instant::now() < deadline {
                    client.get(format!("{url}{i}")).send().await.unwrap().error_for_status().unwrap();
                    done += 1;
                    i += CONCURRENCY;
                }
                done
            }));
        }
        let mut requests = 0;
        for task in tasks {
            requests += task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let saturated_cpu = cpu() - cpu_before;

        // Fixed rate: one request due every 1/fixed_rate s, each on its own task.
        let cpu_before = cpu();
        let interval = Duration::from_secs(1) / fixed_rate;
        let started = tokio::time::Instant::now();
        let total = fixed_rate as u64 * RUN.as_secs();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = started + interval * i as u32;
            tokio::time::sleep_until(due).await;
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                client.get(format!("{url}{i}")).send().await.unwrap().error_for_status().unwrap();
                due.elapsed()
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        for task in tasks {
            latencies.push(task.await.unwrap());
        }
        let fixed_cpu = cpu() - cpu_before;
        latencies.sort();
        Figures {
            requests_per_second: requests as f64 / elapsed,
            cpu_us_per_request: saturated_cpu * 1e6 / requests as f64,
            cpu_utilization: saturated_cpu / elapsed,
            fixed_p50_ms: percentile(&latencies, 50),
            fixed_p99_ms: percentile(&latencies, 99),
            fixed_cpu_us_per_request: fixed_cpu * 1e6 / total as f64,
            spans_dropped: 0,
        }
    });
    frontend.terminate();
    orders.terminate();
    Figures { spans_dropped: spans_dropped(&frontend.log_text()) + spans_dropped(&orders.log_text()), ..figures }
}

fn shop_cluster() -> Cluster {
    Cluster::start_batched_with(|yaml| yaml.replace("  tracepipe.spans:", "  orders.placed:    { partitions: 3, replication: 1 }\n  tracepipe.spans:"))
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

fn median(runs: &[Figures], figure: fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Each mode's runs, alternating, then their medians against the uninstrumented ones.
fn shop_profile(profile: &Profile, modes: &[Mode], pinned: bool) {
    let mut runs: Vec<Vec<Figures>> = modes.iter().map(|_| Vec::new()).collect();
    // Each round starts with another mode, so none is always the one run last (a VM's speed
    // drifts over minutes).
    for round in 0..RUNS {
        for i in 0..modes.len() {
            let at = (i + round) % modes.len();
            runs[at].push(run_shop(modes[at], profile, pinned));
        }
    }
    let fixed_rate = profile.fixed_rate;
    println!("example shop, {} profile, GET /checkout (HTTP call + Kafka hop), {}s phases, median of {RUNS} runs each, in rotating order:", profile.name, RUN.as_secs());
    for (mode, figures) in modes.iter().zip(&runs) {
        for f in figures {
            println!(
                "  {:<31} saturated {:>5.0} req/s {:>5.0} µs CPU/req (CPU {:>3.0}%); at {fixed_rate}/s p50 {:.2} ms p99 {:.2} ms {:>5.0} µs CPU/req{}",
                mode.label,
                f.requests_per_second,
                f.cpu_us_per_request,
                f.cpu_utilization * 100.0,
                f.fixed_p50_ms,
                f.fixed_p99_ms,
                f.fixed_cpu_us_per_request,
                if f.spans_dropped > 0 { format!("; {} SPANS DROPPED", f.spans_dropped) } else { String::new() }
            );
        }
    }
    let off = &runs[0];
    let spread = off.iter().map(|f| f.fixed_p99_ms).fold((f64::MAX, f64::MIN), |(lo, hi), p99| (lo.min(p99), hi.max(p99)));
    for (mode, on) in modes.iter().zip(&runs).skip(1) {
        let ratio = |figure: fn(&Figures) -> f64| median(on, figure) / median(off, figure);
        let p99 = median(on, |f| f.fixed_p99_ms);
        println!(
            "  {}: saturated throughput ratio {:.3}, CPU per request {:.0} -> {:.0} µs ({:+.1}%); at {fixed_rate}/s CPU per request {:.0} -> {:.0} µs ({:+.1}%), p50 {:.2} -> {:.2} ms, p99 {:.2} -> {:.2} ms ({} the uninstrumented runs' {:.2}..{:.2} ms)",
            mode.label,
            ratio(|f| f.requests_per_second),
            median(off, |f| f.cpu_us_per_request),
            median(on, |f| f.cpu_us_per_request),
            (ratio(|f| f.cpu_us_per_request) - 1.0) * 100.0,
            median(off, |f| f.fixed_cpu_us_per_request),
            median(on, |f| f.fixed_cpu_us_per_request),
            (ratio(|f| f.fixed_cpu_us_per_request) - 1.0) * 100.0,
            median(off, |f| f.fixed_p50_ms),
            median(on, |f| f.fixed_p50_ms),
            median(off, |f| f.fixed_p99_ms),
            p99,
            if p99 <= spread.1 { "within" } else { "above" },
            spread.0,
            spread.1,
        );
    }
}

fn shop_overhead() {
    let pinned = pin_away_from_services_cpu();
    shop_profile(&REFERENCE, &[OFF, FULL, TENTH], pinned);
    shop_profile(&THIN, &[OFF, FULL], pinned);
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
