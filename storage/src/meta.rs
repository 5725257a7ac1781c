//! Repository metadata: which blobs and manifests each repository holds, its tags and the
//! referrers index. Kept in memory for speed, made durable by an append-only journal in
//! which each line is one atomic transaction: a file in the data dir, or (`metadata.url`)
//! a table in PostgreSQL that several airdock processes share (`pg`).

mod pg;
mod pgtls;
use pg::Tail;
pub(crate) use pg::{Compacted, Db, MarkBatch, PIN_LEASE};
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::imports::ImportRecord;
use crate::{layout, Algorithm, Digest, ManifestRecord, RepoName, StoreError, Tag};

/// One change to repository metadata. Every op sets or clears one key, so replaying a
/// journal on top of a state that already contains it changes nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    Link {
        repo: RepoName,
        digest: Digest,
        /// The blob's size as the backend reported it at commit, for the usage sums
        /// (`usage::Tally`). Journals written before it have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    Unlink {
        repo: RepoName,
        digest: Digest,
    },
    Manifest {
        repo: RepoName,
        record: ManifestRecord,
    },
    Unmanifest {
        repo: RepoName,
        digest: Digest,
    },
    Tag {
        repo: RepoName,
        tag: Tag,
        digest: Digest,
        /// When the tag was set (seconds since the epoch), for retention's "newest N".
        /// Journals written before it existed have none; such tags count as oldest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    Untag {
        repo: RepoName,
        tag: Tag,
    },
    /// What one import brought; keyed by its id, so replaying it again changes nothing.
    Import {
        record: ImportRecord,
    },
    Unimport {
        id: String,
    },
}

/// A set of metadata changes that become visible together, or not at all.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub(crate) ops: Vec<Op>,
    pub(crate) check_refs: bool,
}

impl Txn {
    /// The blobs this transaction needs stored (what it links, and every manifest's own
    /// bytes), each once: the store asks its backend about these before the check.
    pub(crate) fn needs_stored(&self) -> Vec<Digest> {
        let mut seen = HashSet::new();
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Link { digest, .. } => Some(digest),
                Op::Manifest { record, .. } => Some(&record.digest),
                _ => None,
            })
            .filter(|d| seen.insert(*d))
            .cloned()
            .collect()
    }

    /// A transaction whose manifests must have every reference present (the default).
    pub fn new() -> Txn {
        Txn {
            ops: Vec::new(),
            check_refs: true,
        }
    }

    /// Accept manifests whose layers or children were deliberately left out.
    pub fn sparse(mut self) -> Txn {
        self.check_refs = false;
        self
    }

    pub fn link_blob(&mut self, repo: RepoName, digest: Digest) -> &mut Txn {
        self.ops.push(Op::Link {
            repo,
            digest,
            size: None,
        });
        self
    }

    /// Give each link the size the backend reported for it (`sizes`, asked at commit).
    pub(crate) fn set_link_sizes(&mut self, sizes: &HashMap<Digest, u64>) {
        for op in &mut self.ops {
            if let Op::Link { digest, size, .. } = op {
                if size.is_none() {
                    *size = sizes.get(digest).copied();
                }
            }
        }
    }

    pub fn put_manifest(&mut self, repo: RepoName, record: ManifestRecord) -> &mut Txn {
        self.ops.push(Op::Manifest { repo, record });
        self
    }

    pub fn tag(&mut self, repo: RepoName, tag: Tag, digest: Digest) -> &mut Txn {
        self.ops.push(Op::Tag {
            repo,
            tag,
            digest,
            at: Some(crate::imports::unix_now()),
        });
        self
    }

    /// Record what this transaction's import brought (see `ImportRecord`).
    pub fn record_import(&mut self, record: ImportRecord) -> &mut Txn {
        self.ops.push(Op::Import { record });
        self
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[derive(Default)]
pub(crate) struct Repo {
    pub blobs: HashSet<Digest>,
    pub manifests: HashMap<Digest, Arc<ManifestRecord>>,
    pub tags: BTreeMap<Tag, Tagged>,
    /// subject digest → manifests in this repository whose `subject` is it
    pub referrers: HashMap<Digest, BTreeSet<Digest>>,
}

/// What a tag names, and when it was set (seconds since the epoch; 0 where the journal
/// does not say, see `Op::Tag::at`), in one map entry: a registry may hold many tags.
pub(crate) struct Tagged {
    pub digest: Digest,
    pub at: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub repos: BTreeMap<RepoName, Repo>,
    /// import id → (journal order, what that import brought). The order breaks ties of
    /// `time`, which has a resolution of one second.
    pub imports: BTreeMap<String, (u64, ImportRecord)>,
    next_import: u64,
    /// PostgreSQL: the position of the last journal row applied (0 with a file journal).
    /// Rows are applied in order and only past it, so a row read twice (by a commit and a
    /// catch-up at once) is applied once.
    applied: i64,
    /// Usage sums per repository and in all, kept current op by op.
    pub usage: crate::usage::Tally,
    /// Manifests whose config carries the indexed label, per repository.
    pub labelled: crate::labelled::LabelIndex,
}

impl Repo {
    fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty() && self.tags.is_empty()
    }

    /// What the tags of this repository name, leaving out the tags in `dropped`.
    pub fn tagged_except(&self, dropped: &HashSet<&Tag>) -> Vec<&Digest> {
        self.tags
            .iter()
            .filter(|(t, _)| !dropped.contains(t))
            .map(|(_, e)| &e.digest)
            .collect()
    }

    /// The manifests of this repository that `roots` keep: the roots themselves and,
    /// transitively, their children and their referrers. Roots not stored are skipped.
    pub fn reachable<'a>(&'a self, mut queue: Vec<&'a Digest>) -> HashSet<&'a Digest> {
        let mut kept = HashSet::new();
        while let Some(d) = queue.pop() {
            let Some((key, m)) = self.manifests.get_key_value(d) else {
                continue;
            };
            if !kept.insert(key) {
                continue;
            }
            queue.extend(m.manifests.iter().map(|c| &c.digest));
            if let Some(refs) = self.referrers.get(d) {
                queue.extend(refs.iter());
            }
        }
        kept
    }
}

impl State {
    pub(crate) fn apply(&mut self, op: Op) {
        // Only removals can empty a repository; an empty one leaves `_catalog` at once.
        let emptied = match &op {
            Op::Unlink { repo, .. } | Op::Unmanifest { repo, .. } | Op::Untag { repo, .. } => {
                Some(repo.clone())
            }
            _ => None,
        };
        // What is derived from the metadata follows each op here, the one place every
        // change (a commit, a replayed journal line) passes through.
        self.usage.note(&self.repos, &op);
        self.labelled.note(&op);
        self.apply_op(op);
        if let Some(repo) = emptied {
            if self.repos.get(&repo).is_some_and(Repo::is_empty) {
                self.repos.remove(&repo);
            }
        }
    }

    fn apply_op(&mut self, op: Op) {
        match op {
            Op::Link { repo, digest, .. } => {
                self.repos.entry(repo).or_default().blobs.insert(digest);
            }
            Op::Unlink { repo, digest } => {
                if let Some(r) = self.repos.get_mut(&repo) {
                    r.blobs.remove(&digest);
                }
            }
            Op::Manifest { repo, mut record } => {
                // Kept for as long as the manifest is stored: no spare capacity.
                record.blobs.shrink_to_fit();
                record.manifests.shrink_to_fit();
                let r = self.repos.entry(repo).or_default();
                if let Some(subject) = &record.subject {
                    r.referrers
                        .entry(subject.clone())
                        .or_default()
                        .insert(record.digest.clone());
                }
                r.manifests.insert(record.digest.clone(), Arc::new(record));
            }
            Op::Unmanifest { repo, digest } => {
                if let Some(r) = self.repos.get_mut(&repo) {
                    if let Some(rec) = r.manifests.remove(&digest) {
                        if let Some(subject) = &rec.subject {
                            if let Some(set) = r.referrers.get_mut(subject) {
                                set.remove(&digest);
                                if set.is_empty() {
                                    r.referrers.remove(subject);
                                }
                            }
                        }
                    }
                    // A tag never outlives its manifest.
                    r.tags.retain(|_, t| t.digest != digest);
                }
            }
            Op::Tag {
                repo,
                tag,
                digest,
                at,
            } => {
                let r = self.repos.entry(repo).or_default();
                let at = at.unwrap_or(0);
                r.tags.insert(tag, Tagged { digest, at });
            }
            Op::Untag { repo, tag } => {
                if let Some(r) = self.repos.get_mut(&repo) {
                    r.tags.remove(&tag);
                }
            }
            Op::Import { record } => {
                // A replayed record keeps its first position.
                if !self.imports.contains_key(&record.id) {
                    self.next_import += 1;
                    self.imports
                        .insert(record.id.clone(), (self.next_import, record));
                }
            }
            Op::Unimport { id } => {
                self.imports.remove(&id);
            }
        }
    }

    /// The shortest list of transactions that rebuilds this state: per repository its links,
    /// manifests and tags, then every import record in its original order; each list cut
    /// into records of at most [`SNAPSHOT_CHUNK`] ops, so that no line or row grows with the
    /// registry (a repository of 100,000 tags is a hundred records, not one). What compaction
    /// writes (a file journal's lines, a PostgreSQL snapshot's parts) and what
    /// `migrate-metadata` inserts. `emit` gets each record as it is made.
    fn for_each_record<E>(&self, mut emit: impl FnMut(Record) -> Result<(), E>) -> Result<(), E> {
        fn push<E>(
            op: Op,
            ops: &mut Vec<Op>,
            emit: &mut impl FnMut(Record) -> Result<(), E>,
        ) -> Result<(), E> {
            ops.push(op);
            if ops.len() < SNAPSHOT_CHUNK {
                return Ok(());
            }
            emit(Record {
                ops: std::mem::take(ops),
            })
        }
        let mut ops = Vec::new();
        for (name, repo) in &self.repos {
            for d in &repo.blobs {
                let op = Op::Link {
                    repo: name.clone(),
                    digest: d.clone(),
                    size: self.usage.size_of(d),
                };
                push(op, &mut ops, &mut emit)?;
            }
            for rec in repo.manifests.values() {
                let op = Op::Manifest {
                    repo: name.clone(),
                    record: (**rec).clone(),
                };
                push(op, &mut ops, &mut emit)?;
            }
            for (t, e) in &repo.tags {
                let op = Op::Tag {
                    repo: name.clone(),
                    tag: t.clone(),
                    digest: e.digest.clone(),
                    at: (e.at != 0).then_some(e.at),
                };
                push(op, &mut ops, &mut emit)?;
            }
            // A repository's last record ends with it (records of two repositories are
            // never mixed, as before chunking).
            if !ops.is_empty() {
                emit(Record {
                    ops: std::mem::take(&mut ops),
                })?;
            }
        }
        let mut records: Vec<&(u64, ImportRecord)> = self.imports.values().collect();
        records.sort_by_key(|(seq, _)| *seq);
        for chunk in records.chunks(SNAPSHOT_CHUNK) {
            let ops = chunk
                .iter()
                .map(|(_, r)| Op::Import { record: r.clone() })
                .collect();
            emit(Record { ops })?;
        }
        Ok(())
    }

    /// [`State::for_each_record`] as the JSON of their journal lines (and table rows).
    pub(crate) fn record_bodies(&self) -> serde_json::Result<Vec<String>> {
        let mut out = Vec::new();
        self.for_each_record(|r| {
            out.push(serde_json::to_string(&r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// What a reload must not lose of `old`: facts learnt from blobs rather than from the
    /// journal (sizes asked of the backend, labels read from configs), which a snapshot
    /// written by another replica may lack. Both are properties of a digest's content, so
    /// they hold in any state that has the digest.
    fn keep_learnt(&mut self, old: &State) {
        for d in self.usage.unsized_digests() {
            if let Some(n) = old.usage.size_of(&d) {
                self.usage.learn(&d, n);
            }
        }
        let State {
            repos, labelled, ..
        } = self;
        labelled.add_found(repos, old.labelled.pairs());
    }

    /// Check that `txn` leaves no dangling reference, given what `blob_exists` says is stored.
    fn check(&self, txn: &Txn, blob_exists: impl Fn(&Digest) -> bool) -> Result<(), StoreError> {
        // What earlier ops of this transaction add, per repository.
        let mut linked: HashSet<(&RepoName, &Digest)> = HashSet::new();
        let mut manifests: HashSet<(&RepoName, &Digest)> = HashSet::new();
        let repo_has_blob = |linked: &HashSet<(&RepoName, &Digest)>, r: &RepoName, d: &Digest| {
            linked.contains(&(r, d)) || self.repos.get(r).is_some_and(|x| x.blobs.contains(d))
        };
        let repo_has_manifest =
            |manifests: &HashSet<(&RepoName, &Digest)>, r: &RepoName, d: &Digest| {
                manifests.contains(&(r, d))
                    || self
                        .repos
                        .get(r)
                        .is_some_and(|x| x.manifests.contains_key(d))
            };
        for op in &txn.ops {
            match op {
                Op::Link { repo, digest, .. } => {
                    if !blob_exists(digest) {
                        return Err(StoreError::BlobUnknown(digest.clone()));
                    }
                    linked.insert((repo, digest));
                }
                Op::Manifest { repo, record } => {
                    if !blob_exists(&record.digest) {
                        return Err(StoreError::ManifestUnknown(record.digest.to_string()));
                    }
                    if txn.check_refs {
                        for b in &record.blobs {
                            if !b.is_non_distributable() && !repo_has_blob(&linked, repo, &b.digest)
                            {
                                return Err(StoreError::ManifestBlobUnknown(b.digest.clone()));
                            }
                        }
                        for m in &record.manifests {
                            if !repo_has_manifest(&manifests, repo, &m.digest) {
                                return Err(StoreError::ManifestBlobUnknown(m.digest.clone()));
                            }
                        }
                    }
                    manifests.insert((repo, &record.digest));
                }
                Op::Tag { repo, digest, .. } => {
                    if !repo_has_manifest(&manifests, repo, digest) {
                        return Err(StoreError::ManifestUnknown(digest.to_string()));
                    }
                }
                Op::Unlink { .. }
                | Op::Unmanifest { .. }
                | Op::Untag { .. }
                | Op::Import { .. }
                | Op::Unimport { .. } => {}
            }
        }
        Ok(())
    }
}

/// Ops per record in a compacted journal or a snapshot (see `State::for_each_record`).
pub(crate) const SNAPSHOT_CHUNK: usize = 1000;

/// Start of every journal line: the first 16 hex digits of the sha256 of the JSON after it.
const SUM_LEN: usize = 16;

fn checksum(json: &[u8]) -> String {
    let d = Digest::of(Algorithm::Sha256, json);
    d.hex()[..SUM_LEN].to_owned()
}

#[derive(Serialize, Deserialize)]
struct Record {
    ops: Vec<Op>,
}

/// Where commits go.
enum Journal {
    /// `meta/journal` in the data dir, opened for appending.
    File(Arc<File>),
    /// PostgreSQL: the connection commits run on (one transaction per commit). Boxed: one
    /// per store, and the file variant stays small.
    Pg(Box<pg::Link>),
}

/// With PostgreSQL: the connection reads catch up on, and the rounds of catching up.
struct Remote {
    /// tokio Mutex: held across the query, which is the point: one catch-up in flight, and
    /// every request that arrived while it ran is served by the next (see `Meta::sync`).
    link: tokio::sync::Mutex<pg::Link>,
    /// Catch-up rounds started, and finished (`done` is the number of the last finished).
    started: AtomicU64,
    done: AtomicU64,
    /// The last round's failure, if it failed (std Mutex: a string copied in or out).
    failed: std::sync::Mutex<Option<String>>,
    /// The connection GC's lock is taken on (tokio Mutex, in an `Arc` so that the lock's
    /// guard owns it: one GC per process at a time anyway).
    gc: Arc<tokio::sync::Mutex<pg::Link>>,
    /// Snapshots and pruning (in an `Arc`: a run is a task of its own).
    compactor: Arc<Compactor>,
    /// For the connection shared pins are published on (`Meta::marks_link`).
    db: Db,
}

/// Journal rows past the newest snapshot at which a replica that commits writes a new one.
/// A replica starts by loading the snapshot and replaying at most about this many rows.
const SNAPSHOT_EVERY: i64 = 10_000;
/// Journal rows a snapshot covers are kept this long, so a replica that is behind by less
/// (an idle one, or one between two requests) still catches up row by row; one that is
/// further behind finds the floor above its position and reloads from the snapshot.
const KEEP_ROWS: Duration = Duration::from_secs(600);

/// With PostgreSQL: writing snapshots of the state and pruning the journal rows they cover
/// (see `pg::Link::compact`), one run at a time per process (and over all replicas, by the
/// database's compaction lock).
struct Compactor {
    /// Its own connection, so a run never waits for, or holds up, commits and catch-ups
    /// (tokio Mutex: held across the run's queries, which is the point).
    link: tokio::sync::Mutex<pg::Link>,
    /// The newest snapshot's position this process knows of.
    snapshot_at: AtomicI64,
    /// A run is in flight in this process.
    running: AtomicBool,
    /// `SNAPSHOT_EVERY` and `KEEP_ROWS` (seconds) for runs started by commits; settable
    /// for tests.
    every: AtomicI64,
    keep: AtomicU64,
}

impl Compactor {
    /// Write a snapshot of `state` as it is now, unless one at or past its position exists.
    async fn run(&self, state: &RwLock<State>, keep: Duration) -> Result<Compacted, StoreError> {
        let started = Instant::now();
        // Serialised under the read lock, so the parts are exactly the state after the
        // rows up to `seq`; commits wait for the serialisation only, not for the database.
        let (seq, parts) = {
            let state = state.read().unwrap_or_else(|e| e.into_inner());
            (
                state.applied,
                state.record_bodies().map_err(io::Error::other)?,
            )
        };
        let known = self.snapshot_at.load(Ordering::Acquire);
        if seq <= known {
            return Ok(Compacted::Newer(known));
        }
        let n = parts.len();
        let done = self.link.lock().await.compact(seq, parts, keep).await?;
        match &done {
            Compacted::Done { pruned } => {
                self.snapshot_at.fetch_max(seq, Ordering::AcqRel);
                tracing::info!(
                    position = seq,
                    parts = n,
                    pruned = *pruned,
                    ms = started.elapsed().as_millis() as u64,
                    "metadata snapshot written"
                );
            }
            Compacted::Newer(at) => {
                self.snapshot_at.fetch_max(*at, Ordering::AcqRel);
            }
            Compacted::Busy => {}
        }
        Ok(done)
    }
}

pub(crate) struct Meta {
    /// std RwLock: held only for in-memory lookups and updates, never across an `.await`.
    /// In an `Arc`: a compaction run (a task of its own) serialises it.
    state: Arc<RwLock<State>>,
    /// tokio Mutex: serialises commits so the journal order is the order of in-memory
    /// application; held across the journal write, which is the point. GC also holds it
    /// while it decides and deletes, so no commit can reference a blob it is removing.
    /// With PostgreSQL, whoever holds it also holds the database's journal lock, which does
    /// the same for the commits of every other replica. In an `Arc` so that a guard can be
    /// moved into the task that rolls back a transaction left open (see `Locked`'s drop).
    journal: Arc<tokio::sync::Mutex<Journal>>,
    /// Set with PostgreSQL (`metadata.url`).
    remote: Option<Remote>,
    /// Bumped by every applied commit (under `journal`), so a holder of the lock can tell
    /// whether anything it derived from the state earlier is still current.
    generation: AtomicU64,
    /// Set when a failed append could not be cut back off the journal: appending after a
    /// partial line would bury it before intact lines, so commits stop until a restart.
    poisoned: AtomicBool,
}

/// The journal lock, held: commits made through it and reads of the state in between
/// see no other commit interleave (with PostgreSQL: until its commit, on any replica).
pub(crate) struct Locked<'a> {
    meta: &'a Meta,
    /// `None` only while dropping.
    journal: Option<tokio::sync::OwnedMutexGuard<Journal>>,
}

impl Drop for Locked<'_> {
    /// A PostgreSQL transaction opened by `Meta::lock` and not committed holds the journal
    /// lock of every replica: it is rolled back at once, by a task that keeps the local lock
    /// until then, so the next holder never sends its `BEGIN` before that `ROLLBACK`.
    fn drop(&mut self) {
        let Some(mut guard) = self.journal.take() else {
            return;
        };
        let Journal::Pg(link) = &mut *guard else {
            return;
        };
        if !link.in_txn() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Journal::Pg(link) = &mut *guard {
                        link.rollback().await;
                    }
                });
            }
            // Closing the connection rolls back as surely.
            Err(_) => link.disconnect(),
        }
    }
}

impl Locked<'_> {
    pub(crate) fn state(&self) -> RwLockReadGuard<'_, State> {
        self.meta.read()
    }

    /// The number of commits applied so far.
    pub(crate) fn generation(&self) -> u64 {
        self.meta.generation.load(Ordering::Acquire)
    }

    /// Check, journal durably, then apply `txn`.
    pub(crate) async fn commit(
        &mut self,
        txn: Txn,
        blob_exists: impl Fn(&Digest) -> bool,
    ) -> Result<(), StoreError> {
        if txn.ops.is_empty() {
            return Ok(());
        }
        if self.meta.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Io(io::Error::other(
                "journal could not be repaired after a failed write; restart the server",
            )));
        }
        let Some(journal) = self.journal.as_mut() else {
            return Err(StoreError::Io(io::Error::other(
                "the journal lock was released",
            )));
        };
        let file = match &mut **journal {
            Journal::File(file) => Arc::clone(file),
            Journal::Pg(link) => {
                // A second commit under one hold: the first ended the transaction, and with
                // it the database lock; take it again and catch up before checking.
                if !link.in_txn() {
                    self.meta.begin(link).await?;
                }
                self.meta.read().check(&txn, blob_exists)?;
                let record = Record { ops: txn.ops };
                let json = serde_json::to_string(&record).map_err(io::Error::other)?;
                let seq = link.append(json).await?;
                self.meta.apply_rows(vec![(seq, record)]);
                self.meta.compact_if_due();
                return Ok(());
            }
        };
        self.meta.read().check(&txn, blob_exists)?;
        let record = Record { ops: txn.ops };
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let mut line = Vec::with_capacity(json.len() + SUM_LEN + 2);
        line.extend_from_slice(checksum(&json).as_bytes());
        line.push(b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        let written = tokio::task::spawn_blocking(move || -> io::Result<Result<(), io::Error>> {
            let before = file.metadata()?.len();
            let result = (&*file).write_all(&line).and_then(|()| file.sync_data());
            if let Err(e) = result {
                // Disk full or an I/O error mid-line: cut the partial line off so the next
                // append starts on a clean line end. If even that fails, report it as the
                // outer error and the journal is poisoned.
                file.set_len(before)?;
                file.sync_data()?;
                return Ok(Err(e));
            }
            Ok(Ok(()))
        })
        .await
        .map_err(io::Error::other)?;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                self.meta.poisoned.store(true, Ordering::Release);
                tracing::error!(error = %e, "journal write failed and could not be undone");
                return Err(e.into());
            }
        }
        let mut state = self.meta.write();
        for op in record.ops {
            state.apply(op);
        }
        drop(state);
        self.meta.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

impl Meta {
    /// Replay the journal into memory. A torn last line (a crash mid-append) is cut off
    /// (only skipped when `read_only`: a check must not write); damage anywhere else is
    /// reported, never silently skipped.
    pub(crate) fn open(root: &Path, read_only: bool) -> Result<Meta, StoreError> {
        let path = layout::journal_path(root);
        let mut file = OpenOptions::new()
            .read(true)
            .append(!read_only)
            .create(!read_only)
            .open(&path)?;
        let Replayed {
            state,
            good_len,
            torn,
        } = replay(BufReader::new(&mut file), &path)?;
        if torn && read_only {
            tracing::warn!(journal = %path.display(), "ignoring a torn journal tail");
        } else if torn {
            tracing::warn!(journal = %path.display(), "cutting off a torn journal tail");
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        // A journal created just now is only an entry in `meta/` until that is fsynced; every
        // commit's fdatasync covers the file's bytes, never its name.
        crate::blobs::fsync_dir(&root.join(layout::META))?;
        file.seek(SeekFrom::End(0))?;
        Ok(Meta {
            state: Arc::new(RwLock::new(state)),
            journal: Arc::new(tokio::sync::Mutex::new(Journal::File(Arc::new(file)))),
            remote: None,
            generation: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The metadata in the PostgreSQL database at `url`: the schema created or migrated,
    /// then every journal row replayed into memory.
    pub(crate) async fn open_pg(db: Db) -> Result<Meta, StoreError> {
        let started = Instant::now();
        let mut link = pg::Link::new(db.clone());
        link.migrate().await?;
        let (state, snapshot) = load(&mut link).await?;
        tracing::info!(
            database = %db.shown(),
            snapshot,
            position = state.applied,
            ms = started.elapsed().as_millis() as u64,
            "metadata loaded from PostgreSQL"
        );
        let meta = Meta {
            state: Arc::new(RwLock::new(state)),
            journal: Arc::new(tokio::sync::Mutex::new(Journal::Pg(Box::new(link)))),
            remote: Some(Remote {
                link: tokio::sync::Mutex::new(pg::Link::new(db.clone())),
                started: AtomicU64::new(0),
                done: AtomicU64::new(0),
                failed: std::sync::Mutex::new(None),
                gc: Arc::new(tokio::sync::Mutex::new(pg::Link::new(db.clone()))),
                compactor: Arc::new(Compactor {
                    link: tokio::sync::Mutex::new(pg::Link::new(db.clone())),
                    snapshot_at: AtomicI64::new(snapshot),
                    running: AtomicBool::new(false),
                    every: AtomicI64::new(SNAPSHOT_EVERY),
                    keep: AtomicU64::new(KEEP_ROWS.as_secs()),
                }),
                db,
            }),
            generation: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        };
        meta.compact_if_due();
        Ok(meta)
    }

    /// `BEGIN` and the journal lock on `link`, with the state caught up to the database's
    /// latest; a replica found behind the journal's floor reloads and tries again.
    async fn begin(&self, link: &mut pg::Link) -> Result<(), StoreError> {
        for _ in 0..3 {
            match link.begin_locked(self.applied()).await? {
                Tail::Rows(rows) => {
                    self.apply_rows(rows);
                    return Ok(());
                }
                Tail::Behind => self.reload(link).await?,
            }
        }
        Err(StoreError::Unavailable(
            "the metadata journal was pruned past this replica three times while it reloaded"
                .into(),
        ))
    }

    /// Replace the state by the database's (snapshot and tail): for a replica whose
    /// position is below the journal's floor, which row-by-row catch-up cannot mend.
    async fn reload(&self, link: &mut pg::Link) -> Result<(), StoreError> {
        let (mut fresh, snapshot) = load(link).await?;
        let mut state = self.write();
        if fresh.applied > state.applied {
            tracing::warn!(
                from = state.applied,
                to = fresh.applied,
                snapshot,
                "this replica was behind the pruned metadata journal: reloaded from the snapshot"
            );
            fresh.keep_learnt(&state);
            *state = fresh;
            drop(state);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(remote) = &self.remote {
            remote
                .compactor
                .snapshot_at
                .fetch_max(snapshot, Ordering::AcqRel);
        }
        Ok(())
    }

    /// With PostgreSQL: start a compaction run (a task of its own) if the journal has grown
    /// `SNAPSHOT_EVERY` rows past the newest snapshot this process knows of and none runs.
    fn compact_if_due(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let c = &remote.compactor;
        let tail = self
            .applied()
            .saturating_sub(c.snapshot_at.load(Ordering::Acquire));
        if tail < c.every.load(Ordering::Relaxed) || c.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            c.running.store(false, Ordering::Release);
            return;
        };
        let (c, state, applied) = (Arc::clone(c), Arc::clone(&self.state), self.applied());
        runtime.spawn(async move {
            // Another replica may have written one since this process last looked: one
            // query, before serialising the whole state for nothing.
            let newest = c.link.lock().await.newest_snapshot().await;
            if let Ok(newest) = newest {
                c.snapshot_at.fetch_max(newest, Ordering::AcqRel);
                if applied.saturating_sub(newest) < c.every.load(Ordering::Relaxed) {
                    c.running.store(false, Ordering::Release);
                    return;
                }
            }
            let keep = Duration::from_secs(c.keep.load(Ordering::Relaxed));
            if let Err(e) = c.run(&state, keep).await {
                // The journal only grows meanwhile; the next commit past the mark retries.
                tracing::warn!(error = %e, "metadata snapshot failed");
            }
            c.running.store(false, Ordering::Release);
        });
    }

    /// With PostgreSQL: write a snapshot now and prune what it covers and is older than
    /// `keep` (what a run started by a commit does with `KEEP_ROWS`). `None` with a file
    /// journal.
    #[cfg(test)]
    pub(crate) async fn snapshot_now(
        &self,
        keep: Duration,
    ) -> Result<Option<Compacted>, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        remote.compactor.run(&self.state, keep).await.map(Some)
    }

    /// Tests: snapshot every `every` rows, keeping covered rows `keep`.
    #[cfg(test)]
    pub(crate) fn set_compaction(&self, every: i64, keep: Duration) {
        if let Some(remote) = &self.remote {
            remote.compactor.every.store(every, Ordering::Relaxed);
            remote
                .compactor
                .keep
                .store(keep.as_secs(), Ordering::Relaxed);
        }
    }

    /// Whether the metadata is in PostgreSQL (shared with other replicas).
    pub(crate) fn is_shared(&self) -> bool {
        self.remote.is_some()
    }

    /// With PostgreSQL: a connection of its own for publishing this process's pins and
    /// blob uses to the GC of every replica (`pins.rs`).
    pub(crate) fn marks_link(&self) -> Option<MarksLink> {
        self.remote
            .as_ref()
            .map(|r| MarksLink(pg::Link::new(r.db.clone())))
    }

    /// The position of the last PostgreSQL journal row applied.
    fn applied(&self) -> i64 {
        self.read().applied
    }

    /// Apply the rows (in order) that are past what is applied already.
    fn apply_rows(&self, rows: Vec<(i64, Record)>) {
        if rows.is_empty() {
            return;
        }
        let mut state = self.write();
        let mut n = 0;
        for (seq, record) in rows {
            if seq <= state.applied {
                continue;
            }
            for op in record.ops {
                state.apply(op);
            }
            state.applied = seq;
            n += 1;
        }
        drop(state);
        self.generation.fetch_add(n, Ordering::AcqRel);
    }

    /// With PostgreSQL: apply every commit any replica made before this call, so that what
    /// is read next is not older than a write acknowledged anywhere before the request came
    /// in. One query per round: a caller waits for a round that starts after it arrived
    /// (the one in flight may have read too early), so concurrent callers share rounds and
    /// the database sees at most one query in flight per replica, whatever the load.
    /// Nothing to do with a file journal (this process is its only writer).
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let ticket = remote.started.load(Ordering::SeqCst);
        let mut link = remote.link.lock().await;
        if remote.done.load(Ordering::SeqCst) > ticket {
            // A round that started after we arrived has finished: its answer is ours.
            let failed = remote
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return failed.map_or(Ok(()), |e| Err(StoreError::Unavailable(e)));
        }
        let round = remote.started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = link.after(self.applied()).await;
        let outcome = match result {
            Ok(Tail::Rows(rows)) => {
                self.apply_rows(rows);
                Ok(())
            }
            Ok(Tail::Behind) => self.reload(&mut link).await,
            Err(e) => Err(e),
        };
        *remote.failed.lock().unwrap_or_else(|e| e.into_inner()) =
            outcome.as_ref().err().map(|e| match e {
                StoreError::Unavailable(m) => m.clone(),
                other => other.to_string(),
            });
        remote.done.store(round, Ordering::SeqCst);
        outcome
    }

    /// The value of the secret `name` every replica shares (the first to ask sets it to
    /// `fresh`); `None` with a file journal.
    pub(crate) async fn shared_secret(
        &self,
        name: &str,
        fresh: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let mut link = remote.link.lock().await;
        link.secret(name, fresh).await.map(Some)
    }

    /// With PostgreSQL: take the lock that lets one replica at a time run GC, on a
    /// connection of its own (a session lock: if this process dies, its connection closes and
    /// the lock goes with it). `None`: another replica is running GC. With a file journal
    /// there is no one else: always granted. Give it back with [`GcLock::release`].
    pub(crate) async fn gc_lock(&self) -> Result<Option<GcLock>, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(Some(GcLock { link: None }));
        };
        let mut link = Arc::clone(&remote.gc).lock_owned().await;
        if link.try_lock(pg::GC_LOCK).await? {
            Ok(Some(GcLock { link: Some(link) }))
        } else {
            Ok(None)
        }
    }

    /// The number of commits applied so far (see `Locked::generation`).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (apply is
        // infallible), so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sizes the backend reported for blobs linked without one (`usage`).
    pub(crate) fn learn_sizes(&self, found: &[(Digest, u64)]) {
        let mut state = self.write();
        for (d, n) in found {
            state.usage.learn(d, *n);
        }
    }

    /// Labelled manifests the late classification found (`labelled`).
    pub(crate) fn add_labelled(&self, found: Vec<(RepoName, Digest)>) {
        let mut state = self.write();
        let State {
            repos, labelled, ..
        } = &mut *state;
        labelled.add_found(repos, found);
    }

    /// Commits stopped after a journal write that could not be undone.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Take the journal lock: no commit happens until the returned guard is dropped (with
    /// PostgreSQL, on no replica until its commit or drop; the state is caught up first).
    pub(crate) async fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let mut guard = Arc::clone(&self.journal).lock_owned().await;
        if let Journal::Pg(link) = &mut *guard {
            self.begin(link).await?;
        }
        Ok(Locked {
            meta: self,
            journal: Some(guard),
        })
    }

    /// Rewrite the journal as the shortest list of ops that rebuilds the current state,
    /// atomically (temp file, fsync, rename, fsync dir).
    pub(crate) async fn compact(&self, root: &Path) -> Result<(), StoreError> {
        let mut journal = self.journal.lock().await;
        if !matches!(&*journal, Journal::File(_)) {
            return Ok(());
        }
        let mut out = Vec::new();
        self.read()
            .for_each_record(|record| {
                let json = serde_json::to_vec(&record)?;
                out.extend_from_slice(checksum(&json).as_bytes());
                out.push(b' ');
                out.extend_from_slice(&json);
                out.push(b'\n');
                Ok::<(), serde_json::Error>(())
            })
            .map_err(io::Error::other)?;
        let root: PathBuf = root.to_owned();
        let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let (guard, mut f) = crate::blobs::TempFile::create(&root.join(layout::TMP))?;
            f.write_all(&out)?;
            f.sync_all()?;
            drop(f);
            let path = layout::journal_path(&root);
            fs::rename(guard.path(), &path)?;
            guard.disarm();
            crate::blobs::fsync_dir(&root.join(layout::META))?;
            OpenOptions::new().read(true).append(true).open(&path)
        })
        .await
        .map_err(io::Error::other)??;
        *journal = Journal::File(Arc::new(file));
        Ok(())
    }
}

/// The database's state (the newest snapshot, then the rows after it) and the snapshot's
/// position (0: none).
async fn load(link: &mut pg::Link) -> Result<(State, i64), StoreError> {
    let mut state = State::default();
    let (snapshot, tail) = link
        .load(|record| {
            for op in record.ops {
                state.apply(op);
            }
        })
        .await?;
    state.applied = snapshot;
    for (seq, record) in tail {
        for op in record.ops {
            state.apply(op);
        }
        state.applied = seq;
    }
    Ok((state, snapshot))
}

/// Write `bodies` (transactions' JSON) into the empty journal table of `db` in one database
/// transaction (see `migrate_metadata`).
pub(crate) async fn import_into(db: Db, bodies: Vec<String>) -> Result<(), StoreError> {
    let mut link = pg::Link::new(db);
    link.migrate().await?;
    link.import(bodies).await
}

/// The connection a process publishes its pins and blob uses on (`pins.rs`).
pub(crate) struct MarksLink(pg::Link);

impl MarksLink {
    pub(crate) async fn publish(
        &mut self,
        holder: &str,
        batch: &MarkBatch,
    ) -> Result<(), StoreError> {
        self.0.publish_marks(holder, batch).await
    }
}

/// The lock of one GC run over all replicas (see `Meta::gc_lock`).
pub(crate) struct GcLock {
    link: Option<tokio::sync::OwnedMutexGuard<pg::Link>>,
}

impl GcLock {
    /// Unlock now: a closed connection also releases it, but only once the server has noticed,
    /// and the next run (here or on another replica) would find it still taken.
    pub(crate) async fn release(mut self) {
        if let Some(link) = self.link.as_mut() {
            link.unlock(pg::GC_LOCK).await;
        }
    }
}

/// With PostgreSQL, what GC reads of the marks every replica publishes (`pins.rs`), on its
/// lock's connection; with a file journal there are none (this process's pins and clock
/// say all).
impl GcLock {
    /// Keep publications of marks out until [`GcLock::open_gate`]: GC reads the marks of a
    /// batch and deletes it in between.
    pub(crate) async fn close_gate(&mut self) -> Result<(), StoreError> {
        match self.link.as_mut() {
            Some(link) => link.close_gate().await,
            None => Ok(()),
        }
    }

    pub(crate) async fn open_gate(&mut self) {
        if let Some(link) = self.link.as_mut() {
            link.open_gate().await;
        }
    }

    /// The digests (of `among`, or all) pinned by any replica or used within `grace`.
    pub(crate) async fn marked(
        &mut self,
        grace: std::time::Duration,
        among: Option<&[Digest]>,
    ) -> Result<HashSet<Digest>, StoreError> {
        match self.link.as_mut() {
            Some(link) => link.marked(grace, among).await,
            None => Ok(HashSet::new()),
        }
    }

    /// Drop the marks of `deleted` blobs, and marks older than `stale`.
    pub(crate) async fn forget_marks(
        &mut self,
        deleted: &[Digest],
        stale: std::time::Duration,
    ) -> Result<(), StoreError> {
        match self.link.as_mut() {
            Some(link) => link.forget_marks(deleted, stale).await,
            None => Ok(()),
        }
    }

    /// When the oldest pin held by any replica was published (`None`: none, or no database).
    pub(crate) async fn oldest_pin(&mut self) -> Result<Option<std::time::SystemTime>, StoreError> {
        match self.link.as_mut() {
            Some(link) => link.oldest_pin().await,
            None => Ok(None),
        }
    }
}

impl Drop for GcLock {
    /// Dropped without `release` (a panicking run): closing the connection releases it.
    fn drop(&mut self) {
        if let Some(link) = self.link.as_mut() {
            if link.holds(pg::GC_LOCK) {
                link.disconnect();
            }
        }
    }
}

/// What a journal's intact lines build, and where they end.
pub(crate) struct Replayed {
    pub state: State,
    /// Bytes of intact lines from the start: everything before a torn tail.
    pub good_len: u64,
    /// Something (a torn last line) follows `good_len`.
    pub torn: bool,
}

/// Apply every intact line of a journal read from `reader`. A damaged line followed only
/// by damage is a torn tail (`torn`); damage before an intact line is an error, never
/// silently skipped. `path` names the journal in that error.
pub(crate) fn replay(mut reader: impl BufRead, path: &Path) -> Result<Replayed, StoreError> {
    let mut state = State::default();
    let mut good_len = 0u64;
    let mut bad_at: Option<u64> = None;
    let mut line = Vec::new();
    let mut lineno = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        match parse_line(&line) {
            Some(rec) if bad_at.is_none() => {
                for op in rec.ops {
                    state.apply(op);
                }
                good_len += n as u64;
            }
            Some(_) => {
                return Err(StoreError::Corrupt(format!(
                    "{}: line {} is damaged but later lines are intact",
                    path.display(),
                    bad_at.unwrap_or_default()
                )));
            }
            None => {
                if bad_at.is_none() {
                    bad_at = Some(lineno);
                }
            }
        }
    }
    Ok(Replayed {
        state,
        good_len,
        torn: bad_at.is_some(),
    })
}

fn parse_line(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n")?;
    if line.len() < SUM_LEN + 1 || line[SUM_LEN] != b' ' {
        return None;
    }
    let (sum, json) = (&line[..SUM_LEN], &line[SUM_LEN + 1..]);
    if sum != checksum(json).as_bytes() {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Rewrite the journal under `root` as a version before links carried their size wrote it.
#[cfg(test)]
pub(crate) fn strip_link_sizes(root: &Path) {
    let path = layout::journal_path(root);
    let text = fs::read(&path).expect("journal");
    let mut out = Vec::new();
    for line in text.split_inclusive(|b| *b == b'\n') {
        let mut rec = parse_line(line).expect("intact line");
        for op in &mut rec.ops {
            if let Op::Link { size, .. } = op {
                *size = None;
            }
        }
        let json = serde_json::to_vec(&rec).expect("json");
        out.extend_from_slice(checksum(&json).as_bytes());
        out.push(b' ');
        out.extend_from_slice(&json);
        out.push(b'\n');
    }
    fs::write(&path, out).expect("write journal");
}
