//! The metadata journal in PostgreSQL: the local journal's transactions as rows of one table,
//! in commit order, so that several airdock processes (replicas) share one history. Each
//! replica keeps the whole state in memory, as with the local journal, and catches up by
//! reading the rows after the last one it applied. See ARCHITECTURE.md, "Replicas".
//!
//! Commits of every replica are serialised by one transaction-scoped advisory lock: a
//! commit is `BEGIN`, the lock, the rows it has not applied yet, the check against the
//! state they give, `INSERT`, `COMMIT`; so the table's order is an order in which every
//! transaction was checked against all those before it, as the file journal's is.

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage, Statement};

use super::Record;
use crate::{Digest, StoreError};

/// Advisory-lock class of every lock airdock takes (`pg_advisory_*lock(class, key)`): "aird".
const LOCK_CLASS: i32 = 0x6169_7264;
/// Serialises commits of every replica; taken per transaction.
const JOURNAL_LOCK: i32 = 1;
/// Serialises schema migrations of replicas that start at once; taken per transaction.
const MIGRATE_LOCK: i32 = 2;
/// One GC at a time over all replicas; taken per session for a GC run.
pub(crate) const GC_LOCK: i32 = 3;
/// One snapshot writer at a time over all replicas; tried per transaction (a replica that
/// finds it taken leaves the work to the holder).
const COMPACT_LOCK: i32 = 4;
/// The gate between shared marks and GC's sweep: a replica publishing pins or touches holds
/// it shared for that one statement; GC holds it exclusively while it reads the marks of a
/// batch and deletes that batch (see `pins.rs`).
const MARK_GATE: i32 = 5;

/// How long a published pin protects a blob without being renewed: its holder renews every
/// pin it still holds well within this, so only the pins of a process that died lapse.
pub(crate) const PIN_LEASE: Duration = Duration::from_secs(60);

/// A query that takes longer is treated as a lost database: the connection is dropped (the
/// server then rolls back whatever it held) and the caller gets `Unavailable`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the journal lock: another replica's GC holds it across one sweep batch.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows read per query when catching up (a replica that starts reads the whole tail).
const PAGE: usize = 10_000;
/// Snapshot parts inserted per statement (each part is at most `meta::SNAPSHOT_CHUNK` ops).
const PARTS_PER_INSERT: usize = 32;

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
    // 2: compaction. A snapshot is the state after every journal row up to `seq`, in the
    // local journal's compacted form split into parts (`State::records`); `pruned` is the
    // journal's floor: rows at or below it may be gone, every row above it is there.
    "CREATE TABLE airdock_snapshots (
         seq bigint NOT NULL,
         part integer NOT NULL,
         body jsonb NOT NULL,
         at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (seq, part)
     );
     CREATE TABLE airdock_floor (
         only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         pruned bigint NOT NULL
     );
     INSERT INTO airdock_floor (pruned) VALUES (0);",
    // 3: what each replica's writers rely on, for the GC of any replica: a pin (`holder`
    // the pinning process, `until` its lease end) or the last use (`holder` empty).
    "CREATE TABLE airdock_marks (
         digest text NOT NULL,
         holder text NOT NULL,
         since timestamptz NOT NULL,
         until timestamptz NOT NULL,
         PRIMARY KEY (digest, holder)
     );
     CREATE INDEX airdock_marks_until ON airdock_marks (until);",
];

/// The position of the newest snapshot (0: none).
const NEWEST_SNAPSHOT: &str = "SELECT coalesce(max(seq), 0) FROM airdock_snapshots";

const INSERT: &str = "INSERT INTO airdock_txns (body) VALUES ($1::text::jsonb) RETURNING seq";

/// Where the database is: a parsed `metadata.url`.
#[derive(Clone)]
pub(crate) struct Db {
    config: Config,
    /// `None`: plaintext (see `pgtls::Mode`).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL without its password, for messages.
    shown: String,
}

impl Db {
    pub(crate) fn parse(url: &str) -> Result<Db, StoreError> {
        let (rest, mode, root) = super::pgtls::take_params(url)
            .map_err(|e| StoreError::Unsupported(format!("metadata.url: {e}")))?;
        let mut config = Config::from_str(&rest).map_err(|e| {
            StoreError::Unsupported(format!("metadata.url is not a PostgreSQL URL: {e}"))
        })?;
        let tls = super::pgtls::connector(mode, root.as_deref())
            .map_err(|e| StoreError::Unsupported(format!("metadata.url: {e}")))?;
        config.ssl_mode(if tls.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("airdock");
        }
        let shown = shown(&config);
        Ok(Db { config, tls, shown })
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let client = match &self.tls {
            None => {
                let (client, connection) =
                    timed(&self.shown, QUERY_TIMEOUT, self.config.connect(NoTls)).await?;
                self.drive(connection);
                client
            }
            Some(tls) => {
                let (client, connection) =
                    timed(&self.shown, QUERY_TIMEOUT, self.config.connect(tls.clone())).await?;
                self.drive(connection);
                client
            }
        };
        let insert = timed(&self.shown, QUERY_TIMEOUT, client.prepare(INSERT)).await;
        // The table may not exist yet (before the first migration): prepared on first use.
        Ok(Conn {
            client,
            insert: insert.ok(),
        })
    }
}

impl Db {
    /// Run a connection's I/O (a task per connection; it ends when the client is dropped).
    fn drive(
        &self,
        connection: impl Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    ) {
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %shown, error = %e, "metadata database connection lost");
            }
        });
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
async fn timed<T, E: std::error::Error>(
    db: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        // With its causes: "error performing TLS handshake" alone does not say what to fix.
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                msg = format!("{msg}: {c}");
                cause = c.source();
            }
            Err(unavailable(db, msg))
        }
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

    /// Every transaction after `after`, in order (one round trip when there are none), or
    /// `Behind` if some of them were pruned: then only [`Link::load`] catches up.
    pub(crate) async fn after(&mut self, after: i64) -> Result<Tail, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = fetch_after(&c.client, &db, after, "").await;
        self.kept(r)
    }

    /// `BEGIN`, the journal lock, and every transaction after `after`: from here until
    /// [`Link::append`] or [`Link::rollback`] no other replica commits. `Behind` (rows after
    /// `after` were pruned) ends the transaction again: reload, then begin anew.
    pub(crate) async fn begin_locked(&mut self, after: i64) -> Result<Tail, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        // One round trip: the lock, then what committed before it was granted (each
        // statement of a read-committed transaction sees what committed before it began).
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {JOURNAL_LOCK});");
        let r = fetch_after(&c.client, &db, after, &lock).await;
        self.in_txn = r.is_ok();
        let r = self.kept(r);
        if matches!(r, Ok(Tail::Behind)) {
            self.rollback().await;
        }
        r
    }

    /// The whole state: the newest snapshot, each of its parts handed to `part` as it
    /// arrives (never all at once), and the journal rows after it. Returns the snapshot's
    /// position (0: none yet) and those rows. One repeatable-read transaction, so snapshot,
    /// floor and rows are of one instant whatever compaction runs meanwhile.
    pub(crate) async fn load(
        &mut self,
        part: impl FnMut(Record),
    ) -> Result<(i64, Vec<(i64, Record)>), StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = load(&c.client, &db, part).await;
        self.kept(r)
    }

    /// The position of the newest snapshot (0: none).
    pub(crate) async fn newest_snapshot(&mut self) -> Result<i64, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(&db, QUERY_TIMEOUT, c.client.query_one(NEWEST_SNAPSHOT, &[]))
            .await
            .map(|row| row.get::<_, i64>(0));
        self.kept(r)
    }

    /// Store `parts` (the state after every row up to `seq`, `State::records`) as the newest
    /// snapshot, drop older snapshots, and prune the journal rows it covers that are older
    /// than `keep` (a replica behind by less than that still catches up row by row; one
    /// further behind reloads). One transaction: a reader sees the old snapshot and floor or
    /// the new ones, never a mix. `Busy` if another replica is compacting.
    pub(crate) async fn compact(
        &mut self,
        seq: i64,
        parts: Vec<String>,
        keep: Duration,
    ) -> Result<Compacted, StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = compact(&c.client, &db, seq, parts, keep).await;
        let r = self.kept(r);
        if matches!(r, Ok(Compacted::Busy | Compacted::Newer(_))) {
            self.rollback().await;
        }
        r
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
        let held = match self.begin_locked(0).await? {
            Tail::Rows(rows) => rows.len(),
            // Rows were pruned: compacted into a snapshot, so not empty either.
            Tail::Behind => 1,
        };
        if held > 0 {
            self.rollback().await;
            return Err(StoreError::Unsupported(format!(
                "the metadata database {} already holds metadata ({held} transactions or more); \
                 migrate into an empty database",
                self.db.shown,
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

/// `digests` as a SQL array literal, each once. Safe to format in: a `Digest` is only ever
/// made by validating it (`algorithm:hex`, no quote can occur). Once: an upsert naming one
/// row twice fails whole ("ON CONFLICT DO UPDATE command cannot affect row a second time"),
/// and `SELECT DISTINCT` over rows with `clock_timestamp()` does not merge them (the
/// timestamps differ); a digest both used and released in one batch did exactly that.
fn text_array<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> String {
    let items: std::collections::BTreeSet<String> =
        digests.into_iter().map(|d| format!("'{d}'")).collect();
    let items: Vec<String> = items.into_iter().collect();
    format!("ARRAY[{}]::text[]", items.join(","))
}

/// The marks one publication writes: see [`Link::publish_marks`].
#[derive(Default)]
pub(crate) struct MarkBatch {
    /// Used now.
    pub touched: Vec<Digest>,
    /// Pinned by this process: lease (re)started.
    pub held: Vec<Digest>,
    /// No longer pinned by this process: its pin goes, a use at this moment stays.
    pub released: Vec<Digest>,
}

impl MarkBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.held.is_empty() && self.released.is_empty()
    }
}

impl Link {
    /// Write `batch` for `holder` (this process's random id) in one transaction, one round
    /// trip, holding the mark gate shared: so it lands either before a GC batch reads the
    /// marks or after that batch's deletes (see `pins.rs` for why that matters).
    pub(crate) async fn publish_marks(
        &mut self,
        holder: &str,
        batch: &MarkBatch,
    ) -> Result<(), StoreError> {
        let lease = PIN_LEASE.as_secs();
        let mut sql = format!("SELECT pg_advisory_xact_lock_shared({LOCK_CLASS}, {MARK_GATE});");
        let used: Vec<&Digest> = batch.touched.iter().chain(&batch.released).collect();
        if !used.is_empty() {
            sql.push_str(&format!(
                "INSERT INTO airdock_marks (digest, holder, since, until) \
                 SELECT DISTINCT d, '', clock_timestamp(), clock_timestamp() FROM unnest({}) d \
                 ON CONFLICT (digest, holder) DO UPDATE \
                 SET until = greatest(airdock_marks.until, excluded.until);",
                text_array(used)
            ));
        }
        if !batch.released.is_empty() {
            sql.push_str(&format!(
                "DELETE FROM airdock_marks WHERE holder = '{holder}' AND digest = ANY({});",
                text_array(&batch.released)
            ));
        }
        if !batch.held.is_empty() {
            // `since` stays that of the first publication: the leftover sweep spares what
            // was begun after it.
            sql.push_str(&format!(
                "INSERT INTO airdock_marks (digest, holder, since, until) \
                 SELECT DISTINCT d, '{holder}', clock_timestamp(), \
                 clock_timestamp() + interval '{lease} seconds' FROM unnest({}) d \
                 ON CONFLICT (digest, holder) DO UPDATE SET until = excluded.until;",
                text_array(&batch.held)
            ));
        }
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        // One simple query of several statements is one implicit transaction.
        let r = timed(&db, LOCK_TIMEOUT, c.client.simple_query(&sql))
            .await
            .map(|_| ());
        self.kept(r)
    }

    /// Close the mark gate (wait for publications in flight, keep new ones waiting) until
    /// [`Link::open_gate`]. A session lock on this connection: if it breaks, the server
    /// releases it.
    pub(crate) async fn close_gate(&mut self) -> Result<(), StoreError> {
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(
            &db,
            LOCK_TIMEOUT,
            c.client.simple_query(&format!(
                "SELECT pg_advisory_lock({LOCK_CLASS}, {MARK_GATE})"
            )),
        )
        .await
        .map(|_| ());
        self.kept(r)
    }

    pub(crate) async fn open_gate(&mut self) {
        if let Some(c) = &self.conn {
            let done = timed(
                &self.db.shown,
                QUERY_TIMEOUT,
                c.client.simple_query(&format!(
                    "SELECT pg_advisory_unlock({LOCK_CLASS}, {MARK_GATE})"
                )),
            )
            .await;
            if done.is_err() {
                self.disconnect();
            }
        }
    }

    /// The digests (of `among`, or all) some replica pins, or used less than `grace` ago by
    /// the database's clock.
    pub(crate) async fn marked(
        &mut self,
        grace: Duration,
        among: Option<&[Digest]>,
    ) -> Result<HashSet<Digest>, StoreError> {
        let ms = grace.as_millis().min(i64::MAX as u128);
        let filter = among.map_or(String::new(), |ds| {
            format!(" AND digest = ANY({})", text_array(ds))
        });
        let sql = format!(
            "SELECT DISTINCT digest FROM airdock_marks \
             WHERE until > clock_timestamp() - interval '{ms} milliseconds'{filter}"
        );
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(&db, QUERY_TIMEOUT, c.client.simple_query(&sql))
            .await
            .map(|messages| {
                messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(row) => row.get(0),
                        _ => None,
                    })
                    .filter_map(|s| Digest::parse(s).ok())
                    .collect()
            });
        self.kept(r)
    }

    /// Drop the last-use marks of deleted blobs (no pin can be among them: GC deletes
    /// nothing pinned), and lapsed pins and uses older than `stale`.
    pub(crate) async fn forget_marks(
        &mut self,
        deleted: &[Digest],
        stale: Duration,
    ) -> Result<(), StoreError> {
        let secs = stale.as_secs();
        let mut sql = format!(
            "DELETE FROM airdock_marks WHERE until < clock_timestamp() - interval '{secs} seconds';"
        );
        if !deleted.is_empty() {
            sql.push_str(&format!(
                "DELETE FROM airdock_marks WHERE holder = '' AND digest = ANY({});",
                text_array(deleted)
            ));
        }
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(&db, QUERY_TIMEOUT, c.client.simple_query(&sql))
            .await
            .map(|_| ());
        self.kept(r)
    }

    /// When the oldest pin any replica holds now was first published: whatever a writer
    /// began while holding it is younger.
    pub(crate) async fn oldest_pin(&mut self) -> Result<Option<SystemTime>, StoreError> {
        let sql = "SELECT extract(epoch FROM min(since))::float8 FROM airdock_marks \
                   WHERE holder <> '' AND until > clock_timestamp()";
        let db = self.db.shown.clone();
        let c = self.conn().await?;
        let r = timed(&db, QUERY_TIMEOUT, c.client.query_one(sql, &[]))
            .await
            .map(|row| {
                row.get::<_, Option<f64>>(0)
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s))
            });
        self.kept(r)
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

/// What a catch-up read found.
pub(crate) enum Tail {
    /// Every row after the position asked for, in order.
    Rows(Vec<(i64, Record)>),
    /// Rows after the position asked for were pruned (the floor is above it): applying the
    /// rows that are left would skip some, so the reader must reload from the snapshot.
    Behind,
}

/// What [`Link::compact`] did.
pub(crate) enum Compacted {
    /// The snapshot is written; the journal's floor is now the position given.
    Done { pruned: i64 },
    /// A snapshot at or past the position exists already (at the position given).
    Newer(i64),
    /// Another replica holds the compaction lock.
    Busy,
}

/// `prefix` (statements to run first, in the same round trip), then up to [`PAGE`] rows
/// after `after` at a time until there are no more. Simple-query protocol: one round trip
/// per page and no statement to prepare; `after` is a number, so formatting it in is safe.
///
/// Each page is one statement that also reads the floor (`airdock_floor.pruned`), so rows
/// and floor are of one instant: if the floor is above `after`, rows may be missing right
/// after it and `Behind` is returned instead of rows with a hole. Rows above the floor are
/// never deleted, so a page read with `floor <= after` has every row there is.
async fn fetch_after(
    client: &Client,
    db: &str,
    mut after: i64,
    prefix: &str,
) -> Result<Tail, StoreError> {
    let mut out = Vec::new();
    let mut prefix = prefix;
    loop {
        let sql = format!(
            "{prefix} SELECT 0::bigint, pruned, NULL::text FROM airdock_floor \
             UNION ALL \
             (SELECT 1, seq, body::text FROM airdock_txns WHERE seq > {after} ORDER BY seq LIMIT {PAGE}) \
             ORDER BY 1, 2"
        );
        let timeout = if prefix.is_empty() {
            QUERY_TIMEOUT
        } else {
            LOCK_TIMEOUT
        };
        let messages = timed(db, timeout, client.simple_query(&sql)).await?;
        prefix = "";
        let mut n = 0;
        let mut floor = None;
        for m in messages {
            let SimpleQueryMessage::Row(row) = m else {
                continue;
            };
            // Rows of the lock's SELECT have one column; floor and journal rows three.
            if row.len() != 3 {
                continue;
            }
            let pos: i64 = row.get(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
                StoreError::Corrupt(format!("{db}: a journal row without a position"))
            })?;
            if row.get(0) == Some("0") {
                floor = Some(pos);
                continue;
            }
            if floor.is_none_or(|f| f > after) {
                return Ok(Tail::Behind);
            }
            n += 1;
            let body = row.get(2).unwrap_or_default();
            out.push((pos, parse_row(db, pos, body)?));
            after = pos;
        }
        if floor.is_none_or(|f| f > after) {
            return Ok(Tail::Behind);
        }
        if n < PAGE {
            return Ok(Tail::Rows(out));
        }
    }
}

fn parse_row(db: &str, seq: i64, body: &str) -> Result<Record, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Corrupt(format!(
            "{db}: journal row {seq} is not an airdock transaction: {e}"
        ))
    })
}

/// See [`Link::load`].
async fn load(
    client: &Client,
    db: &str,
    mut part: impl FnMut(Record),
) -> Result<(i64, Vec<(i64, Record)>), StoreError> {
    timed(
        db,
        QUERY_TIMEOUT,
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
    )
    .await?;
    let row = timed(db, QUERY_TIMEOUT, client.query_one(NEWEST_SNAPSHOT, &[])).await?;
    let seq: i64 = row.get(0);
    if seq > 0 {
        // Streamed: the parts are applied as they arrive, never all held at once.
        let rows = timed(
            db,
            QUERY_TIMEOUT,
            client.query_raw(
                "SELECT part, body::text FROM airdock_snapshots WHERE seq = $1 ORDER BY part",
                [seq],
            ),
        )
        .await?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) =
            timed(db, QUERY_TIMEOUT, async { rows.as_mut().try_next().await }).await?
        {
            let n: i32 = row.get(0);
            let body: &str = row.get(1);
            part(serde_json::from_str(body).map_err(|e| {
                StoreError::Corrupt(format!(
                    "{db}: snapshot {seq} part {n} is not airdock's: {e}"
                ))
            })?);
        }
    }
    let tail = match fetch_after(client, db, seq, "").await? {
        Tail::Rows(rows) => rows,
        Tail::Behind => {
            return Err(StoreError::Corrupt(format!(
                "{db}: the journal is pruned past its newest snapshot ({seq}); rows are missing"
            )))
        }
    };
    timed(db, QUERY_TIMEOUT, client.batch_execute("COMMIT")).await?;
    Ok((seq, tail))
}

/// See [`Link::compact`].
async fn compact(
    client: &Client,
    db: &str,
    seq: i64,
    parts: Vec<String>,
    keep: Duration,
) -> Result<Compacted, StoreError> {
    let row = timed(db, QUERY_TIMEOUT, async {
        client.batch_execute("BEGIN").await?;
        client
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, $2), \
                 (SELECT coalesce(max(seq), 0) FROM airdock_snapshots)",
                &[&LOCK_CLASS, &COMPACT_LOCK],
            )
            .await
    })
    .await?;
    if !row.get::<_, bool>(0) {
        return Ok(Compacted::Busy);
    }
    let newest: i64 = row.get(1);
    if newest >= seq {
        return Ok(Compacted::Newer(newest));
    }
    let insert = timed(
        db,
        QUERY_TIMEOUT,
        client.prepare(
            "INSERT INTO airdock_snapshots (seq, part, body) \
             SELECT $1, p, b::jsonb FROM unnest($2::int4[], $3::text[]) AS u(p, b)",
        ),
    )
    .await?;
    let mut next = 0i32;
    for batch in parts.chunks(PARTS_PER_INSERT) {
        let numbers: Vec<i32> = (next..).take(batch.len()).collect();
        next = next.saturating_add(i32::try_from(batch.len()).unwrap_or(i32::MAX));
        timed(
            db,
            QUERY_TIMEOUT,
            client.execute(&insert, &[&seq, &numbers, &batch]),
        )
        .await?;
    }
    // Prune under the journal lock: no commit is in flight, so every row up to the newest
    // is visible and the rows deleted are exactly those at or below the new floor.
    let keep_secs = keep.as_secs_f64();
    let pruned = timed(db, LOCK_TIMEOUT, async {
        client
            .execute("DELETE FROM airdock_snapshots WHERE seq < $1", &[&seq])
            .await?;
        client
            .execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &JOURNAL_LOCK],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM airdock_txns \
                 WHERE seq <= $1 AND at < now() - make_interval(secs => $2)",
                &[&seq, &keep_secs],
            )
            .await?;
        let to: i64 = row.get(0);
        client
            .execute("DELETE FROM airdock_txns WHERE seq <= $1", &[&to])
            .await?;
        let row = client
            .query_one(
                "UPDATE airdock_floor SET pruned = greatest(pruned, $1) RETURNING pruned",
                &[&to],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        Ok::<i64, tokio_postgres::Error>(row.get(0))
    })
    .await?;
    Ok(Compacted::Done { pruned })
}
