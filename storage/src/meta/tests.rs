//! The metadata journal's tests that run against both journals (the file and PostgreSQL),
//! and the tests of replicas sharing one PostgreSQL database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::meta::Compacted;

use crate::blobstore::fs::FsBlobStore;
use crate::blobstore::opened;
use crate::pgtest::Postgres;
use crate::tests::{manifest_json, name};
use crate::*;

/// Stores opened on one journal kind, with their blobs in one shared directory (as replicas
/// share a bucket), each on its own data dir.
struct Rig {
    pg: Option<Postgres>,
    url: Option<String>,
    blobs: tempfile::TempDir,
}

impl Rig {
    fn file() -> Rig {
        Rig::with(None)
    }

    fn postgres() -> Rig {
        Rig::with(Some(Postgres::start()))
    }

    fn with(pg: Option<Postgres>) -> Rig {
        let blobs = tempfile::tempdir().expect("tempdir");
        layout::prepare(blobs.path()).expect("blob dir");
        let url = pg.as_ref().map(Postgres::database);
        Rig { pg, url, blobs }
    }

    async fn try_open(&self, dir: &Path) -> Result<Store, StoreError> {
        let blobs = Box::new(FsBlobStore::new(self.blobs.path()));
        Store::open_with_metadata(dir, Some(opened(blobs)), self.url.as_deref()).await
    }

    async fn open(&self, dir: &Path) -> Store {
        self.try_open(dir).await.expect("open")
    }

    /// Two replicas, each on a data dir of its own (the dirs live as long as the first field).
    async fn pair(&self) -> ([tempfile::TempDir; 2], Store, Store) {
        let dirs = [
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        ];
        let a = self.open(dirs[0].path()).await;
        let b = self.open(dirs[1].path()).await;
        (dirs, a, b)
    }
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("tag")
}

/// Push a config and a layer into `repo` of `s`; the manifest naming them.
async fn push_image_blobs(s: &Store, repo: &RepoName) -> Vec<u8> {
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    s.push_blob(repo, &cfg, &b"{}"[..]).await.expect("cfg");
    s.push_blob(repo, &layer, &b"layer"[..])
        .await
        .expect("layer");
    manifest_json(&cfg, &layer)
}

/// Put manifest `body` into `repo` of `s` under tag `t`.
async fn put_tagged(
    s: &Store,
    repo: &RepoName,
    t: &str,
    body: &[u8],
) -> Result<Arc<ManifestRecord>, StoreError> {
    let reference = Reference::parse(t).expect("ref");
    s.put_manifest(repo, &reference, OCI_MANIFEST, body, &[], true)
        .await
}

/// A commit is checked before it is journalled, a refused one changes nothing, and what
/// was committed is what a reopened store replays.
async fn commit_check_replay(rig: &Rig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = rig.open(dir.path()).await;
    let repo = name("r");
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    let body = manifest_json(&cfg, &layer);
    let v1 = Reference::parse("v1").expect("ref");
    s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
    let missing = s
        .put_manifest(&repo, &v1, OCI_MANIFEST, &body, &[], true)
        .await;
    assert!(matches!(missing, Err(StoreError::ManifestBlobUnknown(d)) if d == layer));
    assert!(s.resolve_tag(&repo, &tag("v1")).is_none());
    // A tag of a manifest the repository does not hold is refused by the check too.
    let mut dangling = Txn::new();
    dangling.tag(repo.clone(), tag("v2"), layer.clone());
    assert!(matches!(
        s.commit(dangling).await,
        Err(StoreError::ManifestUnknown(_))
    ));
    s.push_blob(&repo, &layer, &b"layer"[..])
        .await
        .expect("layer");
    let m = s
        .put_manifest(&repo, &v1, OCI_MANIFEST, &body, &[tag("v3")], true)
        .await
        .expect("manifest");
    s.delete_manifest(&repo, &Reference::Tag(tag("v3")), ManifestDelete::default())
        .await
        .expect("untag");
    drop(s);
    let s = rig.open(dir.path()).await;
    assert_eq!(s.resolve_tag(&repo, &tag("v1")), Some(m.digest.clone()));
    assert!(s.resolve_tag(&repo, &tag("v2")).is_none());
    assert!(s.resolve_tag(&repo, &tag("v3")).is_none());
    assert!(s.repo_has_blob(&repo, &layer));
    s.delete_manifest(
        &repo,
        &Reference::Digest(m.digest.clone()),
        ManifestDelete::default(),
    )
    .await
    .expect("delete");
    drop(s);
    let s = rig.open(dir.path()).await;
    assert!(
        s.resolve_tag(&repo, &tag("v1")).is_none(),
        "no dangling tag"
    );
    assert!(!s.repo_has_manifest(&repo, &m.digest));
}

#[tokio::test]
async fn commit_check_replay_on_the_file_journal() {
    commit_check_replay(&Rig::file()).await;
}

#[tokio::test]
async fn commit_check_replay_on_postgres() {
    commit_check_replay(&Rig::postgres()).await;
}

/// Everything in memory, as (repository, tag, digest) and (repository, manifest) rows.
type Snapshot = (Vec<(String, String, String)>, Vec<(String, String)>);

fn snapshot(s: &Store) -> Snapshot {
    let state = s.inner.meta.read();
    let mut tags = Vec::new();
    let mut manifests = Vec::new();
    for (r, repo) in &state.repos {
        for (t, e) in &repo.tags {
            tags.push((r.to_string(), t.to_string(), e.digest.to_string()));
        }
        for d in repo.manifests.keys() {
            manifests.push((r.to_string(), d.to_string()));
        }
    }
    manifests.sort();
    (tags, manifests)
}

#[tokio::test]
async fn a_commit_on_one_replica_is_read_by_another_after_its_sync() {
    let rig = Rig::postgres();
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = rig.open(da.path()).await;
    let b = rig.open(db.path()).await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    let m = put_tagged(&a, &repo, "v1", &body).await.expect("manifest");
    b.sync().await.expect("sync");
    assert_eq!(b.resolve_tag(&repo, &tag("v1")), Some(m.digest.clone()));
    // And the other way round: B's commit is checked against A's links, which it caught up.
    put_tagged(&b, &repo, "v2", &body)
        .await
        .expect("B tags A's manifest");
    a.sync().await.expect("sync");
    assert_eq!(a.resolve_tag(&repo, &tag("v2")), Some(m.digest.clone()));
    assert_eq!(snapshot(&a), snapshot(&b));
}

/// Replicas racing: one keeps pushing a manifest with tags, the other keeps deleting it.
/// Every commit was checked against all those before it, whatever replica made them: no
/// replica, nor a fresh one replaying the database, ever holds a tag without its manifest,
/// and all agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_serialize_into_one_history() {
    let rig = Rig::postgres();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let a = rig.open(dirs[0].path()).await;
    let b = rig.open(dirs[1].path()).await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    let digest = Digest::of(Algorithm::Sha256, &body);
    let pushes = {
        let (a, repo, body) = (a.clone(), repo.clone(), body.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                a.put_manifest(
                    &repo,
                    &Reference::parse("latest").expect("ref"),
                    OCI_MANIFEST,
                    &body,
                    &[tag(&format!("a{i}"))],
                    true,
                )
                .await
                .expect("push");
            }
        })
    };
    let deletes = {
        let (b, repo, digest) = (b.clone(), repo.clone(), digest.clone());
        tokio::spawn(async move {
            let mut deleted = 0;
            for _ in 0..40 {
                b.sync().await.expect("sync");
                match b
                    .delete_manifest(
                        &repo,
                        &Reference::Digest(digest.clone()),
                        ManifestDelete::default(),
                    )
                    .await
                {
                    Ok(()) => deleted += 1,
                    Err(StoreError::ManifestUnknown(_)) => {}
                    Err(e) => panic!("delete: {e}"),
                }
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    pushes.await.expect("pushes");
    let deleted = deletes.await.expect("deletes");
    assert!(deleted > 0, "the race happened");
    a.sync().await.expect("sync a");
    b.sync().await.expect("sync b");
    let c = rig.open(dirs[2].path()).await;
    let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(sa, sb);
    assert_eq!(sa, sc);
    for (r, t, d) in &sa.0 {
        assert!(
            sa.1.contains(&(r.clone(), d.clone())),
            "tag {r}:{t} names {d}, which is not held"
        );
    }
    let pg = rig.pg.as_ref().expect("pg");
    let url = rig.url.as_deref().expect("url");
    let seqs = pg.psql(
        url,
        "SELECT count(*) = count(DISTINCT seq) FROM airdock_txns",
    );
    assert_eq!(seqs, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once() {
    let rig = Rig::postgres();
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = tokio::join!(rig.try_open(da.path()), rig.try_open(db.path()));
    a.expect("a starts");
    b.expect("b starts");
    let pg = rig.pg.as_ref().expect("pg");
    let url = rig.url.as_deref().expect("url");
    assert_eq!(
        pg.psql(
            url,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM airdock_schema"
        ),
        "1,2,3"
    );
    // A database migrated by a newer airdock is refused, not misread.
    pg.psql(url, "INSERT INTO airdock_schema (version) VALUES (99)");
    let dc = tempfile::tempdir().expect("c");
    match rig.try_open(dc.path()).await {
        Err(StoreError::Unsupported(m)) => assert!(m.contains("schema version 99"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test]
async fn losing_the_database_is_unavailable_until_it_returns() {
    let mut rig = Rig::postgres();
    let dir = tempfile::tempdir().expect("dir");
    let s = rig.open(dir.path()).await;
    let repo = name("r");
    let one = Digest::of(Algorithm::Sha256, b"one");
    s.push_blob(&repo, &one, &b"one"[..]).await.expect("push");
    rig.pg.as_mut().expect("pg").stop();
    assert!(matches!(s.sync().await, Err(StoreError::Unavailable(_))));
    let two = Digest::of(Algorithm::Sha256, b"two");
    assert!(matches!(
        s.push_blob(&repo, &two, &b"two"[..]).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(!s.repo_has_blob(&repo, &two), "nothing half-applied");
    assert!(s.vitals().await.journal_error.is_some());
    rig.pg.as_mut().expect("pg").resume();
    s.sync().await.expect("sync after the database returned");
    s.push_blob(&repo, &two, &b"two"[..])
        .await
        .expect("push again");
    assert!(s.vitals().await.journal_error.is_none());
    drop(s);
    let s = rig.open(dir.path()).await;
    assert!(s.repo_has_blob(&repo, &one) && s.repo_has_blob(&repo, &two));
}

#[tokio::test]
async fn a_data_dir_keeps_to_one_kind_of_journal() {
    let rig = Rig::postgres();
    let dir = tempfile::tempdir().expect("dir");
    let d = Digest::of(Algorithm::Sha256, b"x");
    {
        let s = Store::open(dir.path()).await.expect("local");
        s.push_blob(&name("a"), &d, &b"x"[..]).await.expect("push");
    }
    // Its own metadata would be silently set aside: refused.
    match rig.try_open(dir.path()).await {
        Err(StoreError::Unsupported(m)) => assert!(m.contains("migrate-metadata"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a data dir with a local journal opened on PostgreSQL"),
    }
    // And a data dir served on PostgreSQL is not opened without it (empty metadata).
    let other = tempfile::tempdir().expect("other");
    drop(rig.open(other.path()).await);
    match Store::open(other.path()).await {
        Err(StoreError::Unsupported(m)) => assert!(m.contains("metadata.url"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a PostgreSQL data dir opened with a local journal"),
    }
}

/// `migrate-metadata`: a single node's journal goes into an empty database whole, the data
/// dir then serves from the database; a bound data dir or a database holding metadata is
/// refused and nothing changes.
#[tokio::test]
async fn a_single_nodes_journal_moves_into_postgres_whole() {
    let rig = Rig::postgres();
    let url = rig.url.as_deref().expect("url");
    let dir = tempfile::tempdir().expect("dir");
    let local = |dir: &Path| {
        let blobs = Box::new(FsBlobStore::new(rig.blobs.path()));
        Store::open_with_metadata(dir.to_owned(), Some(opened(blobs)), None)
    };
    let s = local(dir.path()).await.expect("local");
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    let body = manifest_json(&cfg, &layer);
    for repo in ["a", "b/c"] {
        let repo = name(repo);
        s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
        s.push_blob(&repo, &layer, &b"layer"[..])
            .await
            .expect("layer");
        let v1 = Reference::parse("v1").expect("ref");
        s.put_manifest(&repo, &v1, OCI_MANIFEST, &body, &[tag("v2")], true)
            .await
            .expect("manifest");
    }
    let before = snapshot(&s);
    drop(s);
    let report = migrate_metadata(dir.path(), url).await.expect("migrate");
    assert_eq!(
        (report.repositories, report.manifests, report.tags),
        (2, 2, 4)
    );
    assert!(!layout::journal_path(dir.path()).exists());
    assert!(layout::migrated_journal_path(dir.path()).exists());
    let s = rig.open(dir.path()).await;
    assert_eq!(snapshot(&s), before);
    let other = tempfile::tempdir().expect("other");
    assert_eq!(
        snapshot(&rig.open(other.path()).await),
        before,
        "any replica"
    );
    drop(s);
    match migrate_metadata(dir.path(), url).await {
        Err(StoreError::Unsupported(m)) => assert!(m.contains("PostgreSQL database"), "{m}"),
        other => panic!("a bound data dir migrated again: {other:?}"),
    }
    let second = tempfile::tempdir().expect("second");
    let s = local(second.path()).await.expect("local");
    s.push_blob(&name("z"), &cfg, &b"{}"[..])
        .await
        .expect("push");
    drop(s);
    match migrate_metadata(second.path(), url).await {
        Err(StoreError::Unsupported(m)) => assert!(m.contains("already holds metadata"), "{m}"),
        other => panic!("merged into a database with metadata: {other:?}"),
    }
    let s = local(second.path()).await.expect("still a single node");
    assert!(s.repo_exists(&name("z")));
    assert_eq!(
        snapshot(&rig.open(tempfile::tempdir().expect("t").path()).await),
        before,
        "the database is unchanged"
    );
}

/// GC over replicas: one run at a time, and a run on A while B pushes never leaves a tag,
/// manifest or link naming a missing blob on any replica. B's push may be refused cleanly
/// (the grace window here is zero, so a blob pushed and linked but not yet named by a
/// manifest is garbage, as on a single node) but never acknowledged with something missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_on_one_replica_while_another_pushes_loses_nothing_reachable() {
    let pg = Postgres::start();
    let url = pg.database();
    let blobs = crate::blobstore::memory::MemBlobStore::new();
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let open = |dir: &Path| {
        let blobs: Box<dyn BlobStore> = Box::new(blobs.clone());
        Store::open_with_metadata(dir.to_owned(), Some(opened(blobs)), Some(&url))
    };
    let a = open(da.path()).await.expect("a");
    let b = open(db.path()).await.expect("b");
    let opts = GcOptions {
        grace: std::time::Duration::ZERO,
        ..GcOptions::default()
    };
    // Garbage: stored, never linked.
    let mut junk = Vec::new();
    for i in 0..20u32 {
        let bytes = format!("junk {i}").into_bytes();
        let d = Digest::of(Algorithm::Sha256, &bytes);
        a.ingest_blob(Some(&d), Algorithm::Sha256, &bytes[..], Ingest::default())
            .await
            .expect("junk");
        junk.push(d);
    }
    // Released pins reach the shared marks lazily (within a second).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // One GC over all replicas at a time.
    let held = a.inner.meta.gc_lock().await.expect("lock").expect("free");
    assert!(matches!(b.gc(&opts).await, Err(StoreError::Busy(_))));
    drop(held);
    let repo = name("r");
    let pushes = {
        let b = b.clone();
        let repo = repo.clone();
        tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            for i in 0..30u32 {
                let cfg_bytes = format!("{{\"i\":{i}}}").into_bytes();
                let cfg = Digest::of(Algorithm::Sha256, &cfg_bytes);
                let layer_bytes = format!("layer {i}").into_bytes();
                let layer = Digest::of(Algorithm::Sha256, &layer_bytes);
                let pushed = async {
                    b.push_blob(&repo, &cfg, &cfg_bytes[..]).await?;
                    b.push_blob(&repo, &layer, &layer_bytes[..]).await?;
                    let body = manifest_json(&cfg, &layer);
                    let t = Reference::parse(&format!("t{i}")).expect("ref");
                    b.put_manifest(&repo, &t, OCI_MANIFEST, &body, &[], true)
                        .await
                };
                match pushed.await {
                    Ok(_) => ok += 1,
                    // Refused cleanly: a blob linked but not yet referenced went with A's GC
                    // (grace zero) before B's manifest commit checked it.
                    Err(
                        StoreError::ManifestBlobUnknown(_)
                        | StoreError::BlobUnknown(_)
                        | StoreError::ManifestUnknown(_),
                    ) => refused += 1,
                    Err(e) => panic!("push {i}: {e}"),
                }
            }
            (ok, refused)
        })
    };
    let mut runs = 0;
    while !pushes.is_finished() {
        a.gc(&opts).await.expect("gc");
        runs += 1;
    }
    let (ok, refused) = pushes.await.expect("pushes");
    assert!(
        runs > 1 && ok > 0,
        "runs {runs}, pushed {ok}, refused {refused}"
    );
    for d in &junk {
        assert!(!a.blob_exists(d).await.expect("stat"), "garbage collected");
    }
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    for s in [&a, &b] {
        let named = named_blobs(s);
        for d in named {
            assert!(
                s.blob_exists(&d).await.expect("stat"),
                "{d} is named but gone"
            );
        }
    }
    assert_eq!(snapshot(&a), snapshot(&b));
}

/// Every blob `s`'s metadata names (links, manifests' own bytes, their layers and configs),
/// after checking that every tag names a manifest held.
fn named_blobs(s: &Store) -> Vec<Digest> {
    let state = s.inner.meta.read();
    for (r, repo) in &state.repos {
        for (t, e) in &repo.tags {
            let m = repo.manifests.get(&e.digest);
            assert!(m.is_some(), "{r}:{t} names a manifest it does not hold");
        }
    }
    state
        .repos
        .values()
        .flat_map(|repo| {
            let links = repo.blobs.iter().cloned();
            let own = repo.manifests.keys().cloned();
            let refs = repo
                .manifests
                .values()
                .flat_map(|m| m.blobs.iter().map(|b| b.digest.clone()));
            links.chain(own).chain(refs).collect::<Vec<_>>()
        })
        .collect()
}

/// Tag `n` names (`prefix0`…) on the manifest `body` in `repo` of `s`, one commit each.
async fn tag_many(s: &Store, repo: &RepoName, body: &[u8], prefix: &str, n: usize) {
    for i in 0..n {
        put_tagged(s, repo, &format!("{prefix}{i}"), body)
            .await
            .expect("tag");
    }
}

async fn untag(s: &Store, repo: &RepoName, t: &Tag) -> Result<(), StoreError> {
    s.delete_manifest(repo, &Reference::Tag(t.clone()), ManifestDelete::default())
        .await
}

fn count(rig: &Rig, sql: &str) -> i64 {
    let pg = rig.pg.as_ref().expect("pg");
    let url = rig.url.as_deref().expect("url");
    pg.psql(url, sql).parse().expect("a number")
}

/// A snapshot replaces the journal rows it covers: a replica started afterwards loads it
/// and replays only the rows after it, and holds what the writer holds (tags removed before
/// the snapshot stay removed, tags set after it are there).
#[tokio::test]
async fn a_replica_starts_from_the_snapshot_and_the_rows_after_it() {
    let rig = Rig::postgres();
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = rig.open(da.path()).await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    tag_many(&a, &repo, &body, "old", 5).await;
    untag(&a, &repo, &tag("old0")).await.expect("untag");
    let done = a
        .inner
        .meta
        .snapshot_now(Duration::ZERO)
        .await
        .expect("snapshot");
    let Some(Compacted::Done { pruned }) = done else {
        panic!("no snapshot written");
    };
    assert!(pruned > 0);
    assert_eq!(
        count(&rig, "SELECT count(*) FROM airdock_txns"),
        0,
        "every row pruned"
    );
    assert_eq!(
        count(&rig, "SELECT count(DISTINCT seq) FROM airdock_snapshots"),
        1
    );
    tag_many(&a, &repo, &body, "new", 3).await;
    assert_eq!(count(&rig, "SELECT count(*) FROM airdock_txns"), 3);
    let b = rig.open(db.path()).await;
    assert_eq!(snapshot(&b), snapshot(&a));
    assert_eq!(b.resolve_tag(&repo, &tag("old0")), None);
    assert!(b.resolve_tag(&repo, &tag("new2")).is_some());
    // A second snapshot replaces the first; one at the same position is not written again.
    a.inner
        .meta
        .snapshot_now(Duration::ZERO)
        .await
        .expect("second");
    assert!(matches!(
        a.inner.meta.snapshot_now(Duration::ZERO).await,
        Ok(Some(Compacted::Newer(_)))
    ));
    assert_eq!(
        count(&rig, "SELECT count(DISTINCT seq) FROM airdock_snapshots"),
        1
    );
    let c = rig.open(tempfile::tempdir().expect("c").path()).await;
    assert_eq!(snapshot(&c), snapshot(&a));
}

/// A replica whose position is below the journal's floor (rows it has not applied were
/// pruned) must not apply the rows that are left as if nothing were missing: its catch-up,
/// and its commit (which checks against the database's latest state), reload it from the
/// snapshot instead. Rows still in their keep window are not pruned at all.
#[tokio::test]
async fn a_replica_behind_the_pruned_journal_reloads_instead_of_missing_rows() {
    let rig = Rig::postgres();
    let (_dirs, a, b) = rig.pair().await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    tag_many(&a, &repo, &body, "t", 4).await;
    b.sync().await.expect("b caught up");
    // Rows B has not read: a removal (B must not keep the tag) and new tags.
    untag(&a, &repo, &tag("t1")).await.expect("untag");
    tag_many(&a, &repo, &body, "u", 3).await;
    // Inside the keep window nothing is pruned, and B catches up row by row.
    let kept = a.inner.meta.snapshot_now(Duration::from_secs(3600)).await;
    assert!(matches!(kept, Ok(Some(Compacted::Done { pruned: 0 }))));
    let generation = b.generation();
    b.sync().await.expect("sync");
    assert_eq!(snapshot(&b), snapshot(&a));
    assert_eq!(
        b.generation() - generation,
        4,
        "four rows applied, no reload"
    );
    // Now behind a pruned stretch: catch-up reloads.
    untag(&a, &repo, &tag("t2")).await.expect("untag");
    tag_many(&a, &repo, &body, "v", 2).await;
    a.inner
        .meta
        .snapshot_now(Duration::ZERO)
        .await
        .expect("prune");
    tag_many(&a, &repo, &body, "w", 2).await;
    b.sync().await.expect("sync reloads");
    assert_eq!(snapshot(&b), snapshot(&a));
    assert_eq!(b.resolve_tag(&repo, &tag("t2")), None);
    // Behind again, and this time B commits first: its commit reloads under the lock.
    untag(&a, &repo, &tag("t3")).await.expect("untag");
    a.inner
        .meta
        .snapshot_now(Duration::ZERO)
        .await
        .expect("prune");
    put_tagged(&b, &repo, "from-b", &body)
        .await
        .expect("B commits");
    assert_eq!(b.resolve_tag(&repo, &tag("t3")), None);
    a.sync().await.expect("sync");
    assert_eq!(snapshot(&b), snapshot(&a));
}

/// Replicas racing while one of them keeps compacting (no keep window): tags set through
/// A, catch-ups and commits on B; every replica, and one started afterwards, ends with the
/// same state, and nothing acknowledged is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_racing_commits_and_catch_ups_loses_nothing() {
    let rig = Rig::postgres();
    let (_dirs, a, b) = rig.pair().await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    put_tagged(&a, &repo, "base", &body).await.expect("base");
    let writer = {
        let (a, repo, body) = (a.clone(), repo.clone(), body.clone());
        tokio::spawn(async move { tag_many(&a, &repo, &body, "a", 60).await })
    };
    let compactor = {
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                a.inner
                    .meta
                    .snapshot_now(Duration::ZERO)
                    .await
                    .expect("snapshot");
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 0..30 {
        b.sync().await.expect("sync");
        put_tagged(&b, &repo, &format!("b{i}"), &body)
            .await
            .expect("B tags");
    }
    writer.await.expect("writer");
    compactor.await.expect("compactor");
    a.sync().await.expect("a");
    b.sync().await.expect("b");
    let c = rig.open(tempfile::tempdir().expect("c").path()).await;
    let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(sa, sb);
    assert_eq!(sa, sc);
    assert_eq!(sa.0.len(), 1 + 60 + 30, "every acknowledged tag");
}

/// A commit that takes the journal past the threshold starts a snapshot by itself.
#[tokio::test]
async fn commits_past_the_threshold_write_a_snapshot() {
    let rig = Rig::postgres();
    let dir = tempfile::tempdir().expect("a");
    let a = rig.open(dir.path()).await;
    a.inner.meta.set_compaction(5, Duration::ZERO);
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    tag_many(&a, &repo, &body, "t", 8).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&rig, "SELECT count(*) FROM airdock_snapshots") == 0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count(&rig, "SELECT count(*) FROM airdock_txns") < 11);
    let b = rig.open(tempfile::tempdir().expect("b").path()).await;
    assert_eq!(snapshot(&b), snapshot(&a));
}

/// Start time of a replica over a journal of `AIRDOCK_PG_START_TAGS` tag rows (2,000 by
/// default; 100,000 to measure), before and after a snapshot; both loads give one state.
/// The rows are inserted by SQL (a commit each would take minutes at 100,000).
#[tokio::test]
async fn start_time_before_and_after_a_snapshot() {
    let n: u64 = std::env::var("AIRDOCK_PG_START_TAGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rig = Rig::postgres();
    let a = rig.open(tempfile::tempdir().expect("a").path()).await;
    let repo = name("r");
    let body = push_image_blobs(&a, &repo).await;
    let m = put_tagged(&a, &repo, "first", &body)
        .await
        .expect("manifest");
    let pg = rig.pg.as_ref().expect("pg");
    let url = rig.url.as_deref().expect("url");
    pg.psql(
        url,
        &format!(
            "INSERT INTO airdock_txns (body) SELECT jsonb_build_object('ops', jsonb_build_array(\
             jsonb_build_object('op', 'tag', 'repo', 'r', 'tag', 't' || i, 'digest', '{}', 'at', 1700000000 + i))) \
             FROM generate_series(1, {n}) AS i",
            m.digest
        ),
    );
    let timed_open = || async {
        let started = std::time::Instant::now();
        let s = rig.open(tempfile::tempdir().expect("s").path()).await;
        (started.elapsed(), s)
    };
    let (before, s1) = timed_open().await;
    let (tags, _) = snapshot(&s1);
    assert_eq!(tags.len() as u64, n + 1);
    s1.inner
        .meta
        .snapshot_now(Duration::ZERO)
        .await
        .expect("snapshot");
    let parts = count(&rig, "SELECT count(*) FROM airdock_snapshots");
    let (after, s2) = timed_open().await;
    assert_eq!(snapshot(&s2), snapshot(&s1));
    eprintln!(
        "start at {n} tags: {} ms replaying {} rows, {} ms from a snapshot of {parts} parts",
        before.as_millis(),
        n + 4,
        after.as_millis()
    );
}

/// The compacted form is cut into records of at most `SNAPSHOT_CHUNK` ops, never mixing
/// repositories, and replaying the records rebuilds the same state.
#[test]
fn compacted_records_are_chunked_per_repository_and_rebuild_the_state() {
    use crate::meta::{Op, Record, State, SNAPSHOT_CHUNK};
    let digest = Digest::of(Algorithm::Sha256, b"m");
    let mut state = State::default();
    for (repo, n) in [("r", 2 * SNAPSHOT_CHUNK + 500), ("s", 5)] {
        for i in 0..n {
            state.apply(Op::Tag {
                repo: name(repo),
                tag: tag(&format!("t{i}")),
                digest: digest.clone(),
                at: Some(1),
            });
        }
    }
    let bodies = state.record_bodies().expect("bodies");
    let records: Vec<Record> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("json"))
        .collect();
    let sizes: Vec<usize> = records.iter().map(|r| r.ops.len()).collect();
    assert_eq!(sizes, [SNAPSHOT_CHUNK, SNAPSHOT_CHUNK, 500, 5]);
    let mut rebuilt = State::default();
    for r in records {
        for op in r.ops {
            rebuilt.apply(op);
        }
    }
    let tags = |s: &State| -> Vec<(String, String)> {
        s.repos
            .iter()
            .flat_map(|(r, repo)| {
                repo.tags
                    .keys()
                    .map(move |t| (r.to_string(), t.to_string()))
            })
            .collect()
    };
    assert_eq!(tags(&rebuilt), tags(&state));
}

/// A test CA, and a server certificate it signed for `names` (PEM: CA, certificate, key).
fn test_ca_and_server(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Names and serials of their own: the leaf is told from its issuer without relying on
    // rcgen's defaults (the same default name for both).
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "airdock test CA");
    ca.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "airdock test database");
    params.serial_number = Some(rcgen::SerialNumber::from(2u64));
    let cert = params.signed_by(&key, &issuer).expect("cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// TLS to PostgreSQL, with libpq's modes: `verify-full` with the database's CA works and the
/// connections are encrypted (the server says so); a foreign CA or a certificate for another
/// host is refused with a message naming the certificate; `verify-ca` does not compare the
/// name; `require` encrypts without checking; a server without TLS refuses `require`.
#[tokio::test]
async fn metadata_over_tls_checks_the_database_certificate() {
    let mut pg = Postgres::start();
    let plain = pg.database();
    let secured = |url: &str, q: &str| format!("{url}?{q}");
    // Before TLS is on: asked for, it is not silently dropped.
    let dir = tempfile::tempdir().expect("dir");
    let refused =
        Store::open_with_metadata(dir.path(), None, Some(&secured(&plain, "sslmode=require")))
            .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{:?}",
        refused.err()
    );

    let (ca, cert, key) = test_ca_and_server(&["localhost", "127.0.0.1"]);
    let (other_ca, _, _) = test_ca_and_server(&["localhost"]);
    pg.enable_tls(&cert, &key);
    let files = tempfile::tempdir().expect("files");
    let ca_file = files.path().join("ca.pem");
    let other_file = files.path().join("other.pem");
    std::fs::write(&ca_file, &ca).expect("ca");
    std::fs::write(&other_file, &other_ca).expect("other");
    let full = |file: &Path| {
        secured(
            &plain,
            &format!("sslmode=verify-full&sslrootcert={}", file.display()),
        )
    };
    let open = |url: String| async move {
        let dir = tempfile::tempdir().expect("dir");
        let r = Store::open_with_metadata(dir.path(), None, Some(&url)).await;
        (dir, r)
    };
    let (_d1, s) = open(full(&ca_file)).await;
    let s = s.expect("verify-full with the database's CA");
    let d = Digest::of(Algorithm::Sha256, b"x");
    s.push_blob(&name("r"), &d, &b"x"[..])
        .await
        .expect("commit over TLS");
    let encrypted = pg.psql(
        &plain,
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'airdock' AND ssl",
    );
    assert_ne!(encrypted, "0", "airdock's connections use TLS");
    let (_d2, r) = open(full(&other_file)).await;
    match r {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("a foreign CA was accepted: {:?}", other.err()),
    }
    // A certificate for another host: refused by verify-full, taken by verify-ca.
    let (ca2, cert2, key2) = test_ca_and_server(&["db.elsewhere"]);
    pg.enable_tls(&cert2, &key2);
    std::fs::write(&ca_file, &ca2).expect("ca2");
    let (_d3, r) = open(full(&ca_file)).await;
    match r {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!(
            "a certificate for another host was accepted: {:?}",
            other.err()
        ),
    }
    let ca_only = secured(
        &plain,
        &format!("sslmode=verify-ca&sslrootcert={}", ca_file.display()),
    );
    let (_d4, r) = open(ca_only).await;
    let s = r.expect("verify-ca does not compare the name");
    assert!(s.repo_has_blob(&name("r"), &d));
    let (_d5, r) = open(secured(&plain, "sslmode=require")).await;
    r.expect("require: encrypted, unchecked");
}

/// Two replicas on one database and one blob directory, and a GC that takes everything
/// nothing references or pins within `grace`.
async fn two_replicas(rig: &Rig) -> (Store, Store, [tempfile::TempDir; 2]) {
    let dirs = [
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    ];
    let a = rig.open(dirs[0].path()).await;
    let b = rig.open(dirs[1].path()).await;
    (a, b, dirs)
}

fn gc_with(grace: std::time::Duration) -> GcOptions {
    GcOptions {
        grace,
        delete_untagged: true,
        ..GcOptions::default()
    }
}

/// An unlinked blob stored on B, which B then claims for a commit (a push that found it
/// present): GC on A, with no grace window, keeps it while B's pin holds, so B's commit
/// succeeds; once B lets go (published within a second), the next GC on A takes it.
/// Before pins were shared, A saw no pin and deleted it, and B's link was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_on_one_replica_keeps_gc_on_another_away() {
    let rig = Rig::postgres();
    let (a, b, _dirs) = two_replicas(&rig).await;
    let zero = gc_with(std::time::Duration::ZERO);
    let bytes = b"unreferenced for now".to_vec();
    let d = Digest::of(Algorithm::Sha256, &bytes);
    b.ingest_blob(Some(&d), Algorithm::Sha256, &bytes[..], Ingest::default())
        .await
        .expect("ingest");
    let pin = b.claim_blob(&d).await.expect("claim").expect("stored");
    let r = a.gc(&zero).await.expect("gc");
    assert_eq!(r.blobs_deleted, 0, "{r:?}");
    assert!(
        a.blob_exists(&d).await.expect("stat"),
        "pinned on B, deleted by A"
    );
    let repo = name("claimed");
    b.link(&repo, &d)
        .await
        .expect("B's commit of what it claimed");
    drop(pin);
    // Unlinked on B's side too, so that only the released pin could still keep it.
    b.delete_blob(&repo, &d, BlobDelete::default())
        .await
        .expect("unlink");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = a.gc(&zero).await.expect("gc");
    assert_eq!(r.blobs_deleted, 1, "a released pin still protects: {r:?}");
    assert!(!a.blob_exists(&d).await.expect("stat"));
}

/// A `HEAD` on B restarts the blob's grace window for GC on A too: a client that found a
/// blob present and skipped its upload can reference it in a manifest put right after.
/// Before uses were shared, A's clock only knew its own start, and A dropped the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_head_on_one_replica_restarts_the_window_for_gc_on_another() {
    let rig = Rig::postgres();
    let (a, b, _dirs) = two_replicas(&rig).await;
    let grace = std::time::Duration::from_secs(2);
    let repo = name("headed");
    let body = push_image_blobs(&b, &repo).await;
    // Past the window of the pushes' own uses (their pins' releases are published up to a
    // second late), so that only the HEADs below keep the blobs.
    tokio::time::sleep(grace + std::time::Duration::from_secs(2)).await;
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    b.stat_blob(&repo, &layer).await.expect("HEAD layer");
    b.stat_blob(&repo, &cfg).await.expect("HEAD config");
    let r = a.gc(&gc_with(grace)).await.expect("gc");
    assert_eq!(r.links_dropped, 0, "{r:?}");
    put_tagged(&b, &repo, "v1", &body)
        .await
        .expect("manifest put after the HEADs");
    // And what the window alone kept goes once it has passed: a second repository's link,
    // unreferenced and not used since.
    let other = name("stale");
    let bytes = b"stale".to_vec();
    let stale = Digest::of(Algorithm::Sha256, &bytes);
    b.push_blob(&other, &stale, &bytes[..]).await.expect("push");
    tokio::time::sleep(grace + std::time::Duration::from_secs(2)).await;
    let r = a.gc(&gc_with(grace)).await.expect("gc");
    assert_eq!((r.links_dropped, r.blobs_deleted), (1, 1), "{r:?}");
    assert!(!a.blob_exists(&stale).await.expect("stat"));
    assert!(a.blob_exists(&layer).await.expect("stat"));
}

/// A pin published while A's GC is deleting a batch waits for that batch (the mark gate):
/// so B looks at the blob only after A's deletes, and finds it gone rather than relying on
/// a blob about to vanish. Before, nothing on B waited for A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_waits_for_the_gc_batch_in_progress_on_another_replica() {
    let rig = Rig::postgres();
    let (a, b, _dirs) = two_replicas(&rig).await;
    let bytes = b"contended".to_vec();
    let d = Digest::of(Algorithm::Sha256, &bytes);
    b.ingest_blob(Some(&d), Algorithm::Sha256, &bytes[..], Ingest::default())
        .await
        .expect("ingest");
    // The ingest's own pin is released lazily (within a second): let it go first.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut gc = a.inner.meta.gc_lock().await.expect("lock").expect("free");
    gc.close_gate().await.expect("close");
    let claim = {
        let (b, d) = (b.clone(), d.clone());
        tokio::spawn(async move { b.claim_blob(&d).await.map(|p| p.is_some()) })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!claim.is_finished(), "the pin did not wait for the batch");
    // What the batch does meanwhile: it does not see the pin, and deletes.
    assert!(gc
        .marked(std::time::Duration::ZERO, Some(std::slice::from_ref(&d)))
        .await
        .expect("marks")
        .is_empty());
    a.inner.blobs.delete(&d).await.expect("delete");
    gc.open_gate().await;
    let found = claim.await.expect("join").expect("claim");
    assert!(!found, "B relied on a blob A deleted");
    gc.release().await;
}

/// One publication may name a digest twice (used now and released, in one batch): every
/// upsert must name each row once, or PostgreSQL refuses the whole statement and every
/// request that waits for it is a 503 (the conformance run over replicas found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_batch_naming_a_digest_twice_is_published() {
    let pg = Postgres::start();
    let url = pg.database();
    // Opening a store migrates the schema.
    let dir = tempfile::tempdir().expect("dir");
    let blobs: Box<dyn BlobStore> = Box::new(crate::blobstore::memory::MemBlobStore::new());
    let s = Store::open_with_metadata(dir.path().to_owned(), Some(opened(blobs)), Some(&url))
        .await
        .expect("open");
    let d = Digest::of(Algorithm::Sha256, b"twice");
    let mut link = super::pg::Link::new(super::Db::parse(&url).expect("url"));
    let batch = super::MarkBatch {
        touched: vec![d.clone(), d.clone()],
        held: vec![d.clone(), d.clone()],
        released: vec![d.clone()],
    };
    link.publish_marks("holder-a", &batch)
        .await
        .expect("a batch naming a digest twice is written");
    drop(s);
}
