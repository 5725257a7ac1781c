//! Online garbage collection: drop what nothing references any more, while pushes, mounts
//! and imports go on.
//!
//! What is live (the mark):
//! - every tagged manifest; with `delete_untagged` off (the default) every manifest;
//! - the children of a kept index and the referrers of a kept subject, transitively;
//! - a manifest whose bytes were written or touched within the grace window, or pinned;
//! - in each repository, the blobs its kept manifests reference, and any linked blob
//!   written or touched within the grace window, or pinned;
//! - every blob file that any repository links or any manifest names (as its own bytes,
//!   a layer/config or a child), and every pinned digest.
//!
//! Upload sessions live under `uploads/`, not `blobs/`: they cannot be swept, only expired
//! by idle time (`upload_ttl`). An import's blobs are unlinked until its one commit; the
//! grace window (mtime, refreshed whenever a write finds the blob present) or a pin
//! protects them until then.
//!
//! Why it is safe (the race argument):
//! 1. Every decision to drop metadata or delete a file is made and carried out while
//!    holding the journal lock, against the state as it is at that moment. No commit can
//!    interleave, and every commit checks, under the same lock, that the blob files its
//!    links and manifests name exist. So a commit either happened before GC decided (and GC
//!    sees the reference) or happens after the file is gone (and is refused cleanly):
//!    there is never a link or manifest naming a missing file.
//! 2. A writer that finds a blob present and relies on it (push of an existing blob,
//!    mount, manifest put) pins the digest *before* looking, and holds the pin until it has
//!    committed its link. GC claims an unpinned digest from the pins for the length of its
//!    delete, and a pin taken meanwhile waits for the delete to end (`pins.rs`), so a file
//!    is either deleted before the writer looks (the writer then stores its own copy) or
//!    seen pinned and kept.
//! 3. "Already linked, nothing to commit" is decided under the journal lock too, so a GC
//!    that drops a link cannot slip between that check and the writer's acknowledgement.
//! 4. The file listing and the first mtime look happen without the lock and only narrow the
//!    candidates; everything is checked again under the lock before it is acted upon.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::meta::{Op, Repo, State};
use crate::retention::{self, Retention};
use crate::{Digest, RepoName, Store, StoreError, Tag, Txn};

/// A blob file's last write and size.
type Written = (SystemTime, u64);

/// Files are deleted in batches of this many per hold of the journal lock, so pushes wait
/// at most one batch for GC.
const SWEEP_BATCH: usize = 256;

/// Shared marks (replicas) older than this are dropped by GC: a last use that old is past
/// any grace window in use, a pin that old lapsed with its process.
const STALE_MARKS: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far the database's clock (pins' publication times) and the S3 server's (upload
/// creation times) may disagree for the leftover sweep's "begun after the oldest pin".
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// What a GC run may remove.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Nothing written, touched or linked more recently than this is removed.
    pub grace: Duration,
    /// Delete manifests no tag keeps (directly, as an index child or as a referrer).
    pub delete_untagged: bool,
    /// Report what would be removed; change nothing.
    pub dry_run: bool,
    /// Also expire upload sessions idle for longer than this.
    pub upload_ttl: Option<Duration>,
    /// Retention rules applied in the metadata step (see `retention`).
    pub retention: Vec<Retention>,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            grace: Duration::from_secs(3600),
            delete_untagged: false,
            dry_run: false,
            upload_ttl: None,
            retention: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RepoDigest {
    pub repo: RepoName,
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RepoTag {
    pub repo: RepoName,
    pub tag: Tag,
}

/// What a GC run removed (or, dry, would remove).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tags retention rules dropped.
    pub tags_dropped: Vec<RepoTag>,
    pub manifests_deleted: Vec<RepoDigest>,
    /// Repository links to blobs no kept manifest of that repository references.
    pub links_dropped: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub blobs_kept: u64,
    /// Unreferenced blobs the grace window kept this run, and when they become collectable.
    pub held_back: HeldBack,
    pub uploads_expired: u64,
    /// What interrupted writes left in the blob backend that nothing names (S3: incomplete
    /// multipart uploads, session objects never indexed), older than the grace window,
    /// removed (or, dry, found). See `BlobStore::sweep_leftovers`.
    pub leftovers_removed: u64,
    pub elapsed_ms: u64,
    /// With `dry_run`: what each repository uses now, beside what the run would free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::Usage>,
}

/// Blob files no repository references that a run kept only because they were written or
/// touched within the grace window. Each becomes collectable `grace` after its last write,
/// if nothing references it by then: the earliest and latest of those times (RFC 3339).
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeldBack {
    pub blobs: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_collectable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_collectable: Option<String>,
}

impl HeldBack {
    /// Tally `blobs` (last written at, size) of a run with window `grace`.
    fn of(blobs: &[Written], grace: Duration) -> HeldBack {
        let at = |t: SystemTime| {
            let due = t.checked_add(grace).unwrap_or(t);
            humantime::format_rfc3339_seconds(due).to_string()
        };
        HeldBack {
            blobs: blobs.len() as u64,
            bytes: blobs.iter().map(|(_, n)| n).sum(),
            earliest_collectable: blobs.iter().map(|(t, _)| *t).min().map(at),
            latest_collectable: blobs.iter().map(|(t, _)| *t).max().map(at),
        }
    }
}

impl Store {
    /// Run one garbage collection. Safe while the store serves; see the module docs.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let _one_at_a_time = self.inner.gc.lock().await;
        // With replicas on one database: one GC over all of them (the race argument for the
        // others' pushes is the same as for this process's; see ARCHITECTURE.md).
        let Some(mut one_replica) = self.inner.meta.gc_lock().await? else {
            return Err(StoreError::Busy(
                "a GC is running on another replica; try again when it has finished".into(),
            ));
        };
        let report = self.gc_run(opts, &mut one_replica).await;
        one_replica.release().await;
        report
    }

    async fn gc_run(
        &self,
        opts: &GcOptions,
        replicas: &mut crate::meta::GcLock,
    ) -> Result<GcReport, StoreError> {
        let started = Instant::now();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        let cutoff = SystemTime::now()
            .checked_sub(opts.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);

        // 1. Candidates: blobs already older than the grace window, by the store's clock. A
        //    blob written after this listing is not one, and a clock only moves forward.
        //    Blobs inside the window come with their time and size: the report says which
        //    of them only the window kept.
        let (total, old, young) = self.candidates(cutoff).await?;
        // Re-read under the lock: a write may have touched it since the listing.
        let clock = &self.inner.clock;
        let still_old = |d: &Digest| {
            old.binary_search(d).is_ok() && clock.last_used(d).is_some_and(|t| t <= cutoff)
        };

        // 2. Metadata: untagged manifests (if asked) and links nothing references.
        let mut locked = self.inner.meta.lock().await?;
        // With replicas: what the others pin or used within the window, as published
        // before this plan; a writer publishing later commits after it (as below). The mark
        // gate stays closed until the plan is committed: a `HEAD` elsewhere publishes its use
        // and then catches up, so it either is seen here or sees the plan's effect.
        replicas.close_gate().await?;
        let marked = match replicas.marked(opts.grace, None).await {
            Ok(m) => m,
            Err(e) => {
                replicas.open_gate().await;
                return Err(e);
            }
        };
        let now = SystemTime::now();
        let (txn, dropped_links, dropped_manifests, dropped_tags) = {
            // A snapshot suffices here: a writer pinning later also links or commits under
            // the journal lock, after this plan is applied, and so sees its effect.
            let pinned: HashSet<Digest> = self.inner.pins.pinned();
            let state = locked.state();
            let younger_than = |d: &Digest, age: Duration| {
                let cut = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
                clock.last_used(d).is_none_or(|t| t > cut)
            };
            plan(
                &state,
                opts,
                |d| pinned.contains(d) || marked.contains(d) || !still_old(d),
                younger_than,
            )
        };
        report.tags_dropped = dropped_tags;
        report.tags_dropped.sort_by(|a, b| {
            (a.repo.as_str(), a.tag.as_str()).cmp(&(b.repo.as_str(), b.tag.as_str()))
        });
        report.links_dropped = dropped_links.len() as u64;
        report.manifests_deleted = dropped_manifests.iter().cloned().collect();
        report.manifests_deleted.sort_by(|a, b| {
            (a.repo.as_str(), a.digest.to_string()).cmp(&(b.repo.as_str(), b.digest.to_string()))
        });
        let (skip_links, skip_manifests) = if opts.dry_run {
            replicas.open_gate().await;
            (dropped_links, dropped_manifests)
        } else {
            let committed = locked.commit(txn, |_| true).await;
            replicas.open_gate().await;
            committed?;
            (HashSet::new(), HashSet::new())
        };
        drop(locked);

        // 3. Files: delete candidates nothing references, in batches under the lock.
        let candidates: Vec<Digest> = {
            // Without the lock, only to shrink the list: live now is simply kept this run.
            let live = live_set(&self.inner.meta.read(), &skip_links, &skip_manifests);
            old.into_iter().filter(|d| !live.contains(d)).collect()
        };
        let mut live: Option<(u64, Arc<HashSet<Digest>>)> = None;
        let mut held: Vec<Written> = Vec::new();
        for batch in candidates.chunks(SWEEP_BATCH) {
            let locked = self.inner.meta.lock().await?;
            let generation = locked.generation();
            let current = match &live {
                Some((g, set)) if *g == generation => Arc::clone(set),
                _ => {
                    let set = Arc::new(live_set(&locked.state(), &skip_links, &skip_manifests));
                    live = Some((generation, Arc::clone(&set)));
                    set
                }
            };
            // With replicas, the mark gate is closed from the read of the batch's marks to
            // its last delete: a pin another replica publishes meanwhile waits, and its
            // writer then finds the blob gone (see `pins.rs`).
            replicas.close_gate().await?;
            let swept = async {
                let marked = replicas.marked(opts.grace, Some(batch)).await?;
                // The journal lock stays held across this: that is what keeps commits out.
                let swept = self
                    .sweep_blobs(batch, &current, &marked, cutoff, opts.dry_run)
                    .await?;
                replicas
                    .forget_marks(&swept.3, STALE_MARKS.max(opts.grace))
                    .await?;
                Ok::<_, StoreError>(swept)
            }
            .await;
            replicas.open_gate().await;
            let (n, bytes, touched, _) = swept?;
            drop(locked);
            report.blobs_deleted += n;
            report.bytes_freed += bytes;
            held.extend(touched);
        }
        report.blobs_kept = total - report.blobs_deleted;
        {
            // A report, not a decision: the state of this moment is good enough. A link
            // alone (a blob pushed, no manifest naming it yet) is what the window keeps.
            let live = manifest_referenced(&self.inner.meta.read(), &skip_manifests);
            held.extend(
                young
                    .into_iter()
                    .filter(|(d, _, _)| !live.contains(d))
                    .map(|(_, t, n)| (t, n)),
            );
        }
        report.held_back = HeldBack::of(&held, opts.grace);
        if opts.dry_run {
            report.usage = Some(self.usage().await?);
        }

        // 4. Upload sessions nobody has written to for too long.
        if let Some(ttl) = opts.upload_ttl {
            if !opts.dry_run {
                report.uploads_expired = self.expire_uploads(ttl).await?;
            }
        }
        // 5. Leftovers of writes a crash interrupted. After the expiry, which aborts what
        //    expired sessions recorded; the backend spares whatever is still recorded.
        //    With replicas, nothing begun after the oldest pin any replica holds: a write
        //    in flight on another replica (a monolithic push's multipart upload, which only
        //    that process's memory records) published its pin before it began.
        let leftover_cutoff = match replicas.oldest_pin().await? {
            Some(t) => cutoff.min(t.checked_sub(CLOCK_SKEW).unwrap_or(SystemTime::UNIX_EPOCH)),
            None => cutoff,
        };
        report.leftovers_removed = self
            .inner
            .blobs
            .sweep_leftovers(leftover_cutoff, opts.dry_run)
            .await?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            dry_run = report.dry_run,
            tags = report.tags_dropped.len(),
            manifests = report.manifests_deleted.len(),
            links = report.links_dropped,
            blobs = report.blobs_deleted,
            bytes = report.bytes_freed,
            uploads = report.uploads_expired,
            leftovers = report.leftovers_removed,
            ms = report.elapsed_ms,
            "gc finished"
        );
        Ok(report)
    }

    /// Step 1 through the contract: every stored blob (`list`), split by the clock into
    /// those last used before `cutoff` (sorted) and the younger ones with their time and
    /// size (one `stat` each, for the report). Returns the count listed too.
    async fn candidates(
        &self,
        cutoff: SystemTime,
    ) -> Result<(u64, Vec<Digest>, Vec<(Digest, SystemTime, u64)>), StoreError> {
        use futures_util::TryStreamExt;
        let (mut total, mut old, mut young) = (0u64, Vec::new(), Vec::new());
        let mut listed = self.inner.blobs.list();
        while let Some(d) = listed.try_next().await? {
            total += 1;
            match self.inner.clock.last_used(&d) {
                Some(t) if t <= cutoff => old.push(d),
                Some(t) => young.push((d, t)),
                // No record at all: no time to run a window from, so it is kept.
                None => {}
            }
        }
        drop(listed);
        let mut sized = Vec::with_capacity(young.len());
        for (d, t) in young {
            if let Some(n) = self.inner.blobs.stat(&d).await? {
                sized.push((d, t, n));
            }
        }
        old.sort_unstable();
        Ok((total, old, sized))
    }

    /// Delete (or count, when `dry`) the blobs of `batch` that are not live, not pinned and
    /// still older than `cutoff` by the clock; also returns the (time, size) of those used
    /// since the listing: the grace window keeps them. Runs with the journal lock held by
    /// the caller. Each blob is claimed from the pins before it is looked at and until its
    /// delete is over, so a writer pinning it meanwhile waits and then finds it absent.
    #[allow(
        clippy::type_complexity,
        reason = "one internal caller destructures it"
    )]
    async fn sweep_blobs(
        &self,
        batch: &[Digest],
        live: &HashSet<Digest>,
        marked: &HashSet<Digest>,
        cutoff: SystemTime,
        dry: bool,
    ) -> Result<(u64, u64, Vec<Written>, Vec<Digest>), StoreError> {
        let (blobs, clock) = (&self.inner.blobs, &self.inner.clock);
        let (mut n, mut bytes, mut touched, mut deleted) = (0, 0, Vec::new(), Vec::new());
        for d in batch {
            // `marked`: pinned or used within the window on another replica.
            if live.contains(d) || marked.contains(d) {
                continue;
            }
            let Some(deleting) = self.inner.pins.begin_delete(d) else {
                continue;
            };
            let Some(size) = blobs.stat(d).await? else {
                continue;
            };
            match clock.last_used(d) {
                Some(t) if t > cutoff => {
                    touched.push((t, size));
                    continue;
                }
                Some(_) => {}
                None => continue,
            }
            if !dry {
                if !blobs.delete(d).await? {
                    continue;
                }
                clock.forget(d);
                deleted.push(d.clone());
            }
            drop(deleting);
            n += 1;
            bytes += size;
        }
        Ok((n, bytes, touched, deleted))
    }

    /// Remove upload sessions not written to for `ttl`. A session being written is busy
    /// and skipped; one claimed here is gone before any later request can claim it.
    pub async fn expire_uploads(&self, ttl: Duration) -> Result<u64, StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut expired = 0;
        // The backend's record of the last write (the `data` file's mtime on a filesystem,
        // which every buffer of a chunk in flight moves on), so a session idle across
        // restarts expires on time and one being written does not.
        for session in self.inner.blobs.sessions().await? {
            let id = &session.id;
            // A chunk in flight here is not idle, whatever the backend recorded last.
            if session.last_write > cutoff || self.inner.open_uploads.is_writing(id) {
                continue;
            }
            if self.inner.blobs.abort(id).await? {
                self.inner.open_uploads.release(id);
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// How a GC treats manifests no tag keeps, in one repository.
#[derive(Clone, Copy)]
enum Untagged {
    Keep,
    /// Past the grace window (`delete_untagged`).
    Delete,
    /// Once their bytes were last written this long ago (a retention rule).
    OlderThan(Duration),
}

/// Decide the metadata half of a GC: which tags (retention), manifests and links to drop.
/// `protected` says whether a digest is pinned or inside the grace window; `younger_than`
/// whether a manifest's bytes were written more recently than a given age.
fn plan(
    state: &State,
    opts: &GcOptions,
    protected: impl Fn(&Digest) -> bool,
    younger_than: impl Fn(&Digest, Duration) -> bool,
) -> (Txn, HashSet<RepoDigest>, HashSet<RepoDigest>, Vec<RepoTag>) {
    let mut txn = Txn::new();
    let mut links = HashSet::new();
    let mut manifests = HashSet::new();
    let mut tags = Vec::new();
    for (name, repo) in &state.repos {
        let rules: Vec<&Retention> = opts
            .retention
            .iter()
            .filter(|r| (r.repos)(name.as_str()))
            .collect();
        let dropped = retention::tags_to_drop(repo, &rules);
        for t in &dropped {
            txn.push(Op::Untag {
                repo: name.clone(),
                tag: (*t).clone(),
            });
            tags.push(RepoTag {
                repo: name.clone(),
                tag: (*t).clone(),
            });
        }
        let untagged = match rules.iter().filter_map(|r| r.untagged_older_than).min() {
            _ if opts.delete_untagged => Untagged::Delete,
            Some(age) => Untagged::OlderThan(age),
            None => Untagged::Keep,
        };
        // An import some tag of which still points where it set it keeps everything it
        // brought: that is how a kept bundle keeps the images it lists.
        let mut import_kept: Vec<&Digest> = Vec::new();
        for (_, r) in state
            .imports
            .values()
            .filter(|(_, r)| r.repository == *name)
        {
            let alive = r.tags.iter().any(|t| {
                !dropped.contains(&t.tag)
                    && repo.tags.get(&t.tag).map(|e| &e.digest) == Some(&t.digest)
            });
            if alive {
                import_kept.extend(r.manifests.iter());
            }
        }
        let keep = |d: &Digest| {
            protected(d) || matches!(untagged, Untagged::OlderThan(age) if younger_than(d, age))
        };
        let kept = kept_manifests(repo, untagged, &dropped, import_kept, &keep);
        for d in repo.manifests.keys().filter(|d| !kept.contains(*d)) {
            txn.push(Op::Unmanifest {
                repo: name.clone(),
                digest: d.clone(),
            });
            manifests.insert(RepoDigest {
                repo: name.clone(),
                digest: d.clone(),
            });
        }
        let mut referenced: HashSet<&Digest> = HashSet::new();
        for m in kept.iter().filter_map(|d| repo.manifests.get(*d)) {
            referenced.insert(&m.digest);
            referenced.extend(m.blobs.iter().map(|b| &b.digest));
        }
        for b in &repo.blobs {
            if !referenced.contains(b) && !protected(b) {
                txn.push(Op::Unlink {
                    repo: name.clone(),
                    digest: b.clone(),
                });
                links.insert(RepoDigest {
                    repo: name.clone(),
                    digest: b.clone(),
                });
            }
        }
    }
    (txn, links, manifests, tags)
}

/// The manifests of `repo` a GC keeps: all of them, or (removing untagged ones) those a
/// remaining tag, an alive import or protection reaches through index children and
/// referrers.
fn kept_manifests<'a>(
    repo: &'a Repo,
    untagged: Untagged,
    dropped_tags: &HashSet<&Tag>,
    import_kept: Vec<&'a Digest>,
    protected: &impl Fn(&Digest) -> bool,
) -> HashSet<&'a Digest> {
    if matches!(untagged, Untagged::Keep) {
        return repo.manifests.keys().collect();
    }
    let mut queue = repo.tagged_except(dropped_tags);
    queue.extend(import_kept);
    queue.extend(repo.manifests.keys().filter(|d| protected(d)));
    repo.reachable(queue)
}

/// `root` and the children (transitively) that deleting it leaves without a tag or any
/// other parent in `repo`. `root` comes first.
pub(crate) fn with_orphaned_children(repo: &Repo, root: &Digest) -> Vec<Digest> {
    let tagged: HashSet<&Digest> = repo.tags.values().map(|e| &e.digest).collect();
    let mut parents: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for m in repo.manifests.values() {
        for c in &m.manifests {
            parents.entry(&c.digest).or_default().push(&m.digest);
        }
    }
    let mut doomed: HashSet<&Digest> = HashSet::from([root]);
    let mut order = vec![root.clone()];
    loop {
        let before = order.len();
        for d in repo.manifests.keys() {
            if doomed.contains(d) || tagged.contains(d) {
                continue;
            }
            if parents
                .get(d)
                .is_some_and(|ps| ps.iter().all(|p| doomed.contains(p)))
            {
                doomed.insert(d);
                order.push(d.clone());
            }
        }
        if order.len() == before {
            return order;
        }
    }
}

/// Every digest whose file must stay: linked anywhere, a manifest anywhere, or named by
/// one. `skip_*` leave out what a dry run would have dropped.
fn live_set(
    state: &State,
    skip_links: &HashSet<RepoDigest>,
    skip_manifests: &HashSet<RepoDigest>,
) -> HashSet<Digest> {
    let mut live = manifest_referenced(state, skip_manifests);
    for (name, repo) in &state.repos {
        for d in &repo.blobs {
            if !skipped(skip_links, name, d) {
                live.insert(d.clone());
            }
        }
    }
    live
}

/// `(repo, d)` is in `set` (a dry run's would-be-dropped links or manifests).
fn skipped(set: &HashSet<RepoDigest>, repo: &RepoName, d: &Digest) -> bool {
    !set.is_empty()
        && set.contains(&RepoDigest {
            repo: repo.clone(),
            digest: d.clone(),
        })
}

/// Every digest a manifest is stored under or names, leaving out `skip`'s manifests.
fn manifest_referenced(state: &State, skip: &HashSet<RepoDigest>) -> HashSet<Digest> {
    let mut live = HashSet::new();
    for (name, repo) in &state.repos {
        for (d, m) in &repo.manifests {
            if skipped(skip, name, d) {
                continue;
            }
            live.insert(d.clone());
            live.extend(m.blobs.iter().map(|b| b.digest.clone()));
            live.extend(m.manifests.iter().map(|c| c.digest.clone()));
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use crate::{uploads, UploadId};
    use crate::{
        Algorithm, BlobDelete, Ingest, ManifestDelete, Reference, Tag, OCI_INDEX, OCI_MANIFEST,
    };
    use std::fs;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).expect("name")
    }

    /// GC's deletes await I/O (on S3, network requests) while writers pin digests on every
    /// runtime thread: GC must still finish. A std lock held across each delete once blocked
    /// both worker threads in `pin`, and with them the driver the delete was waiting for:
    /// a deadlock that stopped every push (the S3 kill -9 loop found it). The runtime is
    /// built here so that a deadlock fails the test on a deadline instead of hanging it.
    #[test]
    fn gc_with_slow_deletes_finishes_while_writers_pin_on_every_thread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let deleted = rt.block_on(async {
                let dir = tempfile::tempdir().expect("dir");
                let blobs = crate::blobstore::memory::MemBlobStore::new()
                    .with_latency(Duration::from_millis(1));
                let s =
                    Store::open_with(dir.path(), Some(crate::blobstore::opened(Box::new(blobs))))
                        .await
                        .expect("open");
                let mut junk = Vec::new();
                for i in 0..150u32 {
                    let bytes = format!("junk {i}").into_bytes();
                    let d = Digest::of(Algorithm::Sha256, &bytes);
                    s.ingest_blob(Some(&d), Algorithm::Sha256, &bytes[..], Ingest::default())
                        .await
                        .expect("junk");
                    junk.push(d);
                }
                let stop = Arc::new(AtomicBool::new(false));
                let mut writers = Vec::new();
                for w in 0..6usize {
                    let (s, junk, stop) = (s.clone(), junk.clone(), Arc::clone(&stop));
                    writers.push(tokio::spawn(async move {
                        let mut i = w;
                        while !stop.load(Ordering::Relaxed) {
                            let _pin = s.pin_blob(&junk[i % junk.len()]).await;
                            tokio::task::yield_now().await;
                            i += 7;
                        }
                    }));
                }
                let opts = GcOptions {
                    grace: Duration::ZERO,
                    ..GcOptions::default()
                };
                let report = s.gc(&opts).await.expect("gc");
                stop.store(true, Ordering::Relaxed);
                for w in writers {
                    w.await.expect("writer");
                }
                report.blobs_deleted
            });
            let _ = tx.send(deleted);
        });
        let deleted = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("GC finished while writers pinned (no deadlock)");
        assert!(deleted > 0, "GC deleted none of the unlinked blobs");
    }

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    /// Make every blob file look written two hours ago.
    fn age_everything(root: &std::path::Path) {
        let old = SystemTime::now() - Duration::from_secs(7200);
        let (found, _) = layout::walk_blobs(root).expect("walk");
        for d in found {
            fs::File::open(layout::blob_path(root, &d))
                .and_then(|f| f.set_modified(old))
                .expect("age");
        }
    }

    fn opts(delete_untagged: bool) -> GcOptions {
        GcOptions {
            delete_untagged,
            ..GcOptions::default()
        }
    }

    fn image(cfg: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        )
        .into_bytes()
    }

    fn index(children: &[(&Digest, usize)]) -> Vec<u8> {
        let list: Vec<String> = children
            .iter()
            .map(|(d, n)| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{n}}}"#))
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            list.join(",")
        )
        .into_bytes()
    }

    /// Push config + layer `seed` and an image manifest over them; returns its digest.
    async fn push_image(s: &Store, repo: &RepoName, seed: &str, tag: Option<&str>) -> Digest {
        let cfg = format!("{{\"{seed}\":1}}");
        let layer = format!("layer {seed}");
        let (c, l) = (sha(cfg.as_bytes()), sha(layer.as_bytes()));
        s.push_blob(repo, &c, cfg.as_bytes()).await.expect("cfg");
        s.push_blob(repo, &l, layer.as_bytes())
            .await
            .expect("layer");
        let body = image(&c, &l);
        let d = sha(&body);
        let reference = match tag {
            Some(t) => Reference::parse(t).expect("tag"),
            None => Reference::Digest(d.clone()),
        };
        s.put_manifest(repo, &reference, OCI_MANIFEST, &body, &[], true)
            .await
            .expect("manifest");
        d
    }

    /// GC through the contract (a backend other than the filesystem, here the in-memory
    /// one): the store's clock decides age, so nothing is swept within a grace window of the
    /// open or of a touch; then only what nothing references and nobody pins goes, and a
    /// second run finds nothing.
    #[tokio::test]
    async fn sweeps_through_the_contract_on_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = crate::blobstore::memory::MemBlobStore::new();
        let s = Store::open_with(dir.path(), Some(crate::blobstore::opened(Box::new(mem))))
            .await
            .expect("open");
        let repo = name("app");
        let kept = push_image(&s, &repo, "kept", Some("v1")).await;
        let dropped = push_image(&s, &repo, "dropped", Some("v2")).await;
        s.delete_manifest(
            &repo,
            &Reference::Digest(dropped.clone()),
            ManifestDelete::default(),
        )
        .await
        .expect("delete");
        let pinned = sha(b"pinned");
        let (_, pin) = s
            .ingest_blob(
                Some(&pinned),
                Algorithm::Sha256,
                &b"pinned"[..],
                Ingest::default(),
            )
            .await
            .expect("ingest");
        // Within the window (every blob was written or touched just now): nothing goes.
        let r = s.gc(&opts(false)).await.expect("gc");
        assert_eq!((r.blobs_deleted, r.links_dropped), (0, 0), "{r:?}");
        assert!(r.held_back.blobs > 0, "the window held them: {r:?}");
        let now = GcOptions {
            grace: Duration::ZERO,
            ..opts(false)
        };
        let dry = s
            .gc(&GcOptions {
                dry_run: true,
                ..now.clone()
            })
            .await
            .expect("dry run");
        let r = s.gc(&now).await.expect("gc");
        // The dropped image's manifest, config and layer; not the pinned blob.
        assert_eq!(r.blobs_deleted, 3, "{r:?}");
        assert_eq!(
            dry.blobs_deleted, r.blobs_deleted,
            "a dry run counts the same"
        );
        assert!(s.blob_exists(&pinned).await.expect("stat"), "pinned");
        assert!(!s.blob_exists(&dropped).await.expect("stat"));
        let m = s
            .get_manifest(&repo, &Reference::Digest(kept.clone()))
            .await
            .expect("kept manifest");
        for b in &m.record.blobs {
            assert!(s.stat_blob(&repo, &b.digest).await.is_ok(), "kept blob");
        }
        drop(pin);
        let r = s.gc(&now).await.expect("gc");
        assert_eq!(
            r.blobs_deleted, 1,
            "the pin is gone, and so is the blob: {r:?}"
        );
        let r = s.gc(&now).await.expect("gc");
        assert_eq!(r.blobs_deleted, 0, "{r:?}");
        // fsck re-hashes through the contract too, and repairs through it.
        let f = s.fsck(false).await.expect("fsck");
        assert!(f.clean && f.blobs_checked == 3, "{f:?}");
        let f = s.fsck(true).await.expect("repair");
        assert!(f.clean && f.quarantined.is_empty(), "{f:?}");
    }

    #[tokio::test]
    async fn sweeps_only_old_unreferenced_unpinned_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("app");
        let m = push_image(&s, &repo, "a", Some("v1")).await;
        let stray = sha(b"linked but unused");
        s.push_blob(&repo, &stray, &b"linked but unused"[..])
            .await
            .expect("push");
        let unlinked = s
            .ingest_blob(
                None,
                Algorithm::Sha256,
                &b"imported, not yet committed"[..],
                Ingest::default(),
            )
            .await
            .expect("ingest")
            .0
            .digest;
        // Young: nothing goes.
        let r = s.gc(&opts(true)).await.expect("gc");
        assert_eq!((r.blobs_deleted, r.links_dropped), (0, 0), "{r:?}");
        age_everything(dir.path());
        let pin = s.pin_blob(&unlinked).await;
        let dry = s
            .gc(&GcOptions {
                dry_run: true,
                ..opts(true)
            })
            .await
            .expect("dry");
        assert_eq!((dry.blobs_deleted, dry.links_dropped), (1, 1), "{dry:?}");
        assert!(s.blob_exists(&stray).await.expect("stat") && s.repo_has_blob(&repo, &stray));
        let r = s.gc(&opts(true)).await.expect("gc");
        assert_eq!((r.blobs_deleted, r.links_dropped), (1, 1), "{r:?}");
        assert!(!s.blob_exists(&stray).await.expect("stat") && !s.repo_has_blob(&repo, &stray));
        assert!(s.blob_exists(&unlinked).await.expect("stat"), "pinned");
        drop(pin);
        let r = s.gc(&opts(true)).await.expect("gc");
        assert_eq!(r.blobs_deleted, 1);
        assert!(!s.blob_exists(&unlinked).await.expect("stat"));
        // The tagged image is whole.
        let got = s
            .get_manifest(&repo, &Reference::parse("v1").expect("t"))
            .await
            .expect("get");
        assert_eq!(got.record.digest, m);
        for b in &got.record.blobs {
            assert!(s.stat_blob(&repo, &b.digest).await.is_ok());
        }
        assert!(s.fsck(false).await.expect("fsck").clean);
    }

    #[tokio::test]
    async fn the_report_says_what_the_grace_window_kept_and_until_when() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let r = name("r");
        let d = sha(b"fresh and alone");
        s.push_blob(&r, &d, &b"fresh and alone"[..])
            .await
            .expect("push");
        push_image(&s, &r, "kept", Some("v1")).await;
        let before = SystemTime::now();
        let report = s.gc(&opts(false)).await.expect("gc");
        assert_eq!((report.blobs_deleted, report.held_back.blobs), (0, 1));
        assert_eq!(report.held_back.bytes, 15);
        let due = report.held_back.earliest_collectable.expect("a time");
        assert_eq!(Some(&due), report.held_back.latest_collectable.as_ref());
        let due = humantime::parse_rfc3339(&due).expect("RFC 3339");
        let grace = GcOptions::default().grace;
        assert!(due + Duration::from_secs(2) >= before + grace, "{due:?}");
        assert!(due <= SystemTime::now() + grace, "{due:?}");

        let zero = GcOptions {
            grace: Duration::ZERO,
            ..opts(false)
        };
        let report = s.gc(&zero).await.expect("gc");
        assert_eq!((report.blobs_deleted, report.bytes_freed), (1, 15));
        assert_eq!(report.held_back.blobs, 0);
        assert!(report.held_back.earliest_collectable.is_none());
    }

    #[tokio::test]
    async fn a_claimed_blob_survives_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let d = s
            .ingest_blob(
                None,
                Algorithm::Sha256,
                &b"for the import"[..],
                Ingest::default(),
            )
            .await
            .expect("ingest")
            .0
            .digest;
        assert!(s
            .claim_blob(&sha(b"absent"))
            .await
            .expect("claim")
            .is_none());
        age_everything(dir.path());
        let claim = s.claim_blob(&d).await.expect("claim").expect("present");
        let zero = GcOptions {
            grace: Duration::ZERO,
            ..GcOptions::default()
        };
        assert_eq!(s.gc(&zero).await.expect("gc").blobs_deleted, 0);
        drop(claim);
        assert_eq!(s.gc(&zero).await.expect("gc").blobs_deleted, 1);
    }

    #[tokio::test]
    async fn rewriting_an_old_blob_protects_it_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let d = s
            .ingest_blob(None, Algorithm::Sha256, &b"x"[..], Ingest::default())
            .await
            .expect("ingest")
            .0
            .digest;
        age_everything(dir.path());
        let again = s
            .ingest_blob(None, Algorithm::Sha256, &b"x"[..], Ingest::default())
            .await
            .expect("ingest");
        assert!(again.0.existed);
        let r = s.gc(&opts(false)).await.expect("gc");
        assert_eq!(r.blobs_deleted, 0);
        assert!(s.blob_exists(&d).await.expect("stat"));
    }

    #[tokio::test]
    async fn untagged_policy_keeps_children_and_referrers_of_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("app");
        let a = push_image(&s, &repo, "a", None).await;
        let b = push_image(&s, &repo, "b", None).await;
        let lone = push_image(&s, &repo, "lone", None).await;
        let size = |d: &Digest| {
            s.stat_manifest(&repo, &Reference::Digest(d.clone()))
                .expect("m")
                .size as usize
        };
        let idx = index(&[(&a, size(&a)), (&b, size(&b))]);
        s.put_manifest(
            &repo,
            &Reference::parse("multi").expect("t"),
            OCI_INDEX,
            &idx,
            &[],
            true,
        )
        .await
        .expect("index");
        // A referrer (signature) of the tagged index, itself untagged.
        let cfg = sha(b"{}");
        s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
        let sig = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{cfg}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_INDEX}","digest":"{}","size":{}}}}}"#,
            sha(&idx),
            idx.len()
        );
        let sig_d = sha(sig.as_bytes());
        s.put_manifest(
            &repo,
            &Reference::Digest(sig_d.clone()),
            OCI_MANIFEST,
            sig.as_bytes(),
            &[],
            true,
        )
        .await
        .expect("sig");
        age_everything(dir.path());
        let kept_all = s.gc(&opts(false)).await.expect("gc");
        assert!(kept_all.manifests_deleted.is_empty());
        let r = s.gc(&opts(true)).await.expect("gc");
        let gone: Vec<&Digest> = r.manifests_deleted.iter().map(|x| &x.digest).collect();
        assert_eq!(gone, [&lone], "{r:?}");
        for d in [&a, &b, &sig_d] {
            assert!(s.repo_has_manifest(&repo, d));
        }
        // lone's config and layer went with it; its bytes too.
        assert_eq!(r.links_dropped, 2);
        assert_eq!(r.blobs_deleted, 3);
        assert!(s.fsck(false).await.expect("fsck").clean);
    }

    /// Issue 10, defect 3: deleting a child while an index lists it left a dangling index
    /// that fsck could not repair. Now it is refused until the index goes; with the opt-in
    /// (Distribution's behaviour) the index stays, reported, and repair converges.
    #[tokio::test]
    async fn deleting_a_child_an_index_lists_is_refused_and_fsck_converges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("app");
        let a = push_image(&s, &repo, "a", None).await;
        let b = push_image(&s, &repo, "b", None).await;
        let size = |d: &Digest| {
            s.stat_manifest(&repo, &Reference::Digest(d.clone()))
                .expect("m")
                .size as usize
        };
        let idx = index(&[(&a, size(&a)), (&b, size(&b))]);
        let idx_d = sha(&idx);
        let tag = Reference::parse("multi").expect("t");
        s.put_manifest(&repo, &tag, OCI_INDEX, &idx, &[], true)
            .await
            .expect("index");
        let child = Reference::Digest(a.clone());
        match s
            .delete_manifest(&repo, &child, ManifestDelete::default())
            .await
        {
            Err(StoreError::Denied(m)) => assert!(m.contains(&idx_d.to_string()), "{m}"),
            other => panic!("child delete not refused: {other:?}"),
        }
        assert!(matches!(
            s.delete_manifest(
                &repo,
                &child,
                ManifestDelete {
                    orphans: true,
                    ..Default::default()
                }
            )
            .await,
            Err(StoreError::Denied(_))
        ));
        assert!(s.repo_has_manifest(&repo, &a));
        assert!(s.fsck(false).await.expect("fsck").clean);

        // The opt-in leaves the index with a missing child: reported, not a problem.
        s.delete_manifest(
            &repo,
            &child,
            ManifestDelete {
                even_if_listed: true,
                ..Default::default()
            },
        )
        .await
        .expect("opt-in delete");
        let r = s.fsck(false).await.expect("fsck");
        assert!(r.clean, "{r:?}");
        assert_eq!(r.missing_children.len(), 1, "{r:?}");
        assert_eq!(r.missing_children[0].digest, a);
        // A child whose bytes rot: repair drops it, keeps the index, and a second fsck is
        // clean (it was not: the child dropped became a problem nothing could fix).
        fs::write(layout::blob_path(dir.path(), &b), b"rotten").expect("rot");
        let r = s.fsck(false).await.expect("fsck");
        assert!(!r.clean, "{r:?}");
        let r = s.fsck(true).await.expect("repair");
        assert!(r.clean && r.manifests_dropped == 1, "{r:?}");
        let r = s.fsck(false).await.expect("fsck after repair");
        assert!(r.clean && r.problems.is_empty(), "{r:?}");
        assert_eq!(r.missing_children.len(), 2, "{r:?}");
        assert!(s.get_manifest(&repo, &tag).await.is_ok(), "the index stays");

        // Index first, then each child: what clients and the conformance suites do.
        s.delete_manifest(&repo, &Reference::Digest(idx_d), ManifestDelete::default())
            .await
            .expect("index");
        let c = push_image(&s, &repo, "c", None).await;
        s.delete_manifest(&repo, &Reference::Digest(c), ManifestDelete::default())
            .await
            .expect("a child no index lists");
    }

    #[tokio::test]
    async fn deleting_an_index_takes_its_orphaned_children_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("app");
        let a = push_image(&s, &repo, "a", None).await;
        let b = push_image(&s, &repo, "b", Some("b-tag")).await;
        let c = push_image(&s, &repo, "c", None).await;
        let size = |d: &Digest| {
            s.stat_manifest(&repo, &Reference::Digest(d.clone()))
                .expect("m")
                .size as usize
        };
        let i1 = index(&[(&a, size(&a)), (&b, size(&b)), (&c, size(&c))]);
        let i2 = index(&[(&c, size(&c))]);
        for (t, body) in [("one", &i1), ("two", &i2)] {
            s.put_manifest(
                &repo,
                &Reference::parse(t).expect("t"),
                OCI_INDEX,
                body,
                &[],
                true,
            )
            .await
            .expect("index");
        }
        // Its blobs are referenced: deleting one is refused.
        let layer = sha(b"layer a");
        assert!(matches!(
            s.delete_blob(&repo, &layer, BlobDelete::default()).await,
            Err(StoreError::Denied(_))
        ));
        s.delete_manifest(
            &repo,
            &Reference::Digest(sha(&i1)),
            ManifestDelete {
                orphans: true,
                ..Default::default()
            },
        )
        .await
        .expect("delete");
        assert!(!s.repo_has_manifest(&repo, &a), "orphaned child goes");
        assert!(s.repo_has_manifest(&repo, &b), "tagged child stays");
        assert!(
            s.repo_has_manifest(&repo, &c),
            "child of another index stays"
        );
        s.delete_blob(&repo, &layer, BlobDelete::default())
            .await
            .expect("now unreferenced");
        // Deleting everything empties the repository out of the catalog.
        s.delete_repo(&repo).await.expect("delete repo");
        assert!(s.catalog(None, None).items.is_empty());
        assert!(matches!(
            s.delete_repo(&repo).await,
            Err(StoreError::NameUnknown(_))
        ));
        let tag = Tag::parse("b-tag").expect("t");
        assert!(s.resolve_tag(&repo, &tag).is_none());
    }

    #[tokio::test]
    async fn a_slow_chunked_upload_gets_a_fresh_grace_window_when_it_finishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("r");
        let id = s.start_upload(&repo, None, "t").await.expect("start");
        s.append_upload(&repo, &id, Some(0), None, &b"slow bytes"[..])
            .await
            .expect("chunk");
        // The last chunk arrived two hours ago.
        let data = uploads::data_path(&layout::upload_dir(dir.path(), &id));
        fs::File::open(&data)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(7200)))
            .expect("age");
        let d = sha(b"slow bytes");
        s.finish_upload(&repo, &id, &d, &b""[..])
            .await
            .expect("finish");
        let r = s.gc(&opts(false)).await.expect("gc");
        assert_eq!((r.links_dropped, r.blobs_deleted), (0, 0), "{r:?}");
        assert!(s.repo_has_blob(&repo, &d));
    }

    #[tokio::test]
    async fn idle_uploads_expire_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("r");
        let old = s.start_upload(&repo, None, "t").await.expect("start");
        let fresh = s.start_upload(&repo, None, "t").await.expect("start");
        s.set_max_open_uploads(Some(2));
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        let dir_of = |id: &UploadId| layout::upload_dir(dir.path(), id);
        for p in [uploads::data_path(&dir_of(&old)), dir_of(&old)] {
            fs::File::open(&p)
                .and_then(|f| f.set_modified(two_hours_ago))
                .expect("age");
        }
        assert_eq!(
            s.expire_uploads(Duration::from_secs(3600))
                .await
                .expect("expire"),
            1
        );
        assert!(s.upload_status(&repo, &old).await.is_err());
        assert_eq!(s.upload_status(&repo, &fresh).await.expect("fresh"), 0);
        // The expired session's slot under `max_open_uploads` is free again.
        assert_eq!(s.open_uploads(), 1);
        s.start_upload(&repo, None, "t")
            .await
            .expect("slot freed by expiry");
    }

    /// Pushes of images (blobs, then manifest) race GCs with no grace at all. Pushes may be
    /// refused (GC dropped a blob link the manifest needed) but the store must never be left
    /// with a reference to a missing file, and every acknowledged manifest stays whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gc_racing_pushes_never_leaves_a_dangling_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let zero = GcOptions {
            grace: Duration::ZERO,
            delete_untagged: false,
            ..GcOptions::default()
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gcs = {
            let (s, stop, zero) = (s.clone(), Arc::clone(&stop), zero.clone());
            tokio::spawn(async move {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.gc(&zero).await.expect("gc");
                    runs += 1;
                    tokio::task::yield_now().await;
                }
                runs
            })
        };
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let repo = name(&format!("r{w}"));
                let mut acked = Vec::new();
                for i in 0..40 {
                    // Shared blobs across workers make "already present" common.
                    let cfg = format!("{{\"i\":{}}}", i % 5);
                    let layer = format!("layer {}", i % 7);
                    let (c, l) = (sha(cfg.as_bytes()), sha(layer.as_bytes()));
                    let body = image(&c, &l);
                    let tag = Reference::parse(&format!("t{i}")).expect("t");
                    // As a client would: a refused manifest means "push the blobs again".
                    for _attempt in 0..50 {
                        s.push_blob(&repo, &c, cfg.as_bytes()).await.expect("cfg");
                        s.push_blob(&repo, &l, layer.as_bytes()).await.expect("l");
                        match s
                            .put_manifest(&repo, &tag, OCI_MANIFEST, &body, &[], true)
                            .await
                        {
                            Ok(_) => {
                                acked.push((repo.clone(), tag.clone(), body.clone()));
                                break;
                            }
                            Err(StoreError::ManifestBlobUnknown(_)) => {}
                            Err(e) => panic!("unexpected: {e}"),
                        }
                    }
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.expect("join"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = gcs.await.expect("gc task");
        assert!(runs > 0);
        assert!(!acked.is_empty());
        s.gc(&zero).await.expect("final gc");
        for (repo, tag, body) in &acked {
            let m = s.get_manifest(repo, tag).await.expect("acked manifest");
            assert_eq!(&m.bytes[..], &body[..]);
            for b in &m.record.blobs {
                let (_, n) = s.open_blob(repo, &b.digest).await.expect("acked blob");
                assert!(n > 0);
            }
        }
        let report = s.fsck(false).await.expect("fsck");
        assert!(report.clean, "{report:?}");
    }

    fn tag_at(repo: &RepoName, t: &str, d: &Digest, at: Option<u64>) -> Op {
        Op::Tag {
            repo: repo.clone(),
            tag: Tag::parse(t).expect("tag"),
            digest: d.clone(),
            at,
        }
    }

    #[tokio::test]
    async fn retention_keeps_newest_tags_and_what_bundles_and_imports_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("team/app");
        let other = name("other/app");
        let mut d = Vec::new();
        for seed in [
            "old", "mid", "new", "legacy", "bundled", "imported", "loose",
        ] {
            d.push(push_image(&s, &repo, seed, None).await);
        }
        push_image(&s, &other, "x", Some("x1")).await;
        push_image(&s, &other, "y", Some("x2")).await;
        let imgpkg = format!("sha256-{}.imgpkg", d[4].hex());
        let mut txn = Txn::new();
        txn.push(tag_at(&repo, "v-old", &d[0], Some(100)));
        txn.push(tag_at(&repo, "v-mid", &d[1], Some(200)));
        txn.push(tag_at(&repo, "v-new", &d[2], Some(300)));
        // As a journal written before tags had times: counts as oldest.
        txn.push(tag_at(&repo, "v-legacy", &d[3], None));
        // imgpkg's tag: the rule's matcher rejects it (as the server's always do), so it is
        // never counted nor dropped, and keeps its bundle.
        txn.push(tag_at(&repo, &imgpkg, &d[4], Some(1)));
        txn.push(tag_at(&repo, "v-bundle", &d[4], Some(50)));
        // An import whose tag is alive keeps every manifest it brought (d[5] is untagged).
        let mut rec = crate::ImportRecord::new(repo.clone());
        rec.manifests = vec![d[4].clone(), d[5].clone()];
        rec.tags = vec![crate::ImportedTag {
            tag: Tag::parse(&imgpkg).expect("t"),
            digest: d[4].clone(),
        }];
        txn.record_import(rec);
        s.commit(txn).await.expect("commit");
        age_everything(dir.path());
        let rule = Retention {
            name: "test".into(),
            repos: Arc::new(|r: &str| r.starts_with("team/")),
            tags: Arc::new(|t: &str| t.starts_with("v-")),
            keep_newest: Some(2),
            untagged_older_than: Some(Duration::from_secs(60)),
        };
        let o = GcOptions {
            grace: Duration::ZERO,
            retention: vec![rule],
            ..GcOptions::default()
        };
        let r = s.gc(&o).await.expect("gc");
        let dropped: Vec<&str> = r.tags_dropped.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(dropped, ["v-bundle", "v-legacy", "v-old"], "{r:?}");
        let tags = s.tags(&repo, None, None).expect("tags").items;
        assert_eq!(tags, [imgpkg.as_str(), "v-mid", "v-new"]);
        let gone: HashSet<&Digest> = r.manifests_deleted.iter().map(|m| &m.digest).collect();
        assert_eq!(gone, HashSet::from([&d[0], &d[3], &d[6]]), "{r:?}");
        for kept in [&d[1], &d[2], &d[4], &d[5]] {
            assert!(s.repo_has_manifest(&repo, kept));
        }
        // The rule's repositories only.
        assert_eq!(s.tags(&other, None, None).expect("t").items, ["x1", "x2"]);
        assert!(s.fsck(false).await.expect("fsck").clean);
        // Tag times survive a restart (the journal, compacted or not).
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        let again = s.gc(&o).await.expect("gc");
        assert!(again.tags_dropped.is_empty(), "{again:?}");
    }

    #[test]
    fn a_tag_op_without_a_time_still_loads() {
        let json = format!(
            r#"{{"op":"tag","repo":"a/b","tag":"t","digest":"{}"}}"#,
            sha(b"x")
        );
        let op: Op = serde_json::from_str(&json).expect("old op");
        assert!(matches!(op, Op::Tag { at: None, .. }));
    }
}
