//! Blobs on S3-compatible object storage: the S3 implementation of the store's
//! [`BlobStore`] contract, through `object_store` (SigV4, retries with backoff on
//! `SlowDown`/503, multipart uploads, conditional puts, presigning).
//!
//! The bucket, under `PREFIX/`:
//!
//! ```text
//! PREFIX/
//! ├── blobs/<alg>/<hex[0..2]>/<hex>   blobs whose digest was known before they were written
//! │                                   (monolithic puts, and sessions that stayed under one
//! │                                   part): a verified single PUT with `If-None-Match: *`,
//! │                                   or a multipart upload completed only after the hash
//! │                                   matched
//! ├── objects/<upload-id>             blobs of chunked upload sessions, completed where
//! │                                   their multipart upload started
//! └── _state/                         what replicas over the bucket share besides blobs
//!     ├── index/<alg>/<hex>           the object index: the upload id whose object holds
//!     │                               the blob (`index.rs`)
//!     └── uploads/<upload-id>/        an upload session: state.json and tail segments
//!                                     (`sessions.rs`)
//! ```
//!
//! S3 cannot rename, and a multipart upload completes under the key it was created with,
//! which a chunked session must pick before it knows its digest. Rather than copy a finished
//! session to `blobs/…` (Distribution's copy-on-commit, a multi-GB server-side copy inside
//! the client's PUT), the session's object stays where it landed and the object index
//! (`index.rs`) records "digest → object". No object is listed on a request path: a blob's
//! object is found from its digest and the index alone.
//!
//! Nothing a request needs is on local disk: any number of airdock processes over one
//! bucket (replicas behind a load balancer) see the same blobs and sessions, and every write
//! to shared state is conditional (`If-None-Match: *`, or `If-Match` on the ETag read), so
//! two of them can never tear a record.

pub mod binding;
mod hash;
mod index;
mod leftovers;
mod sessions;
pub mod testing;

pub use leftovers::Swept;

use std::collections::HashSet;
use std::io;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use airdock_storage::blobstore::{
    BlobRead, BlobStore, Body, ByteRange, DigestStream, SessionRecord, Written,
};
use airdock_storage::{Algorithm, Digest, StoreError, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use crate::hash::StateHasher;

/// Every part but the last of a multipart upload is this long. S3 needs at least 5 MiB;
/// 8 MiB halves the requests of a large layer, and bounds what one upload request holds in
/// memory (one part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Bytes read from a body at a time.
const READ_SIZE: usize = 256 * 1024;

/// Where the bucket is and how to use it (`storage.s3.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; `None`: AWS, from the region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Keys live under `PREFIX/` (empty: at the bucket's root).
    pub prefix: String,
    /// `bucket` in the path rather than the host name (what MinIO, Ceph and most
    /// self-hosted servers expect).
    pub path_style: bool,
    /// Offer presigned GET URLs ([`BlobStore::redirect_url`]).
    pub redirect: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// The blob store on S3. Cheap to clone.
#[derive(Clone)]
pub struct S3Blobs {
    inner: Arc<Inner>,
}

struct Inner {
    s3: AmazonS3,
    prefix: Option<Path>,
    redirect: bool,
    /// Digest → session object, as far as this process has seen (hints; the bucket's
    /// index is the truth).
    index: index::Index,
    sessions: sessions::Sessions,
    /// The bucket's URL and region, and a client, for the one request `object_store` does
    /// not make: `ListMultipartUploads` (see `leftovers.rs`).
    bucket_url: url::Url,
    region: String,
    http: reqwest::Client,
    /// Held by creators of multipart uploads until they are recorded (see `leftovers.rs`).
    creating: leftovers::Creating,
    /// Multipart uploads of `put`s in flight in this process: not recorded anywhere else.
    /// std Mutex: set insert/remove only.
    in_flight: Mutex<HashSet<MultipartId>>,
}

impl Inner {
    fn in_flight(&self) -> MutexGuard<'_, HashSet<MultipartId>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bucket's own URL (`ListMultipartUploads` is a request on the bucket, not a key):
/// path-style `ENDPOINT/BUCKET`, else `BUCKET.` in front of the endpoint's host; AWS's
/// regional endpoint without one.
fn bucket_url(cfg: &S3Config) -> Result<url::Url, StoreError> {
    let bad = |e: &dyn std::fmt::Display| {
        StoreError::Io(io::Error::other(format!("storage.s3.endpoint: {e}")))
    };
    let endpoint = cfg
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
    let mut url = url::Url::parse(&endpoint).map_err(|e| bad(&e))?;
    if cfg.path_style {
        url.path_segments_mut()
            .map_err(|()| bad(&"not a base URL"))?
            .pop_if_empty()
            .push(&cfg.bucket);
    } else {
        let host = url.host_str().ok_or_else(|| bad(&"no host"))?.to_owned();
        url.set_host(Some(&format!("{}.{host}", cfg.bucket)))
            .map_err(|e| bad(&e))?;
    }
    Ok(url)
}

/// An `object_store` error in the store's terms. Throttling (`SlowDown`, 503, 429) and
/// unreachable servers were already retried with backoff by `object_store`; what arrives
/// here is final, and is `Unavailable` (worth retrying later) rather than an I/O fault.
pub(crate) fn s3_error(e: object_store::Error) -> StoreError {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut unavailable = false;
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            unavailable |= matches!(
                h.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        let text = s.to_string();
        // The retry error's status is not public; its message carries it.
        unavailable |= ["SlowDown", "status code: 503", "status code: 429"]
            .iter()
            .any(|m| text.contains(m));
        source = s.source();
    }
    if unavailable {
        StoreError::Unavailable(format!("S3: {e}"))
    } else {
        StoreError::Io(io::Error::other(format!("S3: {e}")))
    }
}

fn body_error(e: io::Error) -> StoreError {
    StoreError::UploadInvalid(format!("reading the body: {e}"))
}

impl S3Blobs {
    /// Connect to the bucket. Everything is kept in the bucket; `state_dir` (on local disk,
    /// under the data dir) is only read for what an earlier version kept there (the object
    /// index, open sessions), which is moved into the bucket once. Otherwise nothing is sent
    /// to S3 yet.
    pub async fn open(cfg: &S3Config, state_dir: &FsPath) -> Result<S3Blobs, StoreError> {
        // object_store's reqwest is built without a bundled crypto provider: give it the
        // ring provider the server's TLS already uses. Err means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!cfg.path_style)
            // `If-None-Match: *`, which AWS, MinIO, Ceph and versitygw honour.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 8,
                retry_timeout: Duration::from_secs(120),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(Duration::from_secs(10))
                    // The longest request sends one part.
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let (Some(k), Some(s)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let s3 = b
            .build()
            .map_err(|e| StoreError::Io(io::Error::other(format!("S3 configuration: {e}"))))?;
        let prefix = cfg.prefix.trim_matches('/');
        let prefix = (!prefix.is_empty())
            .then(|| Path::parse(prefix))
            .transpose()
            .map_err(|e| StoreError::Io(io::Error::other(format!("storage.s3.prefix: {e}"))))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StoreError::Io(io::Error::other(format!("S3 client: {e}"))))?;
        let blobs = S3Blobs {
            inner: Arc::new(Inner {
                s3,
                prefix,
                redirect: cfg.redirect,
                index: index::Index::default(),
                sessions: sessions::Sessions::new(),
                bucket_url: bucket_url(cfg)?,
                region: cfg.region.clone(),
                http,
                creating: leftovers::Creating::default(),
                in_flight: Mutex::default(),
            }),
        };
        blobs
            .migrate_local_index(&state_dir.join("objects"))
            .await?;
        blobs
            .migrate_local_sessions(&state_dir.join("sessions"))
            .await?;
        Ok(blobs)
    }

    /// Ask the bucket something cheap, to fail at start (bad endpoint, bucket, keys)
    /// rather than on the first push.
    pub async fn check(&self) -> Result<(), StoreError> {
        let probe = self.key("blobs/.probe");
        match self.inner.s3.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    fn key(&self, rel: &str) -> Path {
        match &self.inner.prefix {
            Some(p) => Path::from(format!("{p}/{rel}")),
            None => Path::from(rel),
        }
    }

    /// `PREFIX/blobs/<alg>/<hex[0..2]>/<hex>`: built from a validated digest only.
    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!("blobs/{}/{}/{}", d.algorithm(), &hex[..2], &*hex))
    }

    /// The digest whose key `key` is, if it is one.
    fn digest_of_key(&self, key: &Path) -> Option<Digest> {
        let parts: Vec<_> = key.parts().collect();
        let d = match parts.as_slice() {
            [.., alg, _, hex] => Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref())).ok(),
            _ => None,
        };
        d.filter(|d| &self.blob_key(d) == key)
    }

    /// `PREFIX/objects/<upload-id>`: the object a chunked session completes into.
    fn object_key(&self, id: &UploadId) -> Path {
        self.key(&format!("objects/{id}"))
    }

    /// The session whose object key `key` is, if it is one.
    fn session_of_key(&self, key: &Path) -> Option<UploadId> {
        let id = key.filename().and_then(|name| UploadId::parse(name).ok());
        id.filter(|id| &self.object_key(id) == key)
    }

    /// A verified blob's one PUT, refused by S3 if the key exists (`If-None-Match: *`).
    /// Returns whether it existed (same digest, so the same bytes).
    async fn put_create(&self, key: &Path, bytes: Bytes) -> Result<bool, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .s3
            .put_opts(key, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(false),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn put_part(
        &self,
        key: &Path,
        upload: &MultipartId,
        n: usize,
        bytes: Bytes,
    ) -> Result<PartId, StoreError> {
        self.inner
            .s3
            .put_part(key, upload, n, bytes.into())
            .await
            .map_err(s3_error)
    }

    /// Best effort: an upload that cannot be aborted now is left to the bucket's
    /// `AbortIncompleteMultipartUpload` lifecycle rule (see README).
    async fn abort_multipart(&self, key: &Path, upload: &MultipartId) {
        if let Err(e) = self.inner.s3.abort_multipart(key, upload).await {
            tracing::warn!(%key, error = %e, "cannot abort an S3 multipart upload");
        }
    }

    /// Read up to `room` more bytes of `body` into `buf`, hashing them. Returns the bytes
    /// read (0 at the end of the body).
    async fn fill(
        body: &mut Body<'_>,
        buf: &mut BytesMut,
        hasher: &mut StateHasher,
        scratch: &mut [u8],
        room: usize,
    ) -> Result<usize, StoreError> {
        let want = room.min(scratch.len());
        let n = body.read(&mut scratch[..want]).await.map_err(body_error)?;
        hasher.update(&scratch[..n]);
        buf.extend_from_slice(&scratch[..n]);
        Ok(n)
    }

    async fn put_inner(
        &self,
        expected: &Digest,
        mut body: Body<'_>,
        limit: Option<u64>,
        existed: bool,
        multipart: &mut Option<(MultipartId, Vec<PartId>)>,
    ) -> Result<Written, StoreError> {
        let key = self.blob_key(expected);
        let mut hasher = StateHasher::new(expected.algorithm());
        let mut buf = BytesMut::new();
        let mut scratch = vec![0u8; READ_SIZE];
        let mut size: u64 = 0;
        loop {
            let room = PART_SIZE - buf.len();
            let n = Self::fill(&mut body, &mut buf, &mut hasher, &mut scratch, room).await?;
            if n == 0 {
                break;
            }
            size = add(size, n)?;
            if let Some(limit) = limit.filter(|l| size > *l) {
                return Err(StoreError::TooLarge(format!("body exceeds {limit} bytes")));
            }
            if existed {
                // Verified and dropped: nothing to write.
                buf.clear();
            } else if buf.len() == PART_SIZE {
                if multipart.is_none() {
                    // Registered before the creation is over, for the leftover sweep.
                    let _creating = self.inner.creating.read().await;
                    let id = self
                        .inner
                        .s3
                        .create_multipart(&key)
                        .await
                        .map_err(s3_error)?;
                    self.inner.in_flight().insert(id.clone());
                    *multipart = Some((id, Vec::new()));
                }
                if let Some((id, parts)) = multipart.as_mut() {
                    let part = self.put_part(&key, id, parts.len(), buf.split().freeze());
                    parts.push(part.await?);
                }
            }
        }
        check(expected, hasher.finish())?;
        if existed {
            return Ok(Written {
                size,
                existed: true,
            });
        }
        let existed = match multipart.take() {
            None => self.put_create(&key, buf.freeze()).await?,
            Some((id, mut parts)) => {
                let done = async {
                    if !buf.is_empty() {
                        let n = parts.len();
                        parts.push(self.put_part(&key, &id, n, buf.freeze()).await?);
                    }
                    self.inner
                        .s3
                        .complete_multipart(&key, &id, parts)
                        .await
                        .map_err(s3_error)
                }
                .await;
                if done.is_err() {
                    self.abort_multipart(&key, &id).await;
                }
                self.inner.in_flight().remove(&id);
                done?;
                false
            }
        };
        Ok(Written { size, existed })
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Blobs {
    fn kind(&self) -> &'static str {
        "s3"
    }

    /// Hashes while streaming. A blob under one part is sent as one PUT after its hash
    /// matched; a larger one as a multipart upload to its digest key, completed only after
    /// the hash matched and aborted otherwise, so nothing partial or wrong is ever visible.
    async fn put(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError> {
        let existed = self.stat(expected).await?.is_some();
        let mut multipart = None;
        let r = self
            .put_inner(expected, body, limit, existed, &mut multipart)
            .await;
        if let Some((id, _)) = multipart {
            self.abort_multipart(&self.blob_key(expected), &id).await;
            self.inner.in_flight().remove(&id);
        }
        r
    }

    async fn stat(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        let s3 = &self.inner.s3;
        let found = self.at_blob(d, |key| async move { s3.head(&key).await });
        Ok(found.await.map_err(s3_error)?.map(|(_, meta)| meta.size))
    }

    /// One ranged GET, streamed as S3 sends it; the blob's size comes from the response.
    async fn read(&self, d: &Digest, range: ByteRange) -> Result<BlobRead, StoreError> {
        let empty = |size| BlobRead {
            size,
            stream: Box::pin(stream::empty()),
        };
        let get_range = match range.len {
            // HTTP cannot ask for zero bytes.
            Some(0) => {
                let size = self
                    .stat(d)
                    .await?
                    .ok_or_else(|| StoreError::BlobUnknown(d.clone()))?;
                range.resolve(size)?;
                return Ok(empty(size));
            }
            Some(len) => {
                let end = range
                    .start
                    .checked_add(len)
                    .ok_or(StoreError::RangeInvalid {
                        start: range.start,
                        len: range.len,
                        size: 0,
                    })?;
                Some(GetRange::Bounded(range.start..end))
            }
            None if range.start == 0 => None,
            None => Some(GetRange::Offset(range.start)),
        };
        let opts = GetOptions {
            range: get_range,
            ..GetOptions::default()
        };
        let s3 = &self.inner.s3;
        let got = self.at_blob(d, |key| {
            let opts = opts.clone();
            async move { s3.get_opts(&key, opts).await }
        });
        match got.await {
            Ok(None) => Err(StoreError::BlobUnknown(d.clone())),
            Ok(Some((_, r))) => {
                let size = r.meta.size;
                let (start, len) = range.resolve(size)?;
                if r.range != (start..start + len) {
                    return Err(StoreError::RangeInvalid {
                        start: range.start,
                        len: range.len,
                        size,
                    });
                }
                Ok(BlobRead {
                    size,
                    stream: Box::pin(
                        r.into_stream()
                            .map_err(|e| io::Error::other(format!("S3: {e}"))),
                    ),
                })
            }
            // A range S3 refused (416): say why in the contract's terms.
            Err(e) if range != ByteRange::ALL => {
                let size = self
                    .stat(d)
                    .await?
                    .ok_or_else(|| StoreError::BlobUnknown(d.clone()))?;
                match range.resolve(size)? {
                    (_, 0) => Ok(empty(size)),
                    _ => Err(s3_error(e)),
                }
            }
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        // S3 answers a DELETE the same whether the key existed or not.
        let existed = self.stat(d).await?.is_some();
        self.delete_everywhere(d).await?;
        Ok(existed)
    }

    /// Keys under `blobs/` that are not digest keys (one paginated listing).
    async fn strays(&self) -> Result<Vec<String>, StoreError> {
        let prefix = self.key("blobs");
        let listed: Vec<_> = self
            .inner
            .s3
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(s3_error)?;
        Ok(listed
            .into_iter()
            .filter(|meta| self.digest_of_key(&meta.location).is_none())
            .map(|meta| meta.location.to_string())
            .collect())
    }

    /// A server-side copy to `PREFIX/quarantine/<alg>-<hex>.<unix-time>`, then the blob's
    /// delete (its object and index line): S3 cannot rename. A crash in between leaves the
    /// blob in place and a copy beside it; the next repair copies it again.
    async fn quarantine(&self, d: &Digest, unix_time: u64) -> Result<Option<String>, StoreError> {
        let to = self.key(&format!(
            "quarantine/{}-{}.{unix_time}",
            d.algorithm(),
            &*d.hex()
        ));
        let (s3, to_key) = (&self.inner.s3, &to);
        let copied = self.at_blob(d, |key| async move { s3.copy(&key, to_key).await });
        if copied.await.map_err(s3_error)?.is_none() {
            return Ok(None);
        }
        self.delete(d).await?;
        Ok(Some(to.to_string()))
    }

    /// A paginated listing of `blobs/` (keys that are not digest keys are skipped), then the
    /// index's session objects.
    fn list(&self) -> DigestStream<'_> {
        let prefix = self.key("blobs");
        let listed = self.inner.s3.list(Some(&prefix)).filter_map(move |meta| {
            let r = match meta {
                Err(e) => Some(Err(s3_error(e))),
                Ok(meta) => self.digest_of_key(&meta.location).map(Ok),
            };
            std::future::ready(r)
        });
        Box::pin(listed.chain(self.list_indexed()))
    }

    async fn redirect_url(&self, d: &Digest, ttl: Duration) -> Result<Option<String>, StoreError> {
        if !self.inner.redirect {
            return Ok(None);
        }
        let s3 = &self.inner.s3;
        let found = self.at_blob(d, |key| async move { s3.head(&key).await });
        let key = match found.await.map_err(s3_error)? {
            Some((key, _)) => key,
            None => self.blob_key(d),
        };
        self.inner
            .s3
            .signed_url(http::Method::GET, &key, ttl)
            .await
            .map(|u| Some(u.to_string()))
            .map_err(s3_error)
    }

    async fn begin(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError> {
        self.session_begin(id, algorithm, info).await
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<u64, StoreError> {
        self.session_append(id, offset, expect_len, body).await
    }

    async fn session_size(&self, id: &UploadId) -> Result<u64, StoreError> {
        self.session_len(id).await
    }

    /// Sessions live in the bucket, where every replica over it writes them.
    fn shared_sessions(&self) -> bool {
        true
    }

    async fn session(&self, id: &UploadId) -> Result<Option<SessionRecord>, StoreError> {
        self.session_record(id).await
    }

    async fn finish(&self, id: &UploadId, expected: &Digest) -> Result<Written, StoreError> {
        self.session_finish(id, expected).await
    }

    async fn abort(&self, id: &UploadId) -> Result<bool, StoreError> {
        self.session_abort(id).await
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.session_records().await
    }

    /// Incomplete multipart uploads and session objects nothing records (`leftovers.rs`).
    async fn sweep_leftovers(&self, cutoff: SystemTime, dry_run: bool) -> Result<u64, StoreError> {
        let swept = self.leftovers(cutoff, dry_run).await?;
        Ok(swept.uploads_aborted + swept.objects_deleted)
    }
}

pub(crate) fn add(size: u64, n: usize) -> Result<u64, StoreError> {
    u64::try_from(n)
        .ok()
        .and_then(|n| size.checked_add(n))
        .ok_or_else(|| StoreError::TooLarge("blob size overflows".into()))
}

pub(crate) fn check(expected: &Digest, actual: Digest) -> Result<(), StoreError> {
    if &actual == expected {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// The S3 backend's directory under a data dir: the bucket binding (`binding.rs`), and what
/// versions before the shared state kept there (moved into the bucket at open).
pub fn state_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join("s3")
}
