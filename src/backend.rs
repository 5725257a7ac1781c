//! Which blob backend a data dir's store uses (the configured one, or the bucket the data dir
//! is bound to), and opening the store over it: the one place `serve` and the offline
//! commands (`gc`, `fsck`, `import`/`export --data-dir`) open a store.

use std::path::Path;

use airdock_storage::{BlobStore, Store, StoreError};

use crate::config::BlobBackend;

/// Where a store's blobs are: `configured` (`storage.driver`), else the bucket the data dir
/// was bound to when first served on S3 (`airdock_storage_s3::binding`), else the local
/// filesystem (`None`). With S3 the data dir is bound to the bucket (refused if bound to
/// another, or if it already holds filesystem blobs) and the bucket is asked once, so a bad
/// endpoint, bucket or key fails here rather than at the first push.
pub async fn blob_backend(
    data_dir: &Path,
    configured: &BlobBackend,
) -> Result<Option<Box<dyn BlobStore>>, StoreError> {
    use airdock_storage_s3::{binding, state_dir, S3Blobs};
    let cfg = match configured {
        BlobBackend::S3(cfg) => {
            binding::bind(data_dir, cfg)?;
            cfg.clone()
        }
        BlobBackend::Filesystem => match binding::bound(data_dir)? {
            Some(cfg) => cfg,
            None => return Ok(None),
        },
    };
    let blobs = S3Blobs::open(&cfg, &state_dir(data_dir)).await?;
    blobs.check().await?;
    Ok(Some(Box::new(blobs)))
}

/// Open the store under `data_dir` with its blobs where [`blob_backend`] says, and its
/// metadata in the PostgreSQL database at `metadata` (`metadata.url`) or, without, in the
/// data dir's journal.
pub async fn open_store(
    data_dir: &Path,
    configured: &BlobBackend,
    metadata: Option<&str>,
) -> Result<Store, StoreError> {
    let blobs = blob_backend(data_dir, configured).await?;
    Store::open_with_metadata(data_dir, blobs, metadata).await
}

/// [`open_store`] read-only ([`Store::open_read_only`]), for checks and exports.
pub async fn open_store_read_only(data_dir: &Path) -> Result<Store, StoreError> {
    let blobs = blob_backend(data_dir, &BlobBackend::Filesystem).await?;
    Store::open_read_only_with(data_dir, blobs).await
}
