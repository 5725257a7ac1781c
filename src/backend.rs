//! Which blob backend a data dir's store uses (the configured one, or the bucket the data dir
//! is bound to), and opening the store over it: the one place `serve` and the offline
//! commands (`gc`, `fsck`, `import`/`export --data-dir`) open a store.

use std::path::Path;

use airdock_storage::{BlobStore, OpenBlobs, Store, StoreError};

use crate::config::BlobBackend;

/// Where a store's blobs are: `configured` (`storage.driver`), else the bucket the data dir
/// was bound to when first served on S3 (`airdock_storage_s3::binding`), else the local
/// filesystem (`None`). The S3 backend is opened by the store once it holds the data dir's
/// lock (its object index and sessions are under the data dir): then the data dir is bound to
/// the bucket (refused if bound to another, or if it already holds filesystem blobs) and the
/// bucket is asked once, so a bad endpoint, bucket or key fails at open rather than at the
/// first push.
pub fn blob_backend(
    data_dir: &Path,
    configured: &BlobBackend,
) -> Result<Option<OpenBlobs>, StoreError> {
    use airdock_storage_s3::{binding, state_dir, S3Blobs};
    let (cfg, bind) = match configured {
        BlobBackend::S3(cfg) => (cfg.clone(), true),
        BlobBackend::Filesystem => match binding::bound(data_dir)? {
            Some(cfg) => (cfg, false),
            None => return Ok(None),
        },
    };
    let data_dir = data_dir.to_owned();
    Ok(Some(Box::new(move || {
        Box::pin(async move {
            if bind {
                binding::bind(&data_dir, &cfg)?;
            }
            let blobs = S3Blobs::open(&cfg, &state_dir(&data_dir)).await?;
            blobs.check().await?;
            Ok(Box::new(blobs) as Box<dyn BlobStore>)
        })
    })))
}

/// Open the store under `data_dir` with its blobs where [`blob_backend`] says, and its
/// metadata in the PostgreSQL database at `metadata` (`metadata.url`) or, without, in the
/// data dir's journal.
pub async fn open_store(
    data_dir: &Path,
    configured: &BlobBackend,
    metadata: Option<&str>,
) -> Result<Store, StoreError> {
    let blobs = blob_backend(data_dir, configured)?;
    Store::open_with_metadata(data_dir, blobs, metadata).await
}

/// [`open_store`] read-only ([`Store::open_read_only`]), for checks and exports.
pub async fn open_store_read_only(data_dir: &Path) -> Result<Store, StoreError> {
    let blobs = blob_backend(data_dir, &BlobBackend::Filesystem)?;
    Store::open_read_only_with(data_dir, blobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: the S3 backend's local state (its object index, sessions) is read only once
    /// the data dir's lock is held. A second opener of a data dir in use is refused as
    /// `Locked` before it reads any of it (here a damaged index it would fail on).
    #[tokio::test]
    async fn s3_state_is_read_under_the_lock() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = airdock_storage_s3::S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b".into(),
            region: "us-east-1".into(),
            path_style: true,
            ..Default::default()
        };
        airdock_storage_s3::binding::bind(dir.path(), &cfg).expect("bind");
        let state = airdock_storage_s3::state_dir(dir.path());
        std::fs::write(state.join("objects"), "damaged\n").expect("index");
        let holder = airdock_storage::blobstore::memory::MemBlobStore::new();
        let holder = Store::open_with(
            dir.path(),
            Some(airdock_storage::blobstore::opened(Box::new(holder))),
        )
        .await
        .expect("the first opener");
        let second = open_store(dir.path(), &BlobBackend::Filesystem, None).await;
        assert!(
            matches!(second, Err(StoreError::Locked(_))),
            "{:?}",
            second.err()
        );
        drop(holder);
        let third = open_store(dir.path(), &BlobBackend::Filesystem, None).await;
        assert!(
            matches!(third, Err(StoreError::Corrupt(_))),
            "{:?}",
            third.err()
        );
    }
}
