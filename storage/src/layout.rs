//! The on-disk layout, and the only code that turns names into paths.
//!
//! ```text
//! <data-dir>/
//! ├── blobs/                      content-addressed, immutable, shared by all repositories
//! │   ├── sha256/<hex[0..2]>/<hex>    layers, configs and manifests alike
//! │   └── sha512/<hex[0..2]>/<hex>
//! ├── meta/
//! │   └── journal                 append-only log of metadata transactions (one line each:
//! │                               `<checksum> <json>`); replayed into memory at start
//! ├── uploads/<upload-id>/        one directory per open upload session
//! │   ├── info.json               repository and digest algorithm of the session
//! │   └── data                    the bytes received so far
//! ├── tmp/                        files being written; anything here at start is garbage
//! └── lock                        empty; exclusively locked by the process using the store
//! ```
//!
//! Every path is built from a [`Digest`], an [`UploadId`] or a constant, never from a
//! client string, so nothing a client sends can name a file outside this tree.

use std::path::{Path, PathBuf};

use crate::{Digest, UploadId};

pub(crate) const BLOBS: &str = "blobs";
pub(crate) const META: &str = "meta";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const UPLOADS: &str = "uploads";
pub(crate) const TMP: &str = "tmp";
pub(crate) const LOCK: &str = "lock";

pub(crate) fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    let hex = d.hex();
    root.join(BLOBS)
        .join(d.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

pub(crate) fn journal_path(root: &Path) -> PathBuf {
    root.join(META).join(JOURNAL)
}

pub(crate) fn upload_dir(root: &Path, id: &UploadId) -> PathBuf {
    root.join(UPLOADS).join(id.as_str())
}
