//! The metadata journal in PostgreSQL: the local journal's transactions as rows of one table,
//! in commit order, so that several airdock processes (replicas) share one history. Each
//! replica keeps the whole state in memory, as with the local journal, and catches up by
//! reading the rows after the last one it applied. See ARCHITECTURE.md, "Replicas".
//!
//! Commits of every replica are serialised by one transaction-scoped advisory lock: a
//! commit is `BEGIN`, the lock, the rows it has not applied yet, the check against the
//! state they give, `INSERT`, `COMMIT`; so the table's order is an order in which every
//! transaction was checked against all those before it, as the file journal's is.

use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage, Statement};

use super::Record;
use crate::StoreError;

/// Advisory-lock class of every lock airdock takes (`pg_advisory_*lock(class, key)`): "aird".
const LOCK_CLASS: i32 = 0x6169_7264;
/// Serialises commits of every replica; taken per transaction.
const JOURNAL_LOCK: i32 = 1;
/// Serialises schema migrations of replicas that start at once; taken per transaction.
const MIGRATE_LOCK: i32 = 2;
/// One GC at a time over all replicas; taken per session for a GC run.
pub(crate) const GC_LOCK: i32 = 3;

/// A query that takes longer is treated as a lost database: the connection is dropped (the
/// server then rolls back whatever it held) and the caller gets `Unavailable`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the journal lock: another replica's GC holds it across one sweep batch.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows read per query when catching up (a replica that starts reads the whole history).
const PAGE: usize = 10_000;

/// The schema, one entry per version (entry `i` makes version `i + 1`). Released entries are
/// never edited: a change is a new entry, applied by every airdock that starts on an older
/// database.
const MIGRATIONS: &[&str] = &[
    // 1: the journal and the secrets every replica shares (the token key).
    "CREATE TABLE airdock_txns (
         seq bigserial PRIMARY KEY,
         body jsonb NOT NULL,
         at timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE airdock_secrets (
         name text PRIMARY KEY,
         value text NOT NULL
     );",
];

const INSERT: &str = "INSERT INTO airdock_txns (body) VALUES ($1::text::jsonb) RETURNING seq";

/// Where the database is: a parsed `metadata.url`.
#[derive(Clone)]
pub(crate) struct Db {
    config: Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl Db {
    pub(crate) fn parse(url: &str) -> Result<Db, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::Unsupported(format!("metadata.url is not a PostgreSQL URL: {e}"))
        })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(StoreError::Unsupported(
                "metadata.url asks for TLS (sslmode=require), which airdock does not speak to \
                 PostgreSQL yet; use a trusted network or a local TLS tunnel"
                    .into(),
            ));
        }
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("airdock");
        }
        let shown = shown(&config);
        Ok(Db { config, shown })
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let (client, connection) =
            timed(&self.shown, QUERY_TIMEOUT, self.config.connect(NoTls)).await?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %shown, error = %e, "metadata database connection lost");
            }
        });
        let insert = timed(&self.shown, QUERY_TIMEOUT, client.prepare(INSERT)).await;
        // The table may not exist yet (before the first migration): prepared on first use.
        Ok(Conn {
            client,
            insert: insert.ok(),
        })
    }
}

/// `postgres://user@host:port/dbname`: never the password.
fn shown(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

fn unavailable(db: &str, e: impl Display) -> StoreError {
    StoreError::Unavailable(format!("metadata database {db}: {e}"))
}

/// `fut` within `limit`, its error or its lateness as `Unavailable`.
async fn timed<T, E: Display>(
    db: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(db, e)),
        Err(_) => Err(unavailable(
            db,
            format!("no answer within {} s", limit.as_secs()),
        )),
    }
}

/// One connection and the statement commits use on it.
pub(crate) struct Conn {
    client: Client,
    insert: Option<Statement>,
}

/// A connection made on first use and again after it broke (any error drops it: closing
/// the connection is also what makes the server roll back and release its locks).
pub(crate) struct Link {
    db: Db,
    conn: Option<Conn>,
    /// A transaction opened by [`Link::begin_locked`] is still open on `conn`.
    in_txn: bool,
    /// The session lock [`Link::try_lock`] took, until [`Link::unlock`].
    locked: Option<i32>,
}

impl Link {
    pub(crate) fn new(db: Db) -> Link {
        Link {
            db,
            conn: None,
            in_txn: false,
            locked: None,
        }
    }

    /// Whether this connection holds session lock `key`.
    pub(crate) fn holds(&self, key: i32) -> bool {
        self.locked == Some(key)
    }

    pub(crate) fn in_txn(&self) -> bool {
        self.in_txn
    }

    /// Close the connection: the server rolls back what it had open and releases its locks.
    pub(crate) fn disconnect(&mut self) {
        self.conn = None;
        self.in_txn = false;
        self.locked = None;
    }

    async fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.db.connect().await?);
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(unavailable(&self.db.shown, "not connected")),
        }
    }

    /// `r`, dropping the connection if it is an error: after a failed or late query the
    /// connection's state is unknown, and closing it makes the server roll back.
    fn kept<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.disconnect();
        }
        r
    }

    /// Create or bring the schema up to date. Under a transaction-scoped advisory lock, so
    /// replicas that start at once migrate one after the other (the later finds it done).
    pub(crate) async fn migrate(&mut self) -> Result<(), StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = migrate(c, &db).await;
        self.kept(r)
    }

    /// Every transaction after `after`, in order (one round trip when there are none).
    pub(crate) async fn after(&mut self, after: i64) -> Result<Vec<(i64, Record)>, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = fetch_after(&c.client, &db, after, "").await;
        self.kept(r)
    }

    /// `BEGIN`, the journal lock, and every transaction after `after`: from here until
    /// [`Link::append`] or [`Link::rollback`] no other replica commits.
    pub(crate) async fn begin_locked(
        &mut self,
        after: i64,
    ) -> Result<Vec<(i64, Record)>, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        // One round trip: the lock, then what committed before it was granted (each
        // statement of a read-committed transaction sees what committed before it began).
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {JOURNAL_LOCK});");
        let r = fetch_after(&c.client, &db, after, &lock).await;
        self.in_txn = r.is_ok();
        self.kept(r)
    }

    /// Insert `body` (a transaction's JSON) and commit: the transaction is durable when
    /// this returns. Its position in the journal is returned.
    pub(crate) async fn append(&mut self, body: String) -> Result<i64, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = async {
            let Some(insert) = &c.insert else {
                return Err(unavailable(&db, "the journal table is not prepared"));
            };
            let row = timed(&db, QUERY_TIMEOUT, c.client.query_one(insert, &[&body])).await?;
            timed(&db, QUERY_TIMEOUT, c.client.batch_execute("COMMIT")).await?;
            Ok(row.get::<_, i64>(0))
        }
        .await;
        // Committed, or (on an error) rolled back by the dropped connection; or, if the
        // connection broke during `COMMIT`, either: the caller reports the error, and the
        // next catch-up applies the row if it was committed after all.
        self.in_txn = false;
        self.kept(r)
    }

    /// Insert `bodies` in order into the empty journal table and commit, all in one
    /// transaction under the journal lock; refused if the table holds anything.
    pub(crate) async fn import(&mut self, bodies: Vec<String>) -> Result<(), StoreError> {
        let rows = self.begin_locked(0).await?;
        if !rows.is_empty() {
            self.rollback().await;
            return Err(StoreError::Unsupported(format!(
                "the metadata database {} already holds metadata ({} transactions or more); \
                 migrate into an empty database",
                self.db.shown,
                rows.len()
            )));
        }
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = async {
            let Some(insert) = &c.insert else {
                return Err(unavailable(&db, "the journal table is not prepared"));
            };
            for body in &bodies {
                timed(&db, QUERY_TIMEOUT, c.client.query_one(insert, &[body])).await?;
            }
            timed(&db, QUERY_TIMEOUT, c.client.batch_execute("COMMIT")).await
        }
        .await;
        self.in_txn = false;
        self.kept(r)
    }

    /// End the transaction [`Link::begin_locked`] opened without committing. If that fails
    /// the connection is dropped, which rolls back as surely.
    pub(crate) async fn rollback(&mut self) {
        if let Some(c) = &self.conn {
            let done = timed(
                &self.db.shown,
                QUERY_TIMEOUT,
                c.client.batch_execute("ROLLBACK"),
            )
            .await;
            if done.is_err() {
                self.conn = None;
            }
        }
        self.in_txn = false;
    }

    /// The value of secret `name`, set to `fresh` by whichever replica asks first.
    pub(crate) async fn secret(&mut self, name: &str, fresh: &str) -> Result<String, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = async {
            timed(
                &db,
                QUERY_TIMEOUT,
                c.client.execute(
                    "INSERT INTO airdock_secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &fresh],
                ),
            )
            .await?;
            let row = timed(
                &db,
                QUERY_TIMEOUT,
                c.client.query_one(
                    "SELECT value FROM airdock_secrets WHERE name = $1",
                    &[&name],
                ),
            )
            .await?;
            Ok(row.get::<_, String>(0))
        }
        .await;
        self.kept(r)
    }

    /// Take (`Ok(true)`) or find taken (`Ok(false)`) the session-scoped lock `key`; it is
    /// held until this connection ends.
    pub(crate) async fn try_lock(&mut self, key: i32) -> Result<bool, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(
            &db,
            QUERY_TIMEOUT,
            c.client
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key]),
        )
        .await
        .map(|row| row.get::<_, bool>(0));
        if r.as_ref().is_ok_and(|taken| *taken) {
            self.locked = Some(key);
        }
        self.kept(r)
    }

    /// Release session lock `key` (or drop the connection, which does).
    pub(crate) async fn unlock(&mut self, key: i32) {
        if let Some(c) = &self.conn {
            let done = timed(
                &self.db.shown,
                QUERY_TIMEOUT,
                c.client
                    .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &key]),
            )
            .await;
            if done.is_err() {
                self.disconnect();
            }
        }
        self.locked = None;
    }
}

async fn migrate(c: &mut Conn, db: &str) -> Result<(), StoreError> {
    let client = &c.client;
    timed(
        db,
        LOCK_TIMEOUT,
        client.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {MIGRATE_LOCK});
             CREATE TABLE IF NOT EXISTS airdock_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        )),
    )
    .await?;
    let row = timed(
        db,
        QUERY_TIMEOUT,
        client.query_one("SELECT coalesce(max(version), 0) FROM airdock_schema", &[]),
    )
    .await?;
    let have = usize::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    let known = MIGRATIONS.len();
    if have > known {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(StoreError::Unsupported(format!(
            "the metadata database {db} has schema version {have}, newer than this airdock \
             knows ({known}); run the newer airdock"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        timed(db, QUERY_TIMEOUT, client.batch_execute(sql)).await?;
        timed(
            db,
            QUERY_TIMEOUT,
            client.execute(
                "INSERT INTO airdock_schema (version) VALUES ($1)",
                &[&version],
            ),
        )
        .await?;
        tracing::info!(database = %db, version, "metadata schema migrated");
    }
    timed(db, QUERY_TIMEOUT, client.batch_execute("COMMIT")).await?;
    if c.insert.is_none() {
        c.insert = Some(timed(db, QUERY_TIMEOUT, client.prepare(INSERT)).await?);
    }
    Ok(())
}

/// `prefix` (statements to run first, in the same round trip), then up to [`PAGE`] rows
/// after `after` at a time until there are no more. Simple-query protocol: one round trip
/// per page and no statement to prepare; `after` is a number, so formatting it in is safe.
async fn fetch_after(
    client: &Client,
    db: &str,
    mut after: i64,
    prefix: &str,
) -> Result<Vec<(i64, Record)>, StoreError> {
    let mut out = Vec::new();
    let mut prefix = prefix;
    loop {
        let sql = format!(
            "{prefix} SELECT seq, body::text FROM airdock_txns WHERE seq > {after} ORDER BY seq LIMIT {PAGE}"
        );
        let timeout = if prefix.is_empty() {
            QUERY_TIMEOUT
        } else {
            LOCK_TIMEOUT
        };
        let messages = timed(db, timeout, client.simple_query(&sql)).await?;
        prefix = "";
        let mut n = 0;
        for m in messages {
            let SimpleQueryMessage::Row(row) = m else {
                continue;
            };
            // Rows of the lock's SELECT have one column; the journal's have two.
            if row.len() != 2 {
                continue;
            }
            n += 1;
            let seq: i64 = row.get(0).and_then(|s| s.parse().ok()).ok_or_else(|| {
                StoreError::Corrupt(format!("{db}: a journal row without a position"))
            })?;
            let body = row.get(1).unwrap_or_default();
            let record: Record = serde_json::from_str(body).map_err(|e| {
                StoreError::Corrupt(format!(
                    "{db}: journal row {seq} is not an airdock transaction: {e}"
                ))
            })?;
            out.push((seq, record));
            after = seq;
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}
