//! The storage layer's one error type. It names what went wrong in the store's terms;
//! the HTTP layer alone maps it to status codes and the spec's error codes.

use std::io;

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("content does not match digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid repository name: {0:?}")]
    NameInvalid(String),
    #[error("invalid tag: {0:?}")]
    TagInvalid(String),
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("blob {0} is not known to this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not known to this repository")]
    ManifestUnknown(String),
    #[error("manifest references {0}, which this repository does not hold")]
    ManifestBlobUnknown(Digest),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("upload session is not known")]
    UploadUnknown,
    #[error("invalid upload: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload currently ends.
    #[error("chunk starts at {requested}, but the upload holds {current} bytes")]
    UploadOutOfOrder { requested: u64, current: u64 },
    /// A chunk whose body is not as long as its `Content-Range` said; it was rolled back.
    #[error(
        "Content-Range announced a chunk of {announced} bytes, but the body carried \
         {received}; the chunk was discarded and the upload still holds {holds} bytes"
    )]
    ChunkLength {
        announced: u64,
        received: u64,
        holds: u64,
    },
    /// A new upload session would pass a cap: the owner's own (`per_client`) or the
    /// registry-wide one. `retry_after`: seconds until room can be made.
    #[error(
        "too many open upload sessions{} (at most {limit}); finish or cancel one, or retry in {retry_after} s",
        if *per_client { " for this client" } else { "" }
    )]
    TooManyUploads {
        limit: usize,
        per_client: bool,
        retry_after: u64,
    },
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("too large: {0}")]
    TooLarge(String),
    /// The operation is understood but refused (a blob still referenced by a manifest).
    #[error("denied: {0}")]
    Denied(String),
    /// A read of a blob outside it (`len` `None`: to its end). The HTTP layer checks client
    /// ranges first, so this is the backend contract's guard, not a client-facing answer.
    #[error("range from {start} ({}) is not inside a blob of {size} bytes", match len { Some(n) => format!("{n} bytes"), None => "to the end".to_owned() })]
    RangeInvalid {
        start: u64,
        len: Option<u64>,
        size: u64,
    },
    /// The blob backend or the metadata database is unreachable or throttling and retries
    /// ran out (S3 `SlowDown`, 503, a timeout, a lost connection): worth retrying later,
    /// not a fault of the request. The message names which.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Something only one may do at a time is being done elsewhere (GC on another replica).
    #[error("busy: {0}")]
    Busy(String),
    /// What this store's blob backend cannot do (yet): named, never done half.
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("data directory {0} is in use by another airdock process")]
    Locked(String),
    #[error("metadata journal corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True for errors caused by the caller rather than by the store or the machine.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            StoreError::Io(_)
                | StoreError::Corrupt(_)
                | StoreError::Locked(_)
                | StoreError::Unavailable(_)
        )
    }
}
