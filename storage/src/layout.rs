//! The on-disk layout, and the only code that turns names into paths.
//!
//! ```text
//! <data-dir>/
//! ├── blobs/                      content-addressed, immutable, shared by all repositories
//! │   ├── sha256/<hex[0..2]>/<hex>    layers, configs and manifests alike; all 256 fan-out
//! │   └── sha512/<hex[0..2]>/<hex>    directories are made (durably) at start
//! ├── meta/
//! │   ├── journal                 append-only log of metadata transactions (one line each:
//! │                               `<checksum> <json>`); replayed into memory at start
//! │   ├── database                with `metadata.url` instead of the journal: the database
//! │                               (URL without password) this data dir's metadata is in
//! │   ├── journal.migrated        the journal `airdock migrate-metadata` moved into it, kept
//! │   └── clock                   GC's clock when blobs are not files (S3): when each blob
//! │                               was last used (`blobstore/fileclock.rs`)
//! ├── uploads/<upload-id>/        one directory per open upload session
//! │   ├── info.json               repository and digest algorithm of the session
//! │   └── data                    the bytes received so far
//! ├── tmp/                        files being written; anything here at start is garbage
//! ├── quarantine/                 blobs `fsck --repair` found corrupt, moved aside, never read
//! │   └── <alg>-<hex>.<unix-time>
//! └── lock                        empty; exclusively locked by the process using the store
//! ```
//!
//! Every path is built from a [`Digest`], an [`UploadId`] or a constant, never from a
//! client string, so nothing a client sends can name a file outside this tree.
//!
//! A directory entry survives a power loss only once its parent directory was fsynced
//! (POSIX). [`prepare`] makes the whole fixed tree durable at start, fan-out directories
//! included, so a blob write only ever has to fsync the one directory it renames into.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::blobs::fsync_dir;
use crate::{Algorithm, Digest, UploadId};

pub(crate) const BLOBS: &str = "blobs";
pub(crate) const META: &str = "meta";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const DATABASE: &str = "database";
pub(crate) const MIGRATED: &str = "journal.migrated";
pub(crate) const UPLOADS: &str = "uploads";
pub(crate) const TMP: &str = "tmp";
pub(crate) const QUARANTINE: &str = "quarantine";
pub(crate) const LOCK: &str = "lock";

/// Every algorithm a blob may be stored under: [`prepare`] makes their fan-out directories.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// Create `dir` and whatever ancestors it lacks, each made durable by an fsync of its
/// parent, so nothing written below it can be lost with a directory on the way.
pub(crate) fn create_dirs_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another thread made it; its fsync of the parent may not have happened yet.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fsync_dir(parent.unwrap_or(Path::new(".")))
}

/// Make the fixed tree under `root` exist and be durable: the data dir itself in its
/// parent, `blobs/`, `meta/`, `uploads/`, `tmp/`, and every fan-out directory of `blobs/`.
/// The parents are fsynced even when nothing was created: an earlier run (or an older
/// version) may have made them without, and nothing acknowledged may hang below an entry
/// that a power loss can take.
pub(crate) fn prepare(root: &Path) -> io::Result<()> {
    let existed = root.is_dir();
    create_dirs_durable(root)?;
    for d in [BLOBS, META, UPLOADS, TMP] {
        create_dirs_durable(&root.join(d))?;
    }
    for alg in ALGORITHMS {
        let alg_dir = root.join(BLOBS).join(alg.as_str());
        create_dirs_durable(&alg_dir)?;
        for fan in 0..=u8::MAX {
            let shard = alg_dir.join(format!("{fan:02x}"));
            if !shard.is_dir() {
                fs::create_dir(&shard).or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })?;
            }
        }
        fsync_dir(&alg_dir)?;
    }
    fsync_dir(&root.join(BLOBS))?;
    fsync_dir(root)?;
    let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
    match fsync_dir(parent.unwrap_or(Path::new("."))) {
        // A data dir made by the operator (and long since durable) may sit in a directory
        // this process may enter but not read; one it just made was fsynced above.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && existed => Ok(()),
        other => other,
    }
}

pub(crate) fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    let hex = d.hex();
    root.join(BLOBS)
        .join(d.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// Names the PostgreSQL database a data dir's metadata is in (see `Store::open_with_metadata`).
pub(crate) fn database_path(root: &Path) -> PathBuf {
    root.join(META).join(DATABASE)
}

/// Where `migrate-metadata` keeps the journal it moved into a database.
pub(crate) fn migrated_journal_path(root: &Path) -> PathBuf {
    root.join(META).join(MIGRATED)
}

pub fn journal_path(root: &Path) -> PathBuf {
    root.join(META).join(JOURNAL)
}

/// GC's clock for backends without a writable time per blob (see `FileClock`).
pub(crate) fn clock_path(root: &Path) -> PathBuf {
    root.join(META).join("clock")
}

/// A readiness probe's scratch file (`tmp/` is emptied at start, so a crash leaves no trace).
pub(crate) fn ready_probe_path(root: &Path, n: u64) -> PathBuf {
    root.join(TMP).join(format!("ready-{n}"))
}

pub(crate) fn upload_dir(root: &Path, id: &UploadId) -> PathBuf {
    root.join(UPLOADS).join(id.as_str())
}

pub(crate) fn quarantine_path(root: &Path, d: &Digest, unix_time: u64) -> PathBuf {
    root.join(QUARANTINE).join(format!(
        "{}-{}.{unix_time}",
        d.algorithm().as_str(),
        d.hex()
    ))
}

/// What [`walk_blobs`] finds: the digests of the blob files (their paths are
/// [`blob_path`]'s), and the stray paths. Digests only: a store may hold millions of blobs,
/// and a path costs three times a digest.
pub(crate) type Walked = (Vec<Digest>, Vec<PathBuf>);

fn read_dir_entries(p: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(p) {
        Ok(rd) => rd.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The fan-out directories under `blobs/` (`<alg>/<xx>`), and the stray paths above them.
/// A walk can go one of them at a time, so no step holds more than a few hundred names.
pub(crate) fn blob_shards(root: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut shards = Vec::new();
    let mut strays = Vec::new();
    for alg_dir in read_dir_entries(&root.join(BLOBS))? {
        if !alg_dir.file_type()?.is_dir() {
            strays.push(alg_dir.path());
            continue;
        }
        for fan in read_dir_entries(&alg_dir.path())? {
            if fan.file_type()?.is_dir() {
                shards.push(fan.path());
            } else {
                strays.push(fan.path());
            }
        }
    }
    Ok((shards, strays))
}

/// The blob files of one fan-out directory of [`blob_shards`], and its strays.
pub(crate) fn walk_shard(root: &Path, shard: &Path) -> io::Result<Walked> {
    let mut found = Vec::new();
    let mut strays = Vec::new();
    let alg = shard
        .parent()
        .and_then(Path::file_name)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    for file in read_dir_entries(shard)? {
        let name = file.file_name().to_string_lossy().into_owned();
        match Digest::parse(&format!("{alg}:{name}")).ok() {
            // The path must be the one blob_path builds, fan-out directory included.
            Some(d) if blob_path(root, &d) == file.path() && file.file_type()?.is_file() => {
                found.push(d)
            }
            _ => strays.push(file.path()),
        }
    }
    Ok((found, strays))
}

/// Every file under `blobs/`: those whose path is exactly what [`blob_path`] builds for a
/// valid digest, and the rest ("strays", which nothing reads).
pub(crate) fn walk_blobs(root: &Path) -> io::Result<Walked> {
    let (shards, mut strays) = blob_shards(root)?;
    let mut found = Vec::new();
    for shard in shards {
        let (f, s) = walk_shard(root, &shard)?;
        found.extend(f);
        strays.extend(s);
    }
    Ok((found, strays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_makes_the_whole_tree_under_missing_parents_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("a/b/data");
        prepare(&root).expect("prepare");
        prepare(&root).expect("prepare again");
        for d in [BLOBS, META, UPLOADS, TMP] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        let (shards, strays) = blob_shards(&root).expect("shards");
        assert_eq!(shards.len(), 2 * 256);
        assert!(strays.is_empty());
        assert!(root.join("blobs/sha512/ff").is_dir());
    }
}
