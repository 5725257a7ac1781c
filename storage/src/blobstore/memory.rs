//! An in-memory [`BlobStore`]: the contract's reference implementation, for unit tests of
//! the store and of the contract suite itself. Never used to serve: nothing survives the
//! process. [`MemBlobStore::reopen`] stands in for a restart (the bytes stay, anything an
//! implementation keeps only in memory, like a running hash, is gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{
    BlobClock, BlobRead, BlobStore, Body, ByteRange, DigestStream, SessionRecord, Written,
};
use crate::{Algorithm, Digest, StoreError, UploadId};

struct Session {
    data: Vec<u8>,
    info: Bytes,
    started: SystemTime,
    last_write: SystemTime,
    /// A request is appending or finishing: a second one is refused.
    busy: bool,
}

#[derive(Default)]
struct State {
    blobs: HashMap<Digest, Bytes>,
    /// Blobs moved aside by `quarantine`, by the name it returned.
    quarantined: HashMap<String, Bytes>,
    sessions: HashMap<UploadId, Session>,
}

/// Blobs and sessions in a shared map. Clones and [`MemBlobStore::reopen`]s see the same data.
#[derive(Clone, Default)]
pub struct MemBlobStore {
    state: Arc<Mutex<State>>,
    /// How long `stat` and `delete` wait on the runtime's timer first, as a network
    /// backend's requests wait on its I/O driver (tests of what runs meanwhile).
    latency: Option<std::time::Duration>,
}

impl MemBlobStore {
    pub fn new() -> MemBlobStore {
        MemBlobStore::default()
    }

    /// This store with `stat` and `delete` taking `latency` each, spent awaiting the
    /// runtime's timer (as an S3 request awaits its I/O driver).
    pub fn with_latency(mut self, latency: std::time::Duration) -> MemBlobStore {
        self.latency = Some(latency);
        self
    }

    async fn wait(&self) {
        if let Some(t) = self.latency {
            tokio::time::sleep(t).await;
        }
    }

    /// A new instance over the same data, as after a restart.
    pub fn reopen(&self) -> MemBlobStore {
        self.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Read `body` whole, refusing more than `limit` bytes.
async fn read_body(body: Body<'_>, limit: Option<u64>) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    let cap = limit.map_or(u64::MAX, |l| l.saturating_add(1));
    body.take(cap)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StoreError::UploadInvalid(format!("reading the body: {e}")))?;
    if let Some(limit) = limit.filter(|l| buf.len() as u64 > *l) {
        return Err(StoreError::TooLarge(format!("body exceeds {limit} bytes")));
    }
    Ok(buf)
}

fn verify(expected: &Digest, data: &[u8]) -> Result<(), StoreError> {
    let actual = Digest::of(expected.algorithm(), data);
    if actual != *expected {
        return Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

impl MemBlobStore {
    fn store(&self, d: &Digest, data: Vec<u8>) -> Written {
        let size = data.len() as u64;
        let mut st = self.state();
        let existed = st.blobs.contains_key(d);
        if !existed {
            st.blobs.insert(d.clone(), Bytes::from(data));
        }
        Written { size, existed }
    }

    /// Claim session `id` for one writer.
    fn claim(&self, id: &UploadId) -> Result<u64, StoreError> {
        let mut st = self.state();
        let s = st.sessions.get_mut(id).ok_or(StoreError::UploadUnknown)?;
        if s.busy {
            return Err(StoreError::UploadInvalid(
                "another request is writing to this upload".into(),
            ));
        }
        s.busy = true;
        Ok(s.data.len() as u64)
    }

    fn release(&self, id: &UploadId) {
        if let Some(s) = self.state().sessions.get_mut(id) {
            s.busy = false;
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for MemBlobStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn put(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError> {
        let data = read_body(body, limit).await?;
        verify(expected, &data)?;
        Ok(self.store(expected, data))
    }

    async fn stat(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        self.wait().await;
        Ok(self.state().blobs.get(d).map(|b| b.len() as u64))
    }

    async fn read(&self, d: &Digest, range: ByteRange) -> Result<BlobRead, StoreError> {
        let blob = self
            .state()
            .blobs
            .get(d)
            .cloned()
            .ok_or_else(|| StoreError::BlobUnknown(d.clone()))?;
        let size = blob.len() as u64;
        let (start, len) = range.resolve(size)?;
        // In range by `resolve`, so the casts cannot truncate.
        let part = blob.slice(start as usize..(start + len) as usize);
        let items = (!part.is_empty()).then_some(Ok(part));
        Ok(BlobRead {
            size,
            stream: Box::pin(futures_util::stream::iter(items)),
        })
    }

    async fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        self.wait().await;
        Ok(self.state().blobs.remove(d).is_some())
    }

    async fn quarantine(&self, d: &Digest, unix_time: u64) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        let Some(bytes) = state.blobs.remove(d) else {
            return Ok(None);
        };
        let name = format!("quarantine/{}-{}.{unix_time}", d.algorithm(), d.hex());
        state.quarantined.insert(name.clone(), bytes);
        Ok(Some(name))
    }

    fn list(&self) -> DigestStream<'_> {
        let all: Vec<_> = self.state().blobs.keys().cloned().map(Ok).collect();
        Box::pin(futures_util::stream::iter(all))
    }

    async fn begin(
        &self,
        id: &UploadId,
        _algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError> {
        let mut st = self.state();
        if st.sessions.contains_key(id) {
            return Err(StoreError::UploadInvalid(format!(
                "upload {id} is already open"
            )));
        }
        let now = SystemTime::now();
        st.sessions.insert(
            id.clone(),
            Session {
                data: Vec::new(),
                info,
                started: now,
                last_write: now,
                busy: false,
            },
        );
        Ok(())
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<u64, StoreError> {
        let current = self.claim(id)?;
        if offset != current {
            self.release(id);
            return Err(StoreError::UploadOutOfOrder {
                requested: offset,
                current,
            });
        }
        let chunk = read_body(body, None).await;
        let mut st = self.state();
        // Aborted meanwhile: the write fails.
        let s = st.sessions.get_mut(id).ok_or(StoreError::UploadUnknown)?;
        s.busy = false;
        let chunk = chunk?;
        if let Some(announced) = expect_len.filter(|n| *n != chunk.len() as u64) {
            return Err(StoreError::ChunkLength {
                announced,
                received: chunk.len() as u64,
                holds: current,
            });
        }
        s.data.extend_from_slice(&chunk);
        s.last_write = SystemTime::now();
        Ok(s.data.len() as u64)
    }

    fn reads_sessions(&self) -> bool {
        true
    }

    async fn read_session(&self, id: &UploadId) -> Result<BlobRead, StoreError> {
        let data = {
            let st = self.state();
            let s = st.sessions.get(id).ok_or(StoreError::UploadUnknown)?;
            Bytes::copy_from_slice(&s.data)
        };
        let items = (!data.is_empty()).then_some(Ok(data.clone()));
        Ok(BlobRead {
            size: data.len() as u64,
            stream: Box::pin(futures_util::stream::iter(items)),
        })
    }

    async fn session_size(&self, id: &UploadId) -> Result<u64, StoreError> {
        let st = self.state();
        let s = st.sessions.get(id).ok_or(StoreError::UploadUnknown)?;
        Ok(s.data.len() as u64)
    }

    async fn finish(&self, id: &UploadId, expected: &Digest) -> Result<Written, StoreError> {
        self.claim(id)?;
        let data = {
            let mut st = self.state();
            let s = st.sessions.remove(id).ok_or(StoreError::UploadUnknown)?;
            s.data
        };
        verify(expected, &data)?;
        Ok(self.store(expected, data))
    }

    async fn abort(&self, id: &UploadId) -> Result<bool, StoreError> {
        Ok(self.state().sessions.remove(id).is_some())
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .state()
            .sessions
            .iter()
            .map(|(id, s)| SessionRecord {
                id: id.clone(),
                size: s.data.len() as u64,
                info: s.info.clone(),
                started: s.started,
                last_write: s.last_write,
            })
            .collect())
    }
}

/// A [`BlobClock`] in memory: the reference for the clock's rules, and the clock of a
/// store whose backend has no writable "last used" time of its own (S3: `LastModified`
/// cannot be refreshed without rewriting the object).
#[derive(Default)]
pub struct MemClock {
    times: Mutex<HashMap<Digest, SystemTime>>,
    /// What a blob with no record answers: the time the store opened. Touches are lost with
    /// the process, and this is the clock's rule for that (a blob written or claimed just
    /// before a restart keeps a whole grace window after it).
    since: Option<SystemTime>,
}

impl MemClock {
    /// A clock that answers `since` for every blob it has no record of.
    pub fn since(since: SystemTime) -> MemClock {
        MemClock {
            times: Mutex::default(),
            since: Some(since),
        }
    }

    fn times(&self) -> MutexGuard<'_, HashMap<Digest, SystemTime>> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlobClock for MemClock {
    fn touch(&self, d: &Digest, at: SystemTime) {
        let mut times = self.times();
        let t = times.entry(d.clone()).or_insert(at);
        *t = (*t).max(at);
    }

    fn last_used(&self, d: &Digest) -> Option<SystemTime> {
        self.times().get(d).copied().or(self.since)
    }

    fn forget(&self, d: &Digest) {
        self.times().remove(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobstore::testsuite::{self, Harness};

    struct MemHarness(MemBlobStore);

    #[async_trait::async_trait]
    impl Harness for MemHarness {
        fn store(&self) -> &dyn BlobStore {
            &self.0
        }

        async fn restart(&mut self) {
            self.0 = self.0.reopen();
        }
    }

    crate::blobstore_contract_tests!(MemHarness(MemBlobStore::new()));

    #[tokio::test]
    async fn clock_and_writes() {
        testsuite::clock_and_writes(&MemBlobStore::new(), &MemClock::default()).await;
    }

    #[test]
    fn clock_keeps_the_latest_touch() {
        testsuite::clock_keeps_the_latest_touch(&MemClock::default());
        let opened = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let clock = MemClock::since(opened);
        let d = Digest::of(crate::Algorithm::Sha256, b"never touched");
        assert_eq!(clock.last_used(&d), Some(opened));
        let later = opened + std::time::Duration::from_secs(5);
        clock.touch(&d, later);
        clock.touch(&d, opened);
        assert_eq!(clock.last_used(&d), Some(later));
        clock.forget(&d);
        assert_eq!(clock.last_used(&d), Some(opened));
    }

    #[tokio::test]
    async fn reads_a_session_back_without_closing_it() {
        testsuite::read_session_leaves_it_open(&MemBlobStore::new()).await;
    }
}
