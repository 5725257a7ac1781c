//! airdock's content store: validated names and digests, a content-addressed blob store,
//! repository metadata (links, manifests, tags, referrers) and upload sessions.
//! It knows nothing of HTTP; see `layout` for the on-disk tree.

pub mod backup;
mod blobs;
pub mod blobstore;
mod digest;
mod error;
mod fsck;
mod gc;
mod imports;
mod labelled;
pub mod layout;
mod listing;
mod manifest;
mod meta;
mod migrate;
mod names;
#[cfg(any(test, feature = "testsuite"))]
pub mod pgtest;
mod pins;
pub mod random;
mod retention;
mod store;
mod uploads;
mod usage;
mod vitals;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub use blobs::{read_range, Ingested};
pub use blobstore::{BlobClock, BlobStore, OpenBlobs};
pub use digest::{Algorithm, Digest, Hasher, Hex};
pub use error::StoreError;
pub use fsck::{FsckProblem, FsckReport};
pub use gc::{GcOptions, GcReport, HeldBack, RepoDigest, RepoTag};
pub use imports::{ImportRecord, ImportRemoval, ImportedTag};
pub use listing::{RepoPage, RepoSummary, TagRow};
pub use manifest::{
    Descriptor, ManifestRecord, MediaType, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES,
    OCI_INDEX, OCI_MANIFEST,
};
pub use meta::Txn;
pub use migrate::{migrate_metadata, MigrateReport};
pub use store::metadata_database;

/// Whether `url` is a `metadata.url` the store can use (a PostgreSQL URL it can speak to);
/// the reason for a person if not. Nothing is connected to.
pub fn check_metadata_url(url: &str) -> Result<(), String> {
    meta::Db::parse(url).map(|_| ()).map_err(|e| match e {
        StoreError::Unsupported(m) => m,
        other => other.to_string(),
    })
}
pub use names::{Reference, RepoName, Tag};
pub use pins::Pin;
pub use retention::{Matcher, Retention};
pub use store::{BlobDelete, Ingest, Manifest, ManifestDelete, Page, Referrer, Store};
pub use uploads::{UploadId, UploadSession};
pub use usage::{RepoUsage, Usage, UsageOrder, UsagePage};
pub use vitals::Vitals;

use blobstore::fileclock::FileClock;
use blobstore::fs::{FsBlobStore, MtimeClock};
pub use blobstore::BlobRead;
use blobstore::{BlobReader, ByteRange};
use meta::{Meta, Op, Repo};
use uploads::Open;
pub use uploads::UploadLimits;

#[cfg(test)]
mod tests;
