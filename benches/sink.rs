//! The sink's write throughput in rows per second (spans, traces, edge windows, rollups, alerts)
//! on SQLite and on PostgreSQL (127.0.0.1:5432, database `test`, skipped when unreachable), in
//! batches of the default size, on sampled traces of the 30-service scenario with their analytics.

// Shared with the tests, which use parts this bench does not.
#[allow(dead_code)]
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

/// Writes `records` and prints the rate; the number of spans stored.
fn measure(url: &StoreUrl, records: &[stored::SinkRecord]) -> i64 {
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
    spans
}

/// What the store takes on disk per stored span, everything included (traces, analytics, indexes).
fn print_size(kind: &str, bytes: u64, spans: i64) {
    println!("sink/{kind:<8} {} on disk: {:.0} bytes per stored span", bytesize::ByteSize(bytes), bytes as f64 / spans.max(1) as f64);
}

fn main() {
    let (records, _) = stored::records(SCENARIO, TRACES, now_ns() - 600_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let spans = measure(&StoreUrl::Sqlite(path.clone()), &records);
    let files = ["", "-wal"].map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len()));
    print_size("sqlite", files.iter().sum(), spans);
    let base = "postgres://postgres@127.0.0.1:5432/test";
    match postgres::Client::connect(base, postgres::NoTls) {
        Ok(mut client) => {
            let schema = format!("tracepipe_bench_{}", std::process::id());
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
            let spans = measure(&StoreUrl::Postgres(format!("{base}?options=-csearch_path%3D{schema}")), &records);
            let sizes = "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'";
            let bytes: i64 = client.query_one(sizes, &[&schema]).unwrap().get(0);
            print_size("postgres", bytes as u64, spans);
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
        }
        Err(error) => println!("sink/postgres skipped: {error}"),
    }
}
