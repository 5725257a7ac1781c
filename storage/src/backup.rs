//! Backup and restore of a data dir as one tar: a consistent metadata snapshot (an intact
//! prefix of the journal) and every blob it references, taken while a server runs.
//!
//! The tar holds, in this order: `airdock-backup.json` (format, time, counts), `meta/journal`
//! and `blobs/<alg>/<xx>/<hex>` for each blob, all regular files. No credentials: the admin
//! token and the token signing key stay out (see README, "Backup and restore").
//!
//! Why a backup of a running server is consistent (the race argument):
//! 1. The journal is append-only and every line is one whole transaction, written before it
//!    is applied; compaction replaces the file by a rename, never in place. The backup opens
//!    the file once, takes its length, and replays the intact lines of that prefix: a state
//!    that existed at a commit point. A line being appended is torn in the prefix and left
//!    out, as a restart would leave it out. (One narrow exception: a line written whole
//!    whose fdatasync then failed is cut back off by the server, which reports the commit
//!    as failed; a backup reading in between holds that transaction. Its blobs existed when
//!    it was checked, so the backup is still self-consistent; it is one commit "ahead".)
//! 2. Every blob that state names was a stored file at that commit (commits check file
//!    existence under the journal lock). Blob files are immutable and content-addressed: a
//!    second write of one renames identical bytes over it, so whatever file a name opens
//!    holds the same bytes, and an open file stays readable whatever happens to its name.
//! 3. Only GC removes a blob file, and only one nothing references at that moment. So a blob
//!    of the snapshot can vanish only if, after the snapshot, its references were dropped
//!    and GC ran past the grace window. The backup then finds the file missing (or its
//!    tar entry short) and starts over from a fresh snapshot, up to [`ATTEMPTS`] times. What
//!    it does copy is verified against its digest while it is written.
//!
//! The backup needs no lock and writes nothing in the data dir, so it works beside a server
//! and on a read-only copy. Restore writes through [`Store::ingest_blob`] (hashed while
//! written) under the store's exclusive lock and puts the journal in place last, by rename.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::blobs::{fsync_dir, TempFile};
use crate::meta::{replay, Replayed, State};
use crate::{layout, Digest, Hasher, Ingest, Store, StoreError};

/// The first entry of every backup, and its `format`.
const MARKER: &str = "airdock-backup.json";
const FORMAT: &str = "airdock-backup/1";
/// The journal's entry: its path under the data dir.
const JOURNAL: &str = "meta/journal";
/// A backup starts over at most this many times when GC removes a blob it was to copy.
pub const ATTEMPTS: u32 = 5;
/// Bound on the marker entry, which is read into memory.
const MAX_MARKER: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// The request cannot be carried out as asked (a non-empty target, a missing journal).
    #[error("{0}")]
    Refused(String),
    /// The backup file is damaged or not an airdock backup; names the tar entry.
    #[error("backup entry {entry}: {problem}")]
    BadEntry { entry: String, problem: String },
}

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BackupError {
    move |e| BackupError::Io(context.to_string(), e)
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    created: String,
    repositories: u64,
    manifests: u64,
    blobs: u64,
    blob_bytes: u64,
}

/// What a backup wrote.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub repositories: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub journal_bytes: u64,
    /// Snapshots taken: more than one when GC removed a blob mid-backup.
    pub attempts: u32,
}

/// What a restore brought back.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    pub repositories: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// Reads through, hashing and counting what passed.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// The tar path of blob `d`: its path under the data dir.
fn entry_name(d: &Digest) -> String {
    layout::blob_path(Path::new(""), d)
        .to_string_lossy()
        .into_owned()
}

/// Digests `state` needs as files (links and manifests), and those it names that may be
/// absent by design (non-distributable layers, a sparse push's children).
fn referenced(state: &State) -> (BTreeSet<Digest>, BTreeSet<Digest>) {
    let mut required = BTreeSet::new();
    let mut optional = BTreeSet::new();
    for repo in state.repos.values() {
        required.extend(repo.blobs.iter().cloned());
        for (d, m) in &repo.manifests {
            required.insert(d.clone());
            optional.extend(m.blobs.iter().map(|b| b.digest.clone()));
            optional.extend(m.manifests.iter().map(|c| c.digest.clone()));
        }
    }
    let optional = optional.difference(&required).cloned().collect();
    (required, optional)
}

fn counts(state: &State) -> (u64, u64) {
    let manifests: HashSet<&Digest> = state
        .repos
        .values()
        .flat_map(|r| r.manifests.keys())
        .collect();
    (state.repos.len() as u64, manifests.len() as u64)
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(0);
    h
}

/// Write a backup of the data dir `root` (served or not) to `to`, atomically: a temporary
/// file beside it, fsynced, renamed over `to`, the directory fsynced. Blocking.
pub fn backup(root: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    let journal = layout::journal_path(root);
    if !journal.is_file() {
        return Err(BackupError::Refused(format!(
            "{} has no {JOURNAL}: not an airdock data dir",
            root.display()
        )));
    }
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut last_gone = None;
    for attempt in 1..=ATTEMPTS {
        let (guard, file) = TempFile::create(&dir).map_err(io_err(dir.display()))?;
        match write_backup(root, file)? {
            Ok(mut report) => {
                fs::rename(guard.path(), to).map_err(io_err(to.display()))?;
                guard.disarm();
                fsync_dir(&dir).map_err(io_err(dir.display()))?;
                report.file = to.to_owned();
                report.attempts = attempt;
                return Ok(report);
            }
            Err(gone) => {
                tracing::warn!(
                    blob = %gone,
                    attempt,
                    "a blob of the snapshot was collected mid-backup; starting over from a fresh snapshot"
                );
                last_gone = Some(gone);
            }
        }
    }
    let gone = last_gone.map(|d| d.to_string()).unwrap_or_default();
    Err(BackupError::Refused(format!(
        "a blob the metadata references was missing in {ATTEMPTS} snapshots in a row (last \
         {gone}): either GC with a short --gc-grace keeps removing them (retry later) or the \
         data dir lost a file (run `airdock fsck`)"
    )))
}

/// One attempt: `Ok(Err(d))` when blob `d` of the snapshot vanished (GC) meanwhile.
fn write_backup(root: &Path, out: File) -> Result<Result<BackupReport, Digest>, BackupError> {
    let path = layout::journal_path(root);
    let mut journal = File::open(&path).map_err(io_err(path.display()))?;
    let end = journal.metadata().map_err(io_err(path.display()))?.len();
    let Replayed {
        state, good_len, ..
    } = replay(BufReader::new((&journal).take(end)), &path)?;
    let (required, optional) = referenced(&state);
    let (repositories, manifests) = counts(&state);
    drop(state);

    // The blobs to copy and their sizes (a stat each): the marker that comes first says
    // how many and how large.
    let mut blobs: Vec<(Digest, u64)> = Vec::with_capacity(required.len());
    for d in required.iter().chain(optional.iter()) {
        let p = layout::blob_path(root, d);
        match fs::metadata(&p) {
            Ok(m) => blobs.push((d.clone(), m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && required.contains(d) => {
                return Ok(Err(d.clone()));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::Io(p.display().to_string(), e)),
        }
    }
    let marker = Marker {
        format: FORMAT.into(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        repositories,
        manifests,
        blobs: blobs.len() as u64,
        blob_bytes: blobs.iter().map(|(_, n)| n).sum(),
    };
    let json =
        serde_json::to_vec_pretty(&marker).map_err(|e| StoreError::Io(io::Error::other(e)))?;
    let tar_err = io_err("writing the backup");
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    tar.append_data(&mut tar_header(json.len() as u64), MARKER, &json[..])
        .map_err(tar_err)?;

    // The journal prefix the snapshot was built from, byte for byte, from the same open
    // file: a compaction renaming a new journal in does not change what it holds.
    journal
        .seek(SeekFrom::Start(0))
        .map_err(io_err(path.display()))?;
    let mut prefix = Hashing {
        inner: (&journal).take(good_len),
        hasher: crate::Algorithm::Sha256.hasher(),
        n: 0,
    };
    tar.append_data(&mut tar_header(good_len), JOURNAL, &mut prefix)
        .map_err(io_err("writing the backup"))?;
    if prefix.n != good_len {
        return Err(BackupError::Refused(format!(
            "{} shrank while it was copied; retry",
            path.display()
        )));
    }

    for (d, len) in &blobs {
        let p = layout::blob_path(root, d);
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(d.clone())),
            Err(e) => return Err(BackupError::Io(p.display().to_string(), e)),
        };
        let mut blob = Hashing {
            inner: BufReader::with_capacity(1 << 20, file.take(*len)),
            hasher: d.algorithm().hasher(),
            n: 0,
        };
        tar.append_data(&mut tar_header(*len), entry_name(d), &mut blob)
            .map_err(io_err("writing the backup"))?;
        let actual = blob.hasher.finish();
        if blob.n != *len || actual != *d {
            return Err(BackupError::Refused(format!(
                "blob {d} in {} is damaged (its {} bytes hash to {actual}); run `airdock \
                 fsck --repair` on a stopped server, then back up again",
                root.display(),
                blob.n
            )));
        }
    }
    let out = tar
        .into_inner()
        .map_err(io_err("writing the backup"))?
        .into_inner()
        .map_err(|e| BackupError::Io("writing the backup".into(), e.into_error()))?;
    out.sync_all().map_err(io_err("writing the backup"))?;
    Ok(Ok(BackupReport {
        file: PathBuf::new(),
        repositories,
        manifests,
        blobs: marker.blobs,
        blob_bytes: marker.blob_bytes,
        journal_bytes: good_len,
        attempts: 0,
    }))
}

/// Restore the backup `from` into the data dir `root`, which must be empty or absent unless
/// `force` (then its metadata is replaced; its blobs stay, unreferenced ones until GC).
/// Every blob is hashed while written and refused unless it matches its name; the journal
/// is checked whole and put in place last, by rename, after every blob it needs is stored.
/// Takes the store's lock, so it refuses a data dir a server is using.
pub async fn restore(from: &Path, root: &Path, force: bool) -> Result<RestoreReport, BackupError> {
    let non_empty = match fs::read_dir(root) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(BackupError::Io(root.display().to_string(), e)),
    };
    if non_empty && !force {
        return Err(BackupError::Refused(format!(
            "{} is not empty; restore into a new or empty directory, or pass --force to \
             replace its metadata with the backup's",
            root.display()
        )));
    }
    let archive = File::open(from).map_err(io_err(from.display()))?;
    let store = Store::open(root).await?;
    let handle = tokio::runtime::Handle::current();
    let (journal, mut report) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || read_backup(&handle, &store, archive))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))??
    };
    // The switch: until here the target's old metadata (or none) stands; the blobs written
    // are unreferenced, so an interruption leaves nothing GC would not collect.
    let path = layout::journal_path(root);
    fs::rename(journal.path(), &path).map_err(io_err(path.display()))?;
    journal.disarm();
    fsync_dir(&root.join(layout::META)).map_err(io_err(root.display()))?;
    drop(store);
    // Loads as a server would (the same bytes were replayed above; this proves the rename).
    drop(Store::open(root).await?);
    report.data_dir = root.to_owned();
    Ok(report)
}

/// Read the whole archive on a blocking thread; blobs go into `store` through
/// `ingest_blob` on the runtime (`handle`). Returns the journal, written to `tmp/`.
fn read_backup(
    handle: &tokio::runtime::Handle,
    store: &Store,
    archive: File,
) -> Result<(TempFile, RestoreReport), BackupError> {
    let root = store.root().to_owned();
    let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, archive));
    let mut marker: Option<Marker> = None;
    let mut journal: Option<(TempFile, State)> = None;
    let mut stored: HashSet<Digest> = HashSet::new();
    let mut blob_bytes = 0u64;
    let read_err = io_err("reading the backup");
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(io_err("reading the backup"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |problem: String| BackupError::BadEntry {
            entry: name.clone(),
            problem,
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("not a regular file".into()));
        }
        if name == MARKER {
            if marker.is_some() {
                return Err(bad("appears twice".into()));
            }
            if entry.size() > MAX_MARKER {
                return Err(bad(format!("larger than {MAX_MARKER} bytes")));
            }
            let mut json = Vec::new();
            entry
                .read_to_end(&mut json)
                .map_err(io_err("reading the backup"))?;
            let m: Marker = serde_json::from_slice(&json)
                .map_err(|e| bad(format!("not an airdock backup marker: {e}")))?;
            if m.format != FORMAT {
                return Err(bad(format!(
                    "format {:?}; this airdock reads {FORMAT:?}",
                    m.format
                )));
            }
            marker = Some(m);
        } else if name == JOURNAL {
            if journal.is_some() {
                return Err(bad("appears twice".into()));
            }
            let tmp = root.join(layout::TMP);
            let (guard, mut file) = TempFile::create(&tmp).map_err(io_err(tmp.display()))?;
            io::copy(&mut entry, &mut file).map_err(io_err("reading the backup"))?;
            file.sync_all().map_err(io_err(tmp.display()))?;
            drop(file);
            let written = File::open(guard.path()).map_err(io_err(tmp.display()))?;
            let replayed = replay(BufReader::new(written), Path::new(JOURNAL))
                .map_err(|e| bad(e.to_string()))?;
            if replayed.torn {
                return Err(bad(format!(
                    "damaged after byte {}: the journal in a backup is whole",
                    replayed.good_len
                )));
            }
            journal = Some((guard, replayed.state));
        } else {
            let d = blob_digest(&name).ok_or_else(|| {
                bad(format!(
                    "unexpected name: a backup holds {MARKER}, {JOURNAL} and \
                     blobs/<algorithm>/<xx>/<hex> only"
                ))
            })?;
            let size = entry.size();
            ingest(handle, store, &d, &mut entry).map_err(|e| match e {
                StoreError::DigestMismatch { actual, .. } => bad(format!(
                    "content does not match its name: its {size} bytes hash to {actual}"
                )),
                other => BackupError::Store(other),
            })?;
            if stored.insert(d) {
                blob_bytes += size;
            }
        }
    }
    let marker = marker.ok_or_else(|| BackupError::BadEntry {
        entry: MARKER.into(),
        problem: "missing: not an airdock backup".into(),
    })?;
    let (journal, state) = journal.ok_or_else(|| BackupError::BadEntry {
        entry: JOURNAL.into(),
        problem: "missing".into(),
    })?;
    // A backup is input like any other: its journal must hold what a server's could.
    for (name, repo) in &state.repos {
        if let Some((tag, _)) = repo
            .tags
            .iter()
            .find(|(_, t)| !repo.manifests.contains_key(&t.digest))
        {
            return Err(BackupError::BadEntry {
                entry: JOURNAL.into(),
                problem: format!("tag {name}:{tag} names a manifest the repository lacks"),
            });
        }
    }
    let (repositories, manifests) = counts(&state);
    if (repositories, manifests) != (marker.repositories, marker.manifests) {
        return Err(BackupError::BadEntry {
            entry: MARKER.into(),
            problem: format!(
                "says {} repositories and {} manifests, the journal holds {repositories} and \
                 {manifests}: the backup was altered",
                marker.repositories, marker.manifests
            ),
        });
    }
    let (required, _) = referenced(&state);
    if let Some(d) = required.iter().find(|d| !stored.contains(*d)) {
        return Err(BackupError::BadEntry {
            entry: entry_name(d),
            problem: "missing, but the journal references it: the backup is incomplete".into(),
        });
    }
    Ok((
        journal,
        RestoreReport {
            data_dir: PathBuf::new(),
            repositories: marker.repositories,
            manifests: marker.manifests,
            blobs: stored.len() as u64,
            blob_bytes,
        },
    ))
}

/// The digest a blob entry's name stands for, if the name is exactly the path the data
/// dir would store it under.
fn blob_digest(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, rest) = rest.split_once('/')?;
    let (_, hex) = rest.split_once('/')?;
    let d = Digest::parse(&format!("{alg}:{hex}")).ok()?;
    (entry_name(&d) == name).then_some(d)
}

/// Stream one entry into the store, verified against `d`, from this blocking thread.
fn ingest(
    handle: &tokio::runtime::Handle,
    store: &Store,
    d: &Digest,
    entry: &mut impl Read,
) -> Result<(), StoreError> {
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let task = {
        let (store, d) = (store.clone(), d.clone());
        handle.spawn(async move {
            store
                .ingest_blob(Some(&d), d.algorithm(), rx, Ingest::default())
                .await
                .map(|(i, _)| i)
        })
    };
    let mut buf = vec![0u8; 1 << 16];
    let fed = loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        // A write error means the ingest stopped early: its own error says why.
        if handle.block_on(tx.write_all(&buf[..n])).is_err() {
            break Ok(());
        }
    };
    if fed.is_err() {
        task.abort();
    }
    let _ = handle.block_on(tx.shutdown());
    drop(tx);
    fed?;
    match handle.block_on(task) {
        Ok(result) => result.map(|_| ()),
        Err(e) => Err(io::Error::other(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Reference, RepoName, OCI_MANIFEST};

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    async fn image(s: &Store, repo: &str, tag: &str, layer: &[u8]) {
        let repo = RepoName::parse(repo).expect("name");
        let cfg = br#"{"c":1}"#;
        s.push_blob(&repo, &sha(cfg), &cfg[..]).await.expect("cfg");
        s.push_blob(&repo, &sha(layer), layer).await.expect("layer");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha(cfg),
            cfg.len(),
            sha(layer),
            layer.len()
        );
        let r = Reference::parse(tag).expect("tag");
        s.put_manifest(&repo, &r, OCI_MANIFEST, body.as_bytes(), &[], true)
            .await
            .expect("manifest");
    }

    /// On a current-thread runtime (as the fuzz target runs it): the blocking reader feeds
    /// ingest tasks that only the caller's `block_on` drives.
    #[tokio::test]
    async fn backup_of_an_open_store_restores_whole_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let s = Store::open(&src).await.expect("open");
        image(&s, "a", "v1", &[5u8; 70_000]).await;
        image(&s, "b/c", "v1", b"small").await;
        // Unreferenced: not part of the snapshot.
        s.ingest_blob(None, Algorithm::Sha256, &b"garbage"[..], Ingest::default())
            .await
            .expect("ingest");
        let tar = dir.path().join("b.tar");
        let (src2, tar2) = (src.clone(), tar.clone());
        let report = tokio::task::spawn_blocking(move || backup(&src2, &tar2))
            .await
            .expect("join")
            .expect("backup");
        assert_eq!((report.repositories, report.manifests), (2, 2));
        assert_eq!(report.blobs, 5, "{report:?}");
        assert_eq!(report.attempts, 1);

        let dst = dir.path().join("dst");
        let restored = restore(&tar, &dst, false).await.expect("restore");
        assert_eq!((restored.repositories, restored.blobs), (2, 5));
        let r = Store::open_read_only(&dst).await.expect("open");
        let a = RepoName::parse("a").expect("name");
        assert!(r.repo_has_blob(&a, &sha(&[5u8; 70_000])));
        assert!(!r.blob_exists(&sha(b"garbage")).await.expect("stat"));
        assert!(r.fsck(false).await.expect("fsck").clean);
        drop(r);

        // Not over existing data without --force; with it, the same state again.
        let e = restore(&tar, &dst, false).await.expect_err("non-empty");
        assert!(e.to_string().contains("--force"), "{e}");
        restore(&tar, &dst, true).await.expect("forced");

        // One byte of the big layer flipped: refused, naming its entry.
        let mut bytes = fs::read(&tar).expect("read");
        let at = bytes
            .windows(4)
            .position(|w| w == [5, 5, 5, 5])
            .expect("layer bytes");
        bytes[at + 100] ^= 1;
        let bad = dir.path().join("bad.tar");
        fs::write(&bad, &bytes).expect("write");
        let e = restore(&bad, &dir.path().join("dst2"), false)
            .await
            .expect_err("corrupt");
        let name = entry_name(&sha(&[5u8; 70_000]));
        assert!(e.to_string().contains(&name), "{e}");
        assert!(e.to_string().contains("does not match"), "{e}");
        // Nothing of the backup became metadata there.
        let left = Store::open_read_only(dir.path().join("dst2"))
            .await
            .expect("open");
        assert!(left.catalog(None, None).items.is_empty());
    }

    #[tokio::test]
    async fn a_referenced_blob_missing_in_every_snapshot_fails_the_backup_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let s = Store::open(&src).await.expect("open");
        image(&s, "a", "v1", b"layer").await;
        fs::remove_file(layout::blob_path(&src, &sha(b"layer"))).expect("rm");
        let tar = dir.path().join("b.tar");
        let e = backup(&src, &tar).expect_err("missing blob");
        assert!(e.to_string().contains(&sha(b"layer").to_string()), "{e}");
        assert!(!tar.exists());
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["src"], "no temporary file left behind");
    }
}
