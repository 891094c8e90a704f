//! Throughput per instance at 1, 2 and 3 instances of a consumer group, against a real
//! Kafka-protocol broker (Tansu), on one backlog: the router on the OTLP records the load
//! generator wrote, then the assembler on the spans the router wrote. Each run is a new consumer
//! group reading the whole backlog from the start, its instances separate processes. Instances
//! joining one after another rebalance the group a few times in its first seconds, so the rate is
//! measured from the moment every instance holds partitions (the group has settled) to the last
//! span the group handled, over what was left of the backlog then.
//! `TRACEPIPE_BENCH_SPANS` sets the load (default 2 000 000 spans). On a machine with fewer cores
//! than instances the instances share them: per-core figures are the ones to scale from.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{free_port, metric_value, metrics, Cluster, Process};
use tracepipe_schemas::Encoding;

/// Whether every instance's last assignment (from its log) holds partitions.
fn settled(processes: &[Process]) -> bool {
    processes.iter().all(|process| process.assigned().is_some_and(|partitions| !partitions.is_empty()))
}

/// What a run measured: spans handled after the group settled, and in how long.
struct Measured {
    spans: f64,
    took: Duration,
}

/// Instances of `processor` in group `<group>-bench-<instances>`, until `handled` (summed over
/// their /metrics) reaches `total`.
fn run(cluster: &Cluster, processor: &str, instances: usize, handled: &str, total: f64) -> Measured {
    let topology = std::fs::read_to_string(&cluster.topology_path).unwrap();
    let group = format!("group: tracepipe-{processor}\n");
    assert!(topology.contains(&group), "{processor} has its group in the topology");
    let path = cluster.topology_path.with_file_name(format!("topology-{processor}-{instances}.yaml"));
    std::fs::write(&path, topology.replace(&group, &format!("group: tracepipe-{processor}-bench-{instances}\n"))).unwrap();
    let admins: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let processes: Vec<Process> = admins
        .iter()
        .map(|port| Process::spawn(&["run", processor, "-t", path.to_str().unwrap(), "--admin", &format!("127.0.0.1:{port}")], cluster.tansu.dir.path(), processor))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut from: Option<(Instant, f64)> = None;
    loop {
        let sum: f64 = admins.iter().map(|port| metric_value(&metrics(*port), handled)).sum();
        let now = Instant::now();
        if from.is_none() && settled(&processes) {
            from = Some((now, sum));
        }
        if sum >= total {
            let (start, before) = from.unwrap_or((now, sum));
            drop(processes);
            return Measured { spans: total - before, took: now.duration_since(start) };
        }
        assert!(now < deadline, "{processor} × {instances} did not finish: {sum} of {total}\n{}", processes[0].log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let spans: u64 = std::env::var("TRACEPIPE_BENCH_SPANS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let cluster = Cluster::start_batched();
    let truth = cluster.loadgen(Encoding::OtlpProto, spans, 0.0);
    let total = truth.span_count as f64;
    println!("backlog: {} spans in {} OTLP records; {} cores", truth.span_count, truth.message_count, std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The router first, once, so that tracepipe.spans holds the backlog once for the assembler.
    let mut router = vec![run(&cluster, "router", 1, "tracepipe_router_routed_spans_total{encoding=\"otlp_proto\"}", total)];
    let assembler: Vec<Measured> = (1..=3).map(|n| run(&cluster, "assembler", n, "tracepipe_assembler_spans_total", total)).collect();
    router.extend((2..=3).map(|n| run(&cluster, "router", n, "tracepipe_router_routed_spans_total{encoding=\"otlp_proto\"}", total)));
    for (processor, times) in [("router", &router), ("assembler", &assembler)] {
        for (index, measured) in times.iter().enumerate() {
            let instances = index + 1;
            if measured.spans < total / 5.0 {
                println!("{processor:<9} × {instances}  the backlog was mostly handled before the group settled ({:.0} spans left): raise TRACEPIPE_BENCH_SPANS", measured.spans);
                continue;
            }
            let rate = measured.spans / measured.took.as_secs_f64();
            println!(
                "{processor:<9} × {instances}  {:>9.0} spans after the group settled in {:>6.2}s  {:>10.0} spans/s in all  {:>10.0} spans/s per instance",
                measured.spans,
                measured.took.as_secs_f64(),
                rate,
                rate / instances as f64
            );
        }
    }
}
