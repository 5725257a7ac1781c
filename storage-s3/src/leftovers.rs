//! What interrupted writes leave in the bucket that no digest names, found and removed by
//! GC (`BlobStore::sweep_leftovers`) once older than its grace window:
//!
//! - **incomplete multipart uploads** nothing records: a `put` of a large blob or a
//!   session's first part whose process died between `CreateMultipartUpload` and the
//!   upload's completion or its record in the session's state. Their parts cost storage and
//!   nothing ever completes or aborts them. Listed with `ListMultipartUploads`, which
//!   `object_store` lacks: one signed `GET ?uploads` (signed by `object_store`'s own SigV4
//!   authorizer, not by hand) per page of 1000.
//! - **objects under `objects/`** that neither the index nor an open session names: a
//!   session completed, then the process died before the index line was written.
//!
//! Why nothing live is removed (the race argument):
//! - Every writer of this process holds [`Creating`] (a shared guard) from before it creates
//!   a multipart upload until the upload is recorded (a session's `state.json`) or
//!   registered in memory (a `put` in flight). The sweep lists the uploads first, then takes
//!   the guard exclusively (and lets it go at once) before it reads what is recorded: every
//!   upload its listing saw was created before the listing, so its creator has recorded it by
//!   then. A `put` that finished meanwhile has left `in_flight`, but its upload is completed
//!   or aborted already: aborting it again is a no-op.
//! - A session's multipart upload is created under `objects/<session id>` after the
//!   session's `state.json` (at its first part), and the session's prefix in the bucket goes
//!   only when it is finished or aborted. So an upload under the key of a session whose
//!   prefix the sweep lists is spared whatever its state says: that covers another
//!   replica's session between `CreateMultipartUpload` and its state write, which this
//!   process's guard does not.
//! - A session's object is completed before its index entry is written, and the session's
//!   `state.json` is removed only after it. The sweep lists the sessions first and the
//!   index second, both in the bucket: an object completed before the listing is named by
//!   one or the other, whichever replica completed it.
//! - What no record in the bucket covers: a `put` in flight on another replica (its
//!   multipart upload is registered in that process's memory only). Only the cutoff (GC's
//!   grace window) spares it, so with replicas the grace window must outlast the longest
//!   monolithic push; a push whose upload is aborted fails (nothing is stored half), and its
//!   client retries.

use std::time::SystemTime;

use airdock_storage::{StoreError, UploadId};
use futures_util::stream::TryStreamExt;
use object_store::aws::AwsAuthorizer;
use object_store::client::HttpRequestBody;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use crate::{s3_error, S3Blobs};

/// Held shared by every creator of a multipart upload until it is recorded; exclusively by
/// the sweep while it reads the records. tokio's: a creator holds it across its requests.
pub(crate) type Creating = tokio::sync::RwLock<()>;

/// One page of `ListMultipartUploads`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UploadsPage {
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload")]
    uploads: Vec<PendingUpload>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PendingUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

/// What [`S3Blobs::leftovers`] removed (or, dry, would remove).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub uploads_aborted: u64,
    pub objects_deleted: u64,
}

impl S3Blobs {
    /// Every incomplete multipart upload under the prefix: (key, upload id, initiated).
    async fn pending_uploads(&self) -> Result<Vec<(String, String, SystemTime)>, StoreError> {
        let cred = self
            .inner
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(s3_error)?;
        let prefix = match &self.inner.prefix {
            Some(p) => format!("{p}/"),
            None => String::new(),
        };
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.inner.bucket_url.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("uploads", "");
                q.append_pair("prefix", &prefix);
                if let Some((key, id)) = &markers {
                    q.append_pair("key-marker", key);
                    q.append_pair("upload-id-marker", id);
                }
            }
            let mut req = http::Request::builder()
                .method(http::Method::GET)
                .uri(url.as_str())
                .body(HttpRequestBody::from(Vec::new()))
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            AwsAuthorizer::new(&cred, "s3", &self.inner.region)
                .try_authorize(&mut req, None)
                .map_err(s3_error)?;
            let resp = self
                .inner
                .http
                .get(url.as_str())
                .headers(req.headers().clone())
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(format!("S3 ListMultipartUploads: {e}")))?;
            let status = resp.status();
            let body = resp
                .text()
                .await
                .map_err(|e| StoreError::Unavailable(format!("S3 ListMultipartUploads: {e}")))?;
            if !status.is_success() {
                return Err(StoreError::Unavailable(format!(
                    "S3 ListMultipartUploads: {status}: {}",
                    body.chars().take(300).collect::<String>()
                )));
            }
            let page: UploadsPage = quick_xml::de::from_str(&body).map_err(|e| {
                StoreError::Io(std::io::Error::other(format!(
                    "S3 ListMultipartUploads answer: {e}"
                )))
            })?;
            for u in page.uploads {
                // An unreadable time counts as new: kept.
                let Ok(at) = humantime::parse_rfc3339_weak(&u.initiated) else {
                    continue;
                };
                out.push((u.key, u.upload_id, at));
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(i)) => markers = Some((k, i)),
                _ => return Ok(out),
            }
        }
    }

    /// Abort the multipart uploads and delete the `objects/` objects no record names that
    /// were started or last written before `cutoff`. With `dry_run`, only count them.
    pub async fn leftovers(&self, cutoff: SystemTime, dry_run: bool) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let objects_prefix = self.key("objects");
        // 1. Listed before anything recorded is read (see the module docs).
        let uploads = self.pending_uploads().await?;
        let objects: Vec<(UploadId, object_store::path::Path, SystemTime)> = self
            .inner
            .s3
            .list(Some(&objects_prefix))
            .map_err(s3_error)
            .try_filter_map(|meta| async move {
                Ok(self
                    .session_of_key(&meta.location)
                    .map(|id| (id, meta.location, SystemTime::from(meta.last_modified))))
            })
            .try_collect()
            .await?;
        // 2. What is recorded: sessions before the index.
        // Taken and let go at once: every creator that got its guard before has recorded
        // its upload by then, and later ones created theirs after the listing. Not held
        // across the bucket reads, which would stall every upload of this process meanwhile.
        drop(self.inner.creating.write().await);
        let (sessions, mut recorded) = self.session_uploads().await?;
        recorded.extend(self.inner.in_flight().iter().cloned());
        let indexed = self.indexed_uploads().await?;
        // 3. The rest, if old enough.
        for (key, upload, at) in uploads {
            let key = object_store::path::Path::from(key.as_str());
            let of_a_session = self
                .session_of_key(&key)
                .is_some_and(|id| sessions.contains(&id));
            if at > cutoff || recorded.contains(&upload) || of_a_session {
                continue;
            }
            if !dry_run {
                self.abort_multipart(&key, &upload).await;
            }
            tracing::info!(%key, "aborted an incomplete multipart upload no session records");
            swept.uploads_aborted += 1;
        }
        for (id, key, at) in objects {
            if at > cutoff || sessions.contains(&id) || indexed.contains(&id) {
                continue;
            }
            if !dry_run {
                match self.inner.s3.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(s3_error(e)),
                }
            }
            tracing::info!(%key, "deleted a session object the index does not name");
            swept.objects_deleted += 1;
        }
        Ok(swept)
    }
}
