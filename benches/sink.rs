//! The sink's write throughput in rows per second (spans, traces, edge windows, rollups, alerts)
//! on SQLite and on PostgreSQL (127.0.0.1:5432, database `test`, skipped when unreachable), in
//! batches of the default size, on sampled traces of the 30-service scenario with their analytics.

#[path = "../tests/support/stored.rs"]
mod stored;

use std::time::Instant;

use tracepipe_sink::SinkConfig;
use tracepipe_store::StoreUrl;

const SCENARIO: &str = include_str!("../tests/scenarios/large.yaml");
const TRACES: usize = 5_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn measure(url: &StoreUrl, records: &[stored::SinkRecord]) {
    let mut sink = stored::sink(url, SinkConfig::default());
    let started = Instant::now();
    stored::feed(&mut sink, records, 0, now_ns());
    let elapsed = started.elapsed().as_secs_f64();
    let rows: i64 = ["spans", "traces", "edges", "rollups", "alerts"].iter().map(|t| stored::count(&mut sink.store(), t)).sum();
    let spans = stored::count(&mut sink.store(), "spans");
    println!(
        "sink/{:<8} {rows} rows ({spans} spans) in {elapsed:.2} s: {:.0} rows/s, {:.0} spans/s (decode, convert, batch of {} rows, commit)",
        url.kind(),
        rows as f64 / elapsed,
        spans as f64 / elapsed,
        SinkConfig::default().batch_rows
    );
}

fn main() {
    let (records, _) = stored::records(SCENARIO, TRACES, now_ns() - 600_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    measure(&StoreUrl::Sqlite(dir.path().join("bench.db")), &records);
    let base = "postgres://postgres@127.0.0.1:5432/test";
    match postgres::Client::connect(base, postgres::NoTls) {
        Ok(mut client) => {
            let schema = format!("tracepipe_bench_{}", std::process::id());
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
            measure(&StoreUrl::Postgres(format!("{base}?options=-csearch_path%3D{schema}")), &records);
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
        }
        Err(error) => println!("sink/postgres skipped: {error}"),
    }
}
