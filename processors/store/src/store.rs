//! The store: one SQL schema on SQLite (a file, the embedded default) or PostgreSQL (by URL, for
//! shared deployments). Both take the same statements: integers are BIGINT, floats DOUBLE
//! PRECISION, everything else TEXT, parameters `$1…$n`, and conflicts `ON CONFLICT … DO NOTHING`,
//! so there is one schema and one query text per operation, not one per database.
//!
//! Text is stored as given, except for NUL (U+0000), which PostgreSQL's TEXT cannot hold: both
//! stores write U+FFFD in its place, so a span name with a NUL in it is stored (alike on both)
//! instead of refusing its whole batch for ever.
//!
//! Migrations are numbered and applied once, in order, each in the transaction that records it
//! (`tracepipe_schema`); on PostgreSQL an advisory lock keeps two sinks starting together from
//! applying the same one twice.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage url `{0}` is neither sqlite://PATH nor postgres://…")]
    Url(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("the store's schema is at version {found}, newer than this build's {known}")]
    NewerSchema { found: i64, known: i64 },
}

impl StoreError {
    /// A PostgreSQL connection that failed (no server yet, reset), or a server that says it is
    /// starting, shutting down or out of connections (SQLSTATE classes 08, 57 and 53): worth
    /// waiting for. A refused password or a missing database is not.
    pub fn database_not_answering_yet(&self) -> bool {
        let StoreError::Postgres(error) = self else { return false };
        match error.as_db_error() {
            None => true,
            Some(db) => ["08", "57", "53"].iter().any(|class| db.code().code().starts_with(class)),
        }
    }

    /// The store refused a statement for the values it carries (PostgreSQL's SQLSTATE classes 22,
    /// data exception, and 23, integrity constraint; SQLite's constraint, type-mismatch and
    /// too-big errors): the same rows will be refused however often they are written again.
    pub fn refused_the_values(&self) -> bool {
        match self {
            StoreError::Postgres(error) => error.as_db_error().is_some_and(|db| ["22", "23"].iter().any(|class| db.code().code().starts_with(class))),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                matches!(failure.code, rusqlite::ErrorCode::ConstraintViolation | rusqlite::ErrorCode::TypeMismatch | rusqlite::ErrorCode::TooBig)
            }
            _ => false,
        }
    }
}

/// `text` as the store keeps it: NUL, which PostgreSQL refuses in TEXT, becomes U+FFFD.
fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreUrl {
    /// `sqlite://PATH` (relative or absolute; `sqlite://:memory:` for a private in-memory store)
    /// or `postgres://…` / `postgresql://…` in libpq's URL form.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url(url.to_string()));
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(url.to_string()))
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite(_) => "sqlite",
            StoreUrl::Postgres(_) => "postgres",
        }
    }
}

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(v) => *v,
            Cell::Real(v) => *v as i64,
            _ => 0,
        }
    }

    pub fn real(&self) -> f64 {
        match self {
            Cell::Real(v) => *v,
            Cell::Int(v) => *v as f64,
            _ => 0.0,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Cell::Text(v) => v,
            _ => "",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    pub fn into_text(self) -> String {
        match self {
            Cell::Text(v) => v,
            _ => String::new(),
        }
    }
}

pub type Row = Vec<Cell>;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Param::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Param::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(v)),
            Param::Text(v) => match storable_text(v) {
                std::borrow::Cow::Borrowed(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
                std::borrow::Cow::Owned(v) => ToSqlOutput::Owned(rusqlite::types::Value::Text(v)),
            },
        })
    }
}

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(&self, ty: &postgres::types::Type, out: &mut bytes::BytesMut) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Int(v) => v.to_sql(ty, out),
            Param::Real(v) => v.to_sql(ty, out),
            Param::Text(v) => storable_text(v).as_ref().to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [Type::INT8, Type::FLOAT8, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    postgres::types::to_sql_checked!();
}

/// The schema, one migration per entry; never edit a shipped one, add the next.
const MIGRATIONS: &[&str] = &[
    // 1: sampled spans with their search columns; traces; the service/operation catalogue;
    // edge windows, rollups and alert events.
    "CREATE TABLE spans (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT NOT NULL,
        service TEXT NOT NULL,
        operation TEXT NOT NULL,
        span_kind TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        duration_us BIGINT NOT NULL,
        error BIGINT NOT NULL,
        tags TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX spans_by_service_start ON spans (service, start_us);
    CREATE INDEX spans_by_start ON spans (start_us);
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        start_us BIGINT NOT NULL,
        sampling_rule TEXT NOT NULL,
        adjusted_count DOUBLE PRECISION NOT NULL,
        truncated BIGINT NOT NULL
    );
    CREATE INDEX traces_by_start ON traces (start_us);
    CREATE TABLE operations (
        service TEXT NOT NULL,
        operation TEXT NOT NULL,
        span_kind TEXT NOT NULL,
        last_seen_us BIGINT NOT NULL,
        PRIMARY KEY (service, operation, span_kind)
    );
    CREATE TABLE edges (
        source TEXT PRIMARY KEY,
        window_start_ms BIGINT NOT NULL,
        client TEXT NOT NULL,
        server TEXT NOT NULL,
        connection_type TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX edges_by_window ON edges (window_start_ms);
    CREATE TABLE rollups (
        source TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        window_start_ms BIGINT NOT NULL,
        service TEXT NOT NULL,
        operation TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX rollups_by_kind_window ON rollups (kind, window_start_ms);
    CREATE TABLE alerts (
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        alert_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        event_ms BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (id, state)
    );
    CREATE INDEX alerts_by_event ON alerts (event_ms);",
    // 2: edge windows and rollups are keyed by what they describe (their window, series and the
    // input segment they were counted in), not by the Kafka position they were read from; of two
    // versions of one key the one covering more input records is kept.
    "ALTER TABLE edges RENAME COLUMN source TO record_key;
    ALTER TABLE edges ADD COLUMN coverage BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE rollups RENAME COLUMN source TO record_key;
    ALTER TABLE rollups ADD COLUMN coverage BIGINT NOT NULL DEFAULT 0;",
    // 3: a rollup's event counts (an SLO's total and good events), summed by SQL over windows.
    "ALTER TABLE rollups ADD COLUMN total BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE rollups ADD COLUMN good BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX rollups_by_kind_name_window ON rollups (kind, operation, window_start_ms);",
    // 4: how far each downsampled resolution of the rollups (`operation@5m`, …) has been merged.
    "CREATE TABLE downsampled (resolution TEXT PRIMARY KEY, through_ms BIGINT NOT NULL);",
];

/// Rows per multi-row INSERT: well under SQLite's 32766 and PostgreSQL's 65535 parameters.
const ROWS_PER_STATEMENT: usize = 256;

pub struct Store {
    url: StoreUrl,
    backend: Backend,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

/// One write transaction.
pub enum Transaction<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

impl Store {
    /// Connects and brings the schema up to date.
    pub fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        let backend = match url {
            StoreUrl::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path)?;
                // WAL: the query server reads while the sink writes. NORMAL sync is durable
                // across process crashes (only an OS crash may lose the last commits, which the
                // sink replays from Kafka anyway).
                connection.pragma_update(None, "journal_mode", "WAL")?;
                connection.pragma_update(None, "synchronous", "NORMAL")?;
                connection.busy_timeout(std::time::Duration::from_secs(10))?;
                Backend::Sqlite(connection)
            }
            StoreUrl::Postgres(url) => Backend::Postgres(Box::new(postgres::Client::connect(url, postgres::NoTls)?)),
        };
        let mut store = Store { url: url.clone(), backend };
        store.migrate()?;
        Ok(store)
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The schema version after migrating.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self.query("SELECT MAX(version) FROM tracepipe_schema", &[])?.first().map_or(0, |row| row[0].int()))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let kind = self.url.kind();
        let mut tx = self.transaction()?;
        if let Transaction::Postgres(tx) = &mut tx {
            tx.execute("SELECT pg_advisory_xact_lock(7370312)", &[])?;
        }
        tx.batch("CREATE TABLE IF NOT EXISTS tracepipe_schema (version BIGINT PRIMARY KEY, applied_unix_ms BIGINT NOT NULL)")?;
        let found = tx.query("SELECT MAX(version) FROM tracepipe_schema", &[])?.first().map_or(0, |row| row[0].int());
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch(migration)?;
            tx.execute("INSERT INTO tracepipe_schema (version, applied_unix_ms) VALUES ($1, $2)", &[Param::Int(index as i64 + 1), Param::Int(now_ms)])?;
            tracing::info!(version = index + 1, store = kind, "store schema migrated");
        }
        tx.commit()
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(match &mut self.backend {
            // IMMEDIATE: take the write lock up front, so a reader's snapshot never blocks the commit.
            Backend::Sqlite(connection) => Transaction::Sqlite(connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?),
            Backend::Postgres(client) => Transaction::Postgres(client.transaction()?),
        })
    }

    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(connection) => sqlite_query(connection, sql, params),
            Backend::Postgres(client) => {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(client.query(sql, &params)?.iter().map(postgres_row).collect())
            }
        }
    }

    /// Runs one statement outside a transaction; returns the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(connection) => Ok(connection.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter()))? as u64),
            Backend::Postgres(client) => {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(client.execute(sql, &params)?)
            }
        }
    }
}

impl Transaction<'_> {
    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Transaction::Sqlite(tx) => tx.execute_batch(sql)?,
            Transaction::Postgres(tx) => tx.batch_execute(sql)?,
        }
        Ok(())
    }

    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match self {
            Transaction::Sqlite(tx) => Ok(tx.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter()))? as u64),
            Transaction::Postgres(tx) => {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(tx.execute(sql, &params)?)
            }
        }
    }

    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        match self {
            Transaction::Sqlite(tx) => sqlite_query(tx, sql, params),
            Transaction::Postgres(tx) => {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(tx.query(sql, &params)?.iter().map(postgres_row).collect())
            }
        }
    }

    /// Inserts `rows` (each `columns.len()` parameters, flattened) with multi-row INSERTs;
    /// `on_conflict` ends each statement (e.g. `ON CONFLICT (id) DO NOTHING`). Returns the rows
    /// actually inserted.
    pub fn insert(&mut self, table: &str, columns: &[&str], on_conflict: &str, rows: &[Param<'_>]) -> Result<u64, StoreError> {
        let width = columns.len();
        debug_assert_eq!(rows.len() % width, 0);
        let mut inserted = 0;
        let mut sql = String::new();
        let mut prepared_for = 0;
        for chunk in rows.chunks(width * ROWS_PER_STATEMENT) {
            let count = chunk.len() / width;
            if count != prepared_for {
                sql = insert_sql(table, columns, on_conflict, count);
                prepared_for = count;
            }
            inserted += self.execute(&sql, chunk)?;
        }
        Ok(inserted)
    }

    pub fn commit(self) -> Result<(), StoreError> {
        match self {
            Transaction::Sqlite(tx) => tx.commit()?,
            Transaction::Postgres(tx) => tx.commit()?,
        }
        Ok(())
    }
}

fn insert_sql(table: &str, columns: &[&str], on_conflict: &str, rows: usize) -> String {
    use std::fmt::Write;
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns.len() {
            n += 1;
            let _ = write!(sql, "{}${n}", if column == 0 { "" } else { ", " });
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(on_conflict);
    sql
}

fn sqlite_query(connection: &rusqlite::Connection, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let width = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(width);
        for i in 0..width {
            use rusqlite::types::ValueRef;
            cells.push(match row.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(v) | ValueRef::Blob(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
            });
        }
        out.push(cells);
    }
    Ok(out)
}

fn postgres_row(row: &postgres::Row) -> Row {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let cell = if *ty == Type::INT8 {
                row.get::<_, Option<i64>>(i).map(Cell::Int)
            } else if *ty == Type::INT4 {
                row.get::<_, Option<i32>>(i).map(|v| Cell::Int(v.into()))
            } else if *ty == Type::FLOAT8 {
                row.get::<_, Option<f64>>(i).map(Cell::Real)
            } else {
                row.try_get::<_, Option<String>>(i).ok().flatten().map(Cell::Text)
            };
            cell.unwrap_or(Cell::Null)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(StoreUrl::parse("sqlite://data/t.db").unwrap(), StoreUrl::Sqlite("data/t.db".into()));
        assert_eq!(StoreUrl::parse("sqlite:///var/lib/t.db").unwrap(), StoreUrl::Sqlite("/var/lib/t.db".into()));
        assert!(matches!(StoreUrl::parse("postgresql://u@h/db").unwrap(), StoreUrl::Postgres(_)));
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Sqlite(dir.path().join("t.db"));
        let mut store = Store::open(&url).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        let mut again = Store::open(&url).unwrap();
        assert_eq!(again.query("SELECT COUNT(*) FROM tracepipe_schema", &[]).unwrap()[0][0].int(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn multi_row_inserts_skip_conflicts() {
        let mut store = Store::open(&StoreUrl::Sqlite(":memory:".into())).unwrap();
        let mut tx = store.transaction().unwrap();
        let rows: Vec<Param> = (0..600).flat_map(|i| [Param::Int(i % 500), Param::Text("x")]).collect();
        tx.batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)").unwrap();
        assert_eq!(tx.insert("t", &["id", "v"], "ON CONFLICT (id) DO NOTHING", &rows).unwrap(), 500);
        tx.commit().unwrap();
    }
}
