//! `airdock migrate-metadata`: a single node's journal moved into a PostgreSQL database, so
//! that the registry can grow into replicas without re-pushing anything. The data dir is
//! then bound to that database (`meta/database`) and serves as one of its replicas.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::path::Path;

use serde::Serialize;

use crate::meta::{replay, Db, Replayed};
use crate::{layout, StoreError};

/// What was moved.
#[derive(Debug, Default, Serialize)]
pub struct MigrateReport {
    /// The database, without its password.
    pub database: String,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub imports: u64,
    /// Rows written to the journal table (one per repository, one for the import records).
    pub transactions: u64,
    /// Where the data dir's journal was kept (renamed, never deleted).
    pub journal_kept_as: String,
}

/// Move the metadata of the data dir `root` (no process may be using it) into the empty
/// database at `url`, in one database transaction: all of it or, on any error, nothing.
/// Then the journal is renamed aside and the data dir bound to the database. A database that
/// already holds metadata is refused (two registries' metadata would be merged blindly).
pub async fn migrate_metadata(root: &Path, url: &str) -> Result<MigrateReport, StoreError> {
    let db = Db::parse(url)?;
    let shown = db.shown().to_owned();
    let root = root.to_owned();
    let root2 = root.clone();
    let (lock, state) = tokio::task::spawn_blocking(move || {
        let lock = match OpenOptions::new()
            .write(true)
            .open(root2.join(layout::LOCK))
        {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Unsupported(format!(
                    "{} is not an airdock data dir (no lock file)",
                    root2.display()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(root2.display().to_string()))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        crate::store::refuse_if_bound(&root2)?;
        let path = layout::journal_path(&root2);
        let Replayed { state, torn, .. } = replay(BufReader::new(File::open(&path)?), &path)?;
        if torn {
            // A line being appended when the process died: never acknowledged, and cut off
            // at the next start; left out here the same way.
            tracing::warn!(journal = %path.display(), "leaving out a torn journal tail");
        }
        Ok((lock, state))
    })
    .await
    .map_err(io::Error::other)??;
    let mut report = MigrateReport {
        database: shown.clone(),
        ..MigrateReport::default()
    };
    for repo in state.repos.values() {
        report.repositories += 1;
        report.manifests += repo.manifests.len() as u64;
        report.tags += repo.tags.len() as u64;
    }
    report.imports = state.imports.len() as u64;
    let bodies = state.record_bodies().map_err(io::Error::other)?;
    report.transactions = bodies.len() as u64;
    drop(state);
    crate::meta::import_into(db, bodies).await?;
    let kept = tokio::task::spawn_blocking(move || -> Result<String, StoreError> {
        let journal = layout::journal_path(&root);
        let kept = layout::migrated_journal_path(&root);
        fs::rename(&journal, &kept)?;
        crate::blobs::fsync_dir(&root.join(layout::META))?;
        crate::store::bind_to_database(&root, &shown)?;
        drop(lock);
        Ok(kept.display().to_string())
    })
    .await
    .map_err(io::Error::other)??;
    report.journal_kept_as = kept;
    Ok(report)
}
