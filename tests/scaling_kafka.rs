//! Horizontal scaling against a real Kafka-protocol broker (Tansu): every consumer group of the
//! pipeline goes from one instance to three and back to one while the load generator runs, each
//! instance a process of its own. The groups spread their partitions over the three (disjoint,
//! covering every partition), the instances that leave drain and commit, the one left takes
//! everything back, and the store's totals equal the ground truth exactly.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::totals::{cluster_with_store, expected, wait_for_totals};
use support::{loadgen_yaml, repo_path, Cluster, Process};
use tracepipe::loadgen::Limits;

/// Every processor that is a consumer group, with the topics it reads.
const GROUPS: [(&str, &[&str]); 7] = [
    ("router", &["otlp_spans", "jaeger-spans", "zipkin"]),
    ("assembler", &["tracepipe.spans"]),
    ("sampler", &["tracepipe.traces"]),
    ("analyzer", &["tracepipe.traces"]),
    ("dependencies", &["tracepipe.traces"]),
    // In the order the sink subscribes them (its log numbers them so).
    ("sink", &["tracepipe.alerts", "tracepipe.edges", "tracepipe.rollups", "tracepipe.sampled"]),
    ("funnels", &["tracepipe.funnel-steps"]),
];

/// Waits until each group's instances hold disjoint, non-empty sets of partitions that together
/// are all of its inputs' partitions; returns how many each instance holds, per group.
fn wait_for_spread(cluster: &Cluster, instances: &BTreeMap<&str, Vec<Process>>, timeout: Duration) -> BTreeMap<String, Vec<usize>> {
    let started = Instant::now();
    loop {
        let mut spread = BTreeMap::new();
        let mut settled = true;
        for (group, topics) in GROUPS {
            let all: BTreeSet<(u16, i32)> = topics.iter().enumerate().flat_map(|(input, topic)| (0..cluster.topology.topics[*topic].partitions).map(move |p| (input as u16, p))).collect();
            let held: Vec<BTreeSet<(u16, i32)>> = instances[group].iter().map(|p| p.assigned().unwrap_or_default()).collect();
            let union: BTreeSet<(u16, i32)> = held.iter().flatten().copied().collect();
            let total: usize = held.iter().map(BTreeSet::len).sum();
            settled &= held.iter().all(|set| !set.is_empty()) && union == all && total == all.len();
            spread.insert(group.to_string(), held.iter().map(BTreeSet::len).collect());
        }
        if settled {
            return spread;
        }
        assert!(started.elapsed() < timeout, "the groups did not spread their partitions within {timeout:?}: {spread:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_group_scales_from_one_to_three_and_back_under_load_and_the_store_stays_exact() {
    let (_dir, store, cluster) = cluster_with_store();
    let mut instances: BTreeMap<&str, Vec<Process>> = GROUPS.iter().map(|(group, _)| (*group, vec![cluster.spawn(group)])).collect();
    let one = wait_for_spread(&cluster, &instances, Duration::from_secs(90));

    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap();
    let brokers = cluster.brokers();
    let load_started = Instant::now();
    let load = std::thread::spawn(move || loadgen_yaml(&brokers, &scenario, Limits { spans: Some(75_000), ..Default::default() }, 1_500.0));

    // 1 → 3: two more instances of every group join while traffic flows.
    std::thread::sleep(Duration::from_secs(5));
    for (group, list) in instances.iter_mut() {
        list.push(cluster.spawn(group));
        list.push(cluster.spawn(group));
    }
    let three = wait_for_spread(&cluster, &instances, Duration::from_secs(120));
    let spread_after = load_started.elapsed();

    // 3 → 1: the two that joined leave (SIGTERM: drain, commit, leave the group); the first
    // instance takes every partition back.
    std::thread::sleep(Duration::from_secs(5));
    assert!(!load.is_finished(), "the load ended before the groups went back to one instance ({:.1?} in): a longer load is needed", load_started.elapsed());
    for list in instances.values_mut() {
        for mut leaving in list.drain(1..) {
            assert_eq!(leaving.terminate(), Some(0), "a leaving instance drains and exits cleanly:\n{}", leaving.log_text());
        }
    }
    let back = wait_for_spread(&cluster, &instances, Duration::from_secs(120));

    let truth = load.join().unwrap();
    let load_took = load_started.elapsed();
    let expected = expected(&truth);
    let settled = wait_for_totals(&store, &expected, Duration::from_secs(120));
    eprintln!(
        "7 groups scaled 1 → 3 → 1 while {} traces ({}) were sent over {load_took:.1?}; spread over three {spread_after:.1?} into the load; the store equals the truth {settled:.1?} after the load ended",
        truth.trace_count,
        expected.summary()
    );
    eprintln!("partitions per instance: one {one:?}\n  three {three:?}\n  back to one {back:?}");
}
