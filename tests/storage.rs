//! The sink on both stores: a replay writes no duplicates, retention deletes what is old and keeps
//! what is not, and the schema migrates once. PostgreSQL is the one on 127.0.0.1:5432 (database
//! `test`), each test in a schema of its own.

mod support;

use std::time::Duration;

use support::stored::{self, count};
use tracepipe_sink::SinkConfig;
use tracepipe_store::{Retention, Store, StoreUrl};

const SMALL: &str = include_str!("scenarios/small.yaml");
const SECOND: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A PostgreSQL URL whose connections use a fresh schema.
fn postgres_url() -> StoreUrl {
    let schema = format!("tracepipe_test_{}_{}", std::process::id(), now_ns() % 1_000_000_000);
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let mut client = postgres::Client::connect(base, postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (database test, trust auth); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`");
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
    StoreUrl::Postgres(format!("{base}?options=-csearch_path%3D{schema}"))
}

fn replay_writes_nothing_twice(url: StoreUrl) {
    let start = now_ns() - 60 * SECOND;
    let (records, _) = stored::records(SMALL, 300, start);
    let mut sink = stored::sink(&url, SinkConfig::default());
    stored::feed(&mut sink, &records, 0, now_ns());
    let tables = ["spans", "traces", "operations", "edges", "rollups", "alerts"];
    let first: Vec<i64> = tables.iter().map(|t| count(&mut sink.store(), t)).collect();
    eprintln!("{} stored: {:?}", url.kind(), tables.iter().zip(&first).collect::<Vec<_>>());
    assert!(first.iter().all(|&n| n > 0), "every table has rows: {first:?}");
    assert_eq!(first[1], 300, "one row per trace");
    assert_eq!(first[5], 2, "the alert fired and resolved");
    // A crash before the commit: the same records, at the same offsets, come again; and a fresh
    // sink (a restarted process) sees them too.
    stored::feed(&mut sink, &records, 0, now_ns());
    drop(sink);
    let mut restarted = stored::sink(&url, SinkConfig::default());
    stored::feed(&mut restarted, &records, 0, now_ns());
    let again: Vec<i64> = tables.iter().map(|t| count(&mut restarted.store(), t)).collect();
    assert_eq!(first, again, "a replay adds no row");
    // Upstream re-emission of the same trace (the assembler replayed) is the same spans too.
    let traces_only: Vec<_> = records.iter().filter(|(input, _)| *input == 0).cloned().collect();
    stored::feed(&mut restarted, &traces_only, 1_000_000, now_ns());
    assert_eq!(count(&mut restarted.store(), "spans"), first[0]);
    assert_eq!(restarted.store().schema_version().unwrap(), 4, "every migration, each once");
}

fn retention_deletes_only_old_rows(url: StoreUrl) {
    let now = now_ns();
    let (old, _) = stored::records(SMALL, 100, now - 3 * 86_400 * SECOND);
    let (fresh, fresh_ids) = stored::records(SMALL, 100, now - 60 * SECOND);
    let day = Duration::from_secs(86_400);
    let config = SinkConfig { retention: Retention { traces: day, edges: day, rollups: day, rollups_5m: day, rollups_1h: day, rollups_1d: day, alerts: day }, ..SinkConfig::default() };
    let mut sink = stored::sink(&url, config);
    stored::feed(&mut sink, &old, 0, now);
    stored::feed(&mut sink, &fresh, 10_000, now);
    let before = count(&mut sink.store(), "traces");
    let deleted = sink.enforce_retention(now).unwrap();
    eprintln!("{} retention deleted {deleted:?}", url.kind());
    let after = count(&mut sink.store(), "traces");
    assert_eq!(before, 200);
    assert_eq!(after, 100, "the three-day-old traces are gone, the fresh ones stay");
    let kept: Vec<String> = sink.store().query("SELECT trace_id FROM traces", &[]).unwrap().into_iter().map(|r| r[0].text().to_string()).collect();
    for id in fresh_ids {
        assert!(kept.contains(&hex::encode(id)));
    }
    for (table, n) in deleted {
        if ["spans", "traces", "edges", "rollups"].contains(&table) {
            assert!(n > 0, "{table}: old rows deleted");
        }
    }
    assert_eq!(count(&mut sink.store(), "alerts"), 2, "the fresh alert events stay (the old ones are gone)");
}

#[test]
fn sqlite_replay_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    replay_writes_nothing_twice(StoreUrl::Sqlite(dir.path().join("tracepipe.db")));
}

#[test]
fn postgres_replay_writes_nothing_twice() {
    replay_writes_nothing_twice(postgres_url());
}

#[test]
fn sqlite_retention_deletes_only_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    retention_deletes_only_old_rows(StoreUrl::Sqlite(dir.path().join("tracepipe.db")));
}

#[test]
fn postgres_retention_deletes_only_old_rows() {
    retention_deletes_only_old_rows(postgres_url());
}

#[test]
fn unreadable_records_are_poison_and_bad_span_ids_are_skipped() {
    use tracepipe_runtime::{Emitter, InputRecord, Processor, SourcePartition};
    let dir = tempfile::tempdir().unwrap();
    let mut sink = stored::sink(&StoreUrl::Sqlite(dir.path().join("t.db")), SinkConfig::default());
    let mut out = Emitter::default();
    for (input, payload, why) in [
        (0u16, &b"\x0a\x05abc"[..], "AssembledTrace"),
        (0, &[0x0a, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], "all zero"),
        (1, &b"{\"calls\": 1"[..], "edge window"),
        (2, &b"[]"[..], "rollup"),
        (3, &b"\xff\xfe"[..], "alert"),
    ] {
        let record = InputRecord { source: SourcePartition { input, partition: 0 }, topic: "t", offset: 1, key: None, payload, timestamp_ms: None };
        let poison = sink.on_input(&record, now_ns(), &mut out).unwrap_err();
        assert_eq!(poison.kind, "decode");
        assert!(poison.reason.contains(why), "{why}: {}", poison.reason);
    }
    assert_eq!(sink.pending_rows(), 0);
    assert_eq!(sink.low_watermark(SourcePartition { input: 0, partition: 0 }), None, "poison holds no offset");
}

fn first_span(trace: &mut tracepipe_schemas::v1::AssembledTrace) -> &mut opentelemetry_proto::tonic::trace::v1::Span {
    &mut trace.resource_spans[0].scope_spans[0].spans[0]
}

/// Rows a store refuses for their values never pass, however often they are written: the sink
/// finds them by halving the batch, skips them with a log line and a counter, and writes every
/// other row. A NUL in a span name (which PostgreSQL's TEXT cannot hold) is not one of them: it is
/// stored as U+FFFD on both stores.
fn refused_rows_are_skipped_and_the_rest_written(url: StoreUrl) {
    use prost::Message as _;
    use tracepipe_runtime::{Emitter, InputRecord, Processor, SourcePartition};
    use tracepipe_schemas::v1::AssembledTrace;
    let start = now_ns() - 60 * SECOND;
    let (records, _) = stored::records(SMALL, 40, start);
    let mut traces: Vec<AssembledTrace> = records.iter().filter(|(input, _)| *input == 0).map(|(_, p)| AssembledTrace::decode(p.as_slice()).unwrap()).collect();
    first_span(&mut traces[3]).name = "GET /cart\0/items".into();
    first_span(&mut traces[17]).name = "refused by the store".into();
    let refused_span = hex::encode(&first_span(&mut traces[17]).span_id);
    let spans_sent: usize = traces.iter().map(|t| t.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>()).sum();

    let mut sink = stored::sink(&url, SinkConfig { batch_rows: 10_000, ..SinkConfig::default() });
    let refuse = match url {
        StoreUrl::Postgres(_) => "ALTER TABLE spans ADD CONSTRAINT test_refuses CHECK (operation <> 'refused by the store')",
        StoreUrl::Sqlite(_) => "CREATE TRIGGER test_refuses BEFORE INSERT ON spans WHEN NEW.operation = 'refused by the store' BEGIN SELECT RAISE(ABORT, 'refused by the store'); END",
    };
    sink.store().execute(refuse, &[]).unwrap();
    let refused_before = tracepipe_sink::metrics::ROWS_REFUSED.with_label_values(&["spans"]).get();
    let mut out = Emitter::default();
    for (offset, trace) in traces.iter().enumerate() {
        let payload = trace.encode_to_vec();
        let record = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.sampled", offset: offset as i64, key: None, payload: &payload, timestamp_ms: None };
        sink.on_input(&record, now_ns(), &mut out).unwrap();
    }
    // As the pipeline does: the tick hands the batch to the writer, which keeps at it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut now = now_ns();
    while sink.pending_rows() > 0 {
        assert!(std::time::Instant::now() < deadline, "the sink still holds {} rows: a refused batch stalled it", sink.pending_rows());
        now += 2 * SECOND;
        sink.on_tick(now, &mut out);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sink.low_watermark(SourcePartition { input: 0, partition: 0 }), None, "every offset is released");
    let stored_spans = count(&mut sink.store(), "spans");
    eprintln!("{}: {spans_sent} spans sent, {stored_spans} stored", url.kind());
    assert_eq!(stored_spans as usize, spans_sent - 1, "every span but the refused one is stored");
    assert_eq!(count(&mut sink.store(), "traces"), 40);
    // At least: the other store's test, in this process too, counts into the same counter.
    assert!(tracepipe_sink::metrics::ROWS_REFUSED.with_label_values(&["spans"]).get() > refused_before, "the refused row is counted");
    let missing = sink.store().query("SELECT COUNT(*) FROM spans WHERE span_id = $1", &[tracepipe_store::Param::Text(&refused_span)]).unwrap()[0][0].int();
    assert_eq!(missing, 0);
    let with_nul = sink.store().query("SELECT operation FROM spans WHERE operation LIKE 'GET /cart%/items'", &[]).unwrap();
    assert_eq!(with_nul.len(), 1);
    assert_eq!(with_nul[0][0].text(), "GET /cart\u{FFFD}/items");
}

#[test]
fn sqlite_refused_rows_are_skipped_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    refused_rows_are_skipped_and_the_rest_written(StoreUrl::Sqlite(dir.path().join("tracepipe.db")));
}

#[test]
fn postgres_refused_rows_are_skipped_and_the_rest_written() {
    refused_rows_are_skipped_and_the_rest_written(postgres_url());
}

/// A flush the store refused keeps its rows pending, together with what was read after it: the
/// next flush writes both.
#[test]
fn a_failed_flush_keeps_its_rows_with_those_read_after() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("tracepipe.db"));
    let (records, _) = stored::records(SMALL, 20, now_ns() - 60 * SECOND);
    let traces: Vec<_> = records.into_iter().filter(|(input, _)| *input == 0).collect();
    let mut sink = stored::sink(&url, SinkConfig { batch_rows: 10_000, ..SinkConfig::default() });
    sink.store().execute("CREATE TRIGGER test_refuses BEFORE INSERT ON traces BEGIN SELECT RAISE(ABORT, 'store unavailable'); END", &[]).unwrap();
    let mut out = tracepipe_runtime::Emitter::default();
    let feed = |sink: &mut tracepipe_sink::Sink, records: &[stored::SinkRecord], first: i64, out: &mut tracepipe_runtime::Emitter| {
        use tracepipe_runtime::{InputRecord, Processor, SourcePartition};
        for (i, (_, payload)) in records.iter().enumerate() {
            let record = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.sampled", offset: first + i as i64, key: None, payload, timestamp_ms: None };
            sink.on_input(&record, now_ns(), out).unwrap();
        }
    };
    feed(&mut sink, &traces[..10], 0, &mut out);
    assert!(sink.flush(now_ns()).is_err());
    feed(&mut sink, &traces[10..], 10, &mut out);
    use tracepipe_runtime::{Processor, SourcePartition};
    assert_eq!(sink.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(0), "the failed rows still hold their offsets");
    sink.store().execute("DROP TRIGGER test_refuses", &[]).unwrap();
    sink.flush(now_ns()).unwrap();
    assert_eq!(count(&mut sink.store(), "traces"), 20, "the rows of the failed flush and those read after it");
    assert_eq!(sink.low_watermark(SourcePartition { input: 0, partition: 0 }), None);
}

/// The sink downsamples the rollups into 5-minute, hourly and daily series that equal the
/// 1-minute ones merged, and still answer once the 1-minute rollups are gone.
#[test]
fn downsampled_series_equal_the_minutes_merged_and_outlive_them() {
    use tracepipe_health::series::{merged, Subject};
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("tracepipe.db"));
    let now = now_ns();
    let mut sink = stored::sink(&url, SinkConfig::default());
    for k in 0..12u64 {
        let (records, _) = stored::records(SMALL, 60, now - 4 * 3600 * SECOND + k * 900 * SECOND);
        stored::feed(&mut sink, &records, k as i64 * 100_000, now);
    }
    let subjects = [
        Subject::Operation { service: "frontend".into(), operation: "GET /product".into(), span_kind: Some("SPAN_KIND_SERVER".into()) },
        Subject::Cohort { service: "frontend".into(), operation: "GET /product".into(), span_kind: None, attribute: "feature_flag.recommendations".into(), value: "on".into() },
    ];
    let (from_ms, to_ms) = (((now / 1_000_000) as i64 - 5 * 3_600_000) / 3_600_000 * 3_600_000, (now / 1_000_000) as i64);
    let figures = |store: &mut Store, bucket: i64| -> Vec<Vec<(i64, u64, u64, Option<f64>, Option<f64>)>> {
        subjects
            .iter()
            .map(|s| merged(store, s, from_ms, to_ms, Some(bucket)).unwrap().into_iter().map(|(t, m)| (t, m.count, m.errors, m.latency_us.quantile_ms(0.5), m.latency_us.quantile_ms(0.99))).collect())
            .collect()
    };
    let mut store = Store::open(&url).unwrap();
    let minutes: Vec<_> = [300_000, 3_600_000].iter().map(|&b| figures(&mut store, b)).collect();
    assert!(minutes[0][0].len() >= 12 && minutes[1][0].len() >= 3, "{:?}", minutes[1]);
    sink.enforce_retention(now).unwrap();
    let downsampled = count_where(&mut store, "kind LIKE '%@%'");
    assert!(downsampled > 0);
    sink.enforce_retention(now).unwrap();
    assert_eq!(count_where(&mut store, "kind LIKE '%@%'"), downsampled, "merging again writes nothing new");
    for (k, &bucket) in [300_000, 3_600_000].iter().enumerate() {
        assert_eq!(figures(&mut store, bucket), minutes[k], "at {bucket} ms, with the downsampled buckets");
    }
    // Rollups that reach the store late, for buckets merged already (a sink that was down): the
    // next pass merges them in.
    let (late, _) = stored::records(SMALL, 60, now - 1800 * SECOND);
    stored::feed(&mut sink, &late, 5_000_000, now);
    // What the series should be: the 1-minute rollups merged by hand.
    let by_hand = |store: &mut Store, bucket: i64| -> Vec<Vec<(i64, u64, u64, Option<f64>, Option<f64>)>> {
        subjects
            .iter()
            .map(|s| {
                let mut coarse: std::collections::BTreeMap<i64, tracepipe_health::series::Merged> = Default::default();
                for (t, m) in merged(store, s, from_ms, to_ms, Some(60_000)).unwrap() {
                    let c = coarse.entry(t.div_euclid(bucket) * bucket).or_default();
                    c.count += m.count;
                    c.errors += m.errors;
                    c.latency_us.merge(&m.latency_us);
                }
                coarse.into_iter().map(|(t, m)| (t, m.count, m.errors, m.latency_us.quantile_ms(0.5), m.latency_us.quantile_ms(0.99))).collect()
            })
            .collect()
    };
    let with_late: Vec<_> = [300_000, 3_600_000].iter().map(|&b| by_hand(&mut store, b)).collect();
    assert_ne!(with_late[0], minutes[0], "the late rollups are in the 1-minute series");
    sink.enforce_retention(now).unwrap();
    for (k, &bucket) in [300_000, 3_600_000].iter().enumerate() {
        assert_eq!(figures(&mut store, bucket), with_late[k], "at {bucket} ms, the late rollups merged in");
    }
    let minutes = with_late;

    // The 1-minute rollups expire; the settled buckets still answer from the downsampled ones.
    let through_5m = tracepipe_sink::downsample::through_ms(&mut store, "5m").unwrap();
    let through_1h = tracepipe_sink::downsample::through_ms(&mut store, "1h").unwrap();
    store.execute("DELETE FROM rollups WHERE kind NOT LIKE '%@%' AND window_start_ms < $1", &[tracepipe_store::Param::Int(through_1h)]).unwrap();
    for (k, &bucket) in [300_000, 3_600_000].iter().enumerate() {
        assert_eq!(figures(&mut store, bucket), minutes[k], "at {bucket} ms, the 1-minute rollups gone");
    }
    eprintln!("{downsampled} downsampled rows; 5m merged through {through_5m}");
}

fn count_where(store: &mut Store, condition: &str) -> i64 {
    store.query(&format!("SELECT COUNT(*) FROM rollups WHERE {condition}"), &[]).unwrap()[0][0].int()
}
