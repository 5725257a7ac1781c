//! The contract suite: every [`BlobStore`] implementation must pass all of it (modelled on
//! Distribution's `registry/storage/driver/testsuites`, run against each of its drivers).
//!
//! A backend's tests implement [`Harness`] and expand [`crate::blobstore_contract_tests!`]
//! with an expression that builds one, which makes one `#[tokio::test]` per case:
//!
//! ```text
//! airdock_storage::blobstore_contract_tests!(MyHarness::new().await);
//! ```
//!
//! Outside this crate the suite needs the `testsuite` feature. Cases use only the trait, so a
//! backend passes by keeping the contract, not by matching another backend's internals.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::{BlobClock, BlobStore, ByteRange, Written};
use crate::{Algorithm, Digest, StoreError, UploadId};

/// A backend under test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// The instance under test (fresh and empty when the harness is made).
    fn store(&self) -> &dyn BlobStore;
    /// Replace the instance with a new one over the same stored data, as a restart of the
    /// process would: whatever the old instance kept only in memory is gone.
    async fn restart(&mut self);
}

/// Deterministic bytes that differ per `seed` (no two cases share a blob by accident).
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn sha(b: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, b)
}

async fn put(s: &dyn BlobStore, data: &[u8]) -> Written {
    let d = sha(data);
    s.put(&d, &mut &data[..], None).await.expect("put")
}

/// The whole range `r` of `d`, and the blob size the read reported.
async fn read(s: &dyn BlobStore, d: &Digest, r: ByteRange) -> Result<(u64, Vec<u8>), StoreError> {
    let got = s.read(d, r).await?;
    let chunks: Vec<Bytes> = got.stream.try_collect().await?;
    Ok((got.size, chunks.concat()))
}

async fn listed(s: &dyn BlobStore) -> Vec<Digest> {
    let mut all: Vec<Digest> = s.list().try_collect().await.expect("list");
    all.sort();
    all
}

async fn append(s: &dyn BlobStore, id: &UploadId, offset: u64, chunk: &[u8]) -> u64 {
    s.append(id, offset, Some(chunk.len() as u64), &mut &chunk[..])
        .await
        .expect("append")
}

async fn begin(s: &dyn BlobStore, info: &str) -> UploadId {
    let id = UploadId::new();
    s.begin(
        &id,
        Algorithm::Sha256,
        Bytes::copy_from_slice(info.as_bytes()),
    )
    .await
    .expect("begin");
    id
}

/// Nothing about `d` is visible: no stat, no read, not listed.
async fn absent(s: &dyn BlobStore, d: &Digest) {
    assert_eq!(s.stat(d).await.expect("stat"), None, "{d} is visible");
    assert!(matches!(
        s.read(d, ByteRange::ALL).await,
        Err(StoreError::BlobUnknown(_))
    ));
    assert!(!listed(s).await.contains(d), "{d} is listed");
}

/// A body that yields `good` bytes and then fails, as a dropped connection does.
struct Broken {
    good: Vec<u8>,
    pos: usize,
}

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos == self.good.len() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            )));
        }
        let n = buf.remaining().min(self.good.len() - self.pos).min(4096);
        let pos = self.pos;
        buf.put_slice(&self.good[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

// ---- blobs ---------------------------------------------------------------------------

pub async fn put_stat_read<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(1, 1000);
    let d = sha(&data);
    assert_eq!(
        put(s, &data).await,
        Written {
            size: 1000,
            existed: false
        }
    );
    assert_eq!(s.stat(&d).await.expect("stat"), Some(1000));
    assert_eq!(
        read(s, &d, ByteRange::ALL).await.expect("read"),
        (1000, data)
    );
}

pub async fn put_existing_blob_is_idempotent<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(2, 5000);
    put(s, &data).await;
    assert_eq!(
        put(s, &data).await,
        Written {
            size: 5000,
            existed: true
        }
    );
    assert_eq!(
        read(s, &sha(&data), ByteRange::ALL).await.expect("read").1,
        data
    );
    assert_eq!(listed(s).await, vec![sha(&data)]);
}

pub async fn empty_blob<H: Harness>(h: H) {
    let s = h.store();
    let d = sha(b"");
    assert_eq!(
        put(s, b"").await,
        Written {
            size: 0,
            existed: false
        }
    );
    assert_eq!(s.stat(&d).await.expect("stat"), Some(0));
    assert_eq!(
        read(s, &d, ByteRange::ALL).await.expect("read"),
        (0, vec![])
    );
    let none = ByteRange {
        start: 0,
        len: Some(0),
    };
    assert_eq!(read(s, &d, none).await.expect("empty range"), (0, vec![]));
    let past = ByteRange {
        start: 1,
        len: None,
    };
    assert!(matches!(
        read(s, &d, past).await,
        Err(StoreError::RangeInvalid { size: 0, .. })
    ));
}

/// Ranges inside, at the edges and outside a blob larger than a backend's read chunks.
pub async fn ranged_reads<H: Harness>(h: H) {
    let s = h.store();
    let size = (3 << 20) + 7;
    let data = pattern(3, size);
    let d = sha(&data);
    put(s, &data).await;
    let r = |start: u64, len: Option<u64>| ByteRange { start, len };
    let cases: [(u64, Option<u64>); 7] = [
        (0, Some(1)),
        (1, Some(10)),
        // Across a MiB boundary.
        ((1 << 20) - 3, Some(7)),
        ((1 << 20) - 3, None),
        (size as u64 - 1, Some(1)),
        (size as u64 - 1, None),
        (0, Some(size as u64)),
    ];
    for (start, len) in cases {
        let (total, got) = read(s, &d, r(start, len)).await.expect("range");
        let end = len.map_or(size, |l| (start + l) as usize);
        assert_eq!(total, size as u64);
        assert!(got == data[start as usize..end], "range {start} {len:?}");
    }
    // At the end: empty, not an error.
    for len in [None, Some(0)] {
        let (_, got) = read(s, &d, r(size as u64, len)).await.expect("at end");
        assert!(got.is_empty());
    }
    // Beyond the end, or overflowing: refused, never short or padded.
    for (start, len) in [
        (size as u64 + 1, None),
        (size as u64 + 1, Some(0)),
        (size as u64 - 1, Some(2)),
        (0, Some(size as u64 + 1)),
        (1, Some(u64::MAX)),
        (u64::MAX, Some(u64::MAX)),
    ] {
        assert!(
            matches!(
                read(s, &d, r(start, len)).await,
                Err(StoreError::RangeInvalid { .. })
            ),
            "range {start} {len:?}"
        );
    }
}

pub async fn unknown_blob<H: Harness>(h: H) {
    absent(h.store(), &sha(b"never stored")).await;
}

pub async fn digest_mismatch_leaves_nothing<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(4, 70_000);
    let wrong = sha(b"something else");
    match s.put(&wrong, &mut &data[..], None).await {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wrong.clone(), sha(&data)));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    absent(s, &wrong).await;
    absent(s, &sha(&data)).await;
    // A sha512 digest is verified with sha512.
    let d512 = Digest::of(Algorithm::Sha512, &data);
    let w = s
        .put(&d512, &mut &data[..], None)
        .await
        .expect("sha512 put");
    assert_eq!(w.size, data.len() as u64);
    assert_eq!(s.stat(&d512).await.expect("stat"), Some(data.len() as u64));
}

pub async fn failed_body_leaves_nothing<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(5, 100_000);
    let d = sha(&data);
    let mut body = Broken {
        good: data[..60_000].to_vec(),
        pos: 0,
    };
    assert!(matches!(
        s.put(&d, &mut body, None).await,
        Err(StoreError::UploadInvalid(_))
    ));
    absent(s, &d).await;
}

pub async fn size_limit_leaves_nothing<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(6, 10_000);
    let d = sha(&data);
    assert!(matches!(
        s.put(&d, &mut &data[..], Some(9_999)).await,
        Err(StoreError::TooLarge(_))
    ));
    absent(s, &d).await;
    let w = s
        .put(&d, &mut &data[..], Some(10_000))
        .await
        .expect("at the limit");
    assert_eq!(w.size, 10_000);
}

/// Many writers of the same blob at once: all succeed and it is stored once, whole.
pub async fn concurrent_puts_of_one_digest<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(7, (2 << 20) + 11);
    let d = sha(&data);
    let puts = (0..8).map(|_| async { s.put(&d, &mut &data[..], None).await });
    for r in futures_util::future::join_all(puts).await {
        assert_eq!(r.expect("concurrent put").size, data.len() as u64);
    }
    assert_eq!(read(s, &d, ByteRange::ALL).await.expect("read").1, data);
    assert_eq!(listed(s).await, vec![d]);
}

pub async fn delete_is_idempotent<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(8, 300);
    let d = sha(&data);
    put(s, &data).await;
    assert!(s.delete(&d).await.expect("delete"));
    absent(s, &d).await;
    assert!(!s.delete(&d).await.expect("delete again"));
    // Stored again after a delete, it is whole again.
    assert!(!put(s, &data).await.existed);
    assert_eq!(read(s, &d, ByteRange::ALL).await.expect("read").1, data);
}

pub async fn list_streams_every_blob<H: Harness>(h: H) {
    let s = h.store();
    assert!(listed(s).await.is_empty());
    for seed in 0..20u8 {
        put(s, &pattern(seed, 10 + seed as usize)).await;
    }
    let mut want: Vec<Digest> = (0..20u8)
        .map(|seed| sha(&pattern(seed, 10 + seed as usize)))
        .collect();
    let big = Digest::of(Algorithm::Sha512, b"sha512 too");
    s.put(&big, &mut &b"sha512 too"[..], None)
        .await
        .expect("sha512");
    want.push(big);
    want.sort();
    assert_eq!(listed(s).await, want);
    s.delete(&want[0]).await.expect("delete");
    assert_eq!(listed(s).await, want[1..].to_vec());
}

// ---- sessions ------------------------------------------------------------------------

async fn finish_and_check(s: &dyn BlobStore, id: &UploadId, data: &[u8]) {
    let d = sha(data);
    let w = s.finish(id, &d).await.expect("finish");
    assert_eq!(w.size, data.len() as u64);
    assert_eq!(read(s, &d, ByteRange::ALL).await.expect("read").1, data);
    assert!(matches!(
        s.session_size(id).await,
        Err(StoreError::UploadUnknown)
    ));
    assert!(s.sessions().await.expect("sessions").is_empty());
}

pub async fn session_small_chunks<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(9, 5000);
    let id = begin(s, "small").await;
    assert_eq!(s.session_size(&id).await.expect("size"), 0);
    let mut at = 0u64;
    // One byte at a time first, then odd sizes: far below any backend's part size.
    for chunk in data[..64].chunks(1).chain(data[64..].chunks(777)) {
        at = append(s, &id, at, chunk).await;
    }
    assert_eq!(at, data.len() as u64);
    assert_eq!(s.session_size(&id).await.expect("size"), at);
    finish_and_check(s, &id, &data).await;
}

pub async fn session_large_chunks<H: Harness>(h: H) {
    let s = h.store();
    // Chunks past S3's 5 MiB part minimum and not a multiple of it, and a small tail.
    let data = pattern(10, (13 << 20) + 5);
    let id = begin(s, "large").await;
    let mut at = 0u64;
    for chunk in data.chunks((6 << 20) + 1) {
        at = append(s, &id, at, chunk).await;
    }
    assert_eq!(at, data.len() as u64);
    finish_and_check(s, &id, &data).await;
}

pub async fn session_refuses_out_of_order_chunks<H: Harness>(h: H) {
    let s = h.store();
    let id = begin(s, "ooo").await;
    let r = s.append(&id, 5, None, &mut &b"late"[..]).await;
    assert!(matches!(
        r,
        Err(StoreError::UploadOutOfOrder {
            requested: 5,
            current: 0
        })
    ));
    assert_eq!(append(s, &id, 0, b"abc").await, 3);
    for wrong in [0, 2, 4] {
        assert!(matches!(
            s.append(&id, wrong, None, &mut &b"x"[..]).await,
            Err(StoreError::UploadOutOfOrder { current: 3, .. })
        ));
    }
    assert_eq!(s.session_size(&id).await.expect("size"), 3);
    assert_eq!(append(s, &id, 3, b"def").await, 6);
    finish_and_check(s, &id, b"abcdef").await;
}

/// A chunk that is not as long as announced, or whose body fails, is rolled back whole.
pub async fn session_rolls_back_failed_chunks<H: Harness>(h: H) {
    let s = h.store();
    let id = begin(s, "rollback").await;
    append(s, &id, 0, b"head").await;
    match s.append(&id, 4, Some(10), &mut &b"short"[..]).await {
        Err(StoreError::ChunkLength {
            announced: 10,
            received: 5,
            holds: 4,
        }) => {}
        other => panic!("expected ChunkLength, got {other:?}"),
    }
    assert_eq!(s.session_size(&id).await.expect("size"), 4);
    let mut broken = Broken {
        good: pattern(11, 50_000),
        pos: 0,
    };
    assert!(matches!(
        s.append(&id, 4, None, &mut broken).await,
        Err(StoreError::UploadInvalid(_))
    ));
    assert_eq!(s.session_size(&id).await.expect("size"), 4);
    append(s, &id, 4, b"tail").await;
    finish_and_check(s, &id, b"headtail").await;
}

pub async fn session_resumes_after_restart<H: Harness>(mut h: H) {
    let data = pattern(12, (1 << 20) + 3);
    let id = begin(h.store(), "resume me").await;
    let half = data.len() / 2;
    append(h.store(), &id, 0, &data[..half]).await;
    h.restart().await;
    let s = h.store();
    assert_eq!(s.session_size(&id).await.expect("size"), half as u64);
    let listed = s.sessions().await.expect("sessions");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].id, listed[0].size, &listed[0].info[..]),
        (&id, half as u64, &b"resume me"[..])
    );
    // The running hash is gone with the old instance: finish must still verify everything.
    append(s, &id, half as u64, &data[half..]).await;
    match s.finish(&id, &sha(b"not it")).await {
        Err(StoreError::DigestMismatch { actual, .. }) => assert_eq!(actual, sha(&data)),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // A mismatch ends the session.
    assert!(matches!(
        s.session_size(&id).await,
        Err(StoreError::UploadUnknown)
    ));
    let id = begin(s, "again").await;
    append(s, &id, 0, &data[..half]).await;
    h.restart().await;
    let s = h.store();
    append(s, &id, half as u64, &data[half..]).await;
    finish_and_check(s, &id, &data).await;
}

pub async fn session_abort<H: Harness>(h: H) {
    let s = h.store();
    let id = begin(s, "abort").await;
    append(s, &id, 0, b"bytes").await;
    assert!(s.abort(&id).await.expect("abort"));
    assert!(!s.abort(&id).await.expect("abort again"));
    assert!(matches!(
        s.session_size(&id).await,
        Err(StoreError::UploadUnknown)
    ));
    assert!(matches!(
        s.append(&id, 5, None, &mut &b"more"[..]).await,
        Err(StoreError::UploadUnknown)
    ));
    assert!(matches!(
        s.finish(&id, &sha(b"bytes")).await,
        Err(StoreError::UploadUnknown)
    ));
    assert!(s.sessions().await.expect("sessions").is_empty());
    absent(s, &sha(b"bytes")).await;
    // An id never opened.
    assert!(!s.abort(&UploadId::new()).await.expect("abort unknown"));
}

pub async fn session_finish_with_wrong_digest_leaves_nothing<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(13, 200_000);
    let id = begin(s, "wrong").await;
    append(s, &id, 0, &data).await;
    let wrong = sha(b"other");
    assert!(matches!(
        s.finish(&id, &wrong).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    absent(s, &wrong).await;
    absent(s, &sha(&data)).await;
    assert!(s.sessions().await.expect("sessions").is_empty());
}

pub async fn session_finish_edge_cases<H: Harness>(h: H) {
    let s = h.store();
    // Empty.
    let id = begin(s, "empty").await;
    finish_and_check(s, &id, b"").await;
    // A digest of another algorithm than the running hash's.
    let data = pattern(14, 3000);
    let id = begin(s, "sha512").await;
    append(s, &id, 0, &data).await;
    let d = Digest::of(Algorithm::Sha512, &data);
    assert_eq!(s.finish(&id, &d).await.expect("finish").size, 3000);
    assert_eq!(read(s, &d, ByteRange::ALL).await.expect("read").1, data);
    // Into a blob already stored.
    let id = begin(s, "dup").await;
    append(s, &id, 0, &data).await;
    let w = s.finish(&id, &sha(&data)).await.expect("first");
    assert!(!w.existed);
    let id = begin(s, "dup").await;
    append(s, &id, 0, &data).await;
    assert!(s.finish(&id, &sha(&data)).await.expect("second").existed);
    assert!(s.sessions().await.expect("sessions").is_empty());
}

pub async fn session_ids_and_listing<H: Harness>(h: H) {
    let s = h.store();
    let before = SystemTime::now() - Duration::from_secs(2);
    let a = begin(s, "a").await;
    let b = begin(s, "b").await;
    assert!(matches!(
        s.begin(&a, Algorithm::Sha256, Bytes::new()).await,
        Err(StoreError::UploadInvalid(_))
    ));
    append(s, &b, 0, b"12345").await;
    let mut all = s.sessions().await.expect("sessions");
    all.sort_by(|x, y| x.info.cmp(&y.info));
    assert_eq!(all.len(), 2);
    assert_eq!(
        (&all[0].id, all[0].size, &all[0].info[..]),
        (&a, 0, &b"a"[..])
    );
    assert_eq!(
        (&all[1].id, all[1].size, &all[1].info[..]),
        (&b, 5, &b"b"[..])
    );
    for r in &all {
        assert!(r.started >= before && r.last_write >= r.started, "{r:?}");
    }
    assert!(matches!(
        s.session_size(&UploadId::new()).await,
        Err(StoreError::UploadUnknown)
    ));
}

/// A session found by its id, also by a new instance (as a replica that did not open it
/// finds it); unknown and aborted ones are not found.
pub async fn session_found_by_id<H: Harness>(mut h: H) {
    let id = begin(h.store(), "found").await;
    append(h.store(), &id, 0, b"12345").await;
    h.restart().await;
    let s = h.store();
    let r = s.session(&id).await.expect("session").expect("open");
    assert_eq!((&r.id, r.size, &r.info[..]), (&id, 5, &b"found"[..]));
    assert!(r.last_write >= r.started, "{r:?}");
    assert_eq!(s.session(&UploadId::new()).await.expect("unknown"), None);
    assert!(s.abort(&id).await.expect("abort"));
    assert_eq!(s.session(&id).await.expect("aborted"), None);
}

/// A second writer while a chunk is still arriving is refused, not interleaved.
pub async fn session_has_one_writer_at_a_time<H: Harness>(h: H) {
    let s = h.store();
    let id = begin(s, "one writer").await;
    let (mut tx, mut rx) = tokio::io::duplex(64);
    let first = async { s.append(&id, 0, None, &mut rx).await };
    let second = async {
        tx.write_all(b"first ").await.expect("write");
        // Let the first append start reading.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = s.append(&id, 0, None, &mut &b"second"[..]).await;
        let r2 = s.finish(&id, &sha(b"second")).await;
        drop(tx);
        (r, r2)
    };
    let (first, (second, finish)) = tokio::join!(first, second);
    assert_eq!(first.expect("first writer"), 6);
    assert!(
        matches!(second, Err(StoreError::UploadInvalid(_))),
        "{second:?}"
    );
    assert!(
        matches!(finish, Err(StoreError::UploadInvalid(_))),
        "{finish:?}"
    );
    finish_and_check(s, &id, b"first ").await;
}

/// For backends that can read an unfinished session back ([`BlobStore::read_session`]; S3
/// cannot, so this is not a contract case): the bytes so far, and the session stays open.
pub async fn read_session_leaves_it_open(s: &dyn BlobStore) {
    let id = UploadId::new();
    s.begin(&id, Algorithm::Sha256, Bytes::new())
        .await
        .expect("begin");
    s.append(&id, 0, None, &mut &b"abc"[..])
        .await
        .expect("append");
    let read = s.read_session(&id).await.expect("read");
    assert_eq!(read.size, 3);
    let got: Vec<Bytes> = read.stream.try_collect().await.expect("bytes");
    assert_eq!(got.concat(), b"abc");
    assert_eq!(s.session_size(&id).await.expect("still open"), 3);
    assert!(matches!(
        s.read_session(&UploadId::new()).await,
        Err(StoreError::UploadUnknown)
    ));
}

/// fsck's two: a fresh store has no strays; a quarantined blob is gone from the blob
/// namespace (and its bytes kept elsewhere), and quarantining an absent one is `None`.
pub async fn strays_and_quarantine<H: Harness>(h: H) {
    let s = h.store();
    let data = pattern(44, 2000);
    let d = sha(&data);
    put(s, &data).await;
    assert!(s.strays().await.expect("strays").is_empty());
    let to = s.quarantine(&d, 1_700_000_000).await.expect("quarantine");
    let to = to.expect("it was stored");
    assert!(to.contains(&*d.hex()), "{to}");
    absent(s, &d).await;
    assert!(s.strays().await.expect("strays").is_empty(), "not a stray");
    assert_eq!(s.quarantine(&d, 1_700_000_001).await.expect("again"), None);
    // The digest is free again: a good copy can be stored.
    put(s, &data).await;
    assert_eq!(read(s, &d, ByteRange::ALL).await.expect("read").1, data);
}

// ---- leftovers -------------------------------------------------------------------------

/// [`BlobStore::sweep_leftovers`] with a cutoff in the future (everything counts as old)
/// spares everything live: stored blobs (monolithic, and finished sessions past a part),
/// and an open session past a part, which still takes chunks and finishes afterwards.
pub async fn sweep_leftovers_spares_live_data<H: Harness>(h: H) {
    let s = h.store();
    let blob = pattern(40, 3000);
    let blob_d = sha(&blob);
    put(s, &blob).await;
    let finished = pattern(41, (9 << 20) + 7);
    let id = begin(s, "finished").await;
    append(s, &id, 0, &finished).await;
    s.finish(&id, &sha(&finished)).await.expect("finish");
    let open = pattern(42, (9 << 20) + 3);
    let id = begin(s, "open").await;
    let at = append(s, &id, 0, &open).await;
    let later = SystemTime::now() + Duration::from_secs(60);
    s.sweep_leftovers(later, true).await.expect("dry sweep");
    s.sweep_leftovers(later, false).await.expect("sweep");
    assert_eq!(s.sweep_leftovers(later, true).await.expect("again"), 0);
    assert_eq!(
        read(s, &blob_d, ByteRange::ALL).await.expect("blob").1,
        blob
    );
    let got = read(s, &sha(&finished), ByteRange::ALL).await;
    assert!(got.expect("finished").1 == finished);
    let tail = pattern(43, 10);
    append(s, &id, at, &tail).await;
    finish_and_check(s, &id, &[open, tail].concat()).await;
}

// ---- the clock -----------------------------------------------------------------------

/// [`BlobClock`]'s own rules, for any implementation.
pub fn clock_keeps_the_latest_touch(clock: &dyn BlobClock) {
    let d = sha(b"clocked");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(clock.last_used(&d), None);
    clock.touch(&d, t0);
    assert_eq!(clock.last_used(&d), Some(t0));
    clock.touch(&d, t0 + Duration::from_secs(5));
    // Never moves back.
    clock.touch(&d, t0);
    assert_eq!(clock.last_used(&d), Some(t0 + Duration::from_secs(5)));
    clock.forget(&d);
    assert_eq!(clock.last_used(&d), None);
}

/// [`BlobClock::set_by_writes`], for a clock and the backend it goes with: a clock that
/// claims it is set by writes answers about the time of a `put` right after it, with no
/// touch; one that does not is left alone by writes (the store touches it itself).
pub async fn clock_and_writes(s: &dyn BlobStore, clock: &dyn BlobClock) {
    let data = pattern(50, 100);
    let d = sha(&data);
    // File times may be coarser than the wall clock's.
    let before = SystemTime::now() - Duration::from_secs(2);
    let untouched = clock.last_used(&d);
    put(s, &data).await;
    if clock.set_by_writes() {
        let t = clock.last_used(&d).expect("set by the write");
        assert!(t >= before, "{t:?} is before the write");
    } else {
        assert_eq!(clock.last_used(&d), untouched, "a write moved the clock");
    }
}

/// One `#[tokio::test]` per contract case, each on a harness built by `$make` (an
/// expression, evaluated in an async test body, yielding a [`Harness`]).
#[macro_export]
macro_rules! blobstore_contract_tests {
    ($make:expr) => {
        $crate::blobstore_contract_tests!(@cases $make;
            put_stat_read,
            put_existing_blob_is_idempotent,
            empty_blob,
            ranged_reads,
            unknown_blob,
            digest_mismatch_leaves_nothing,
            failed_body_leaves_nothing,
            size_limit_leaves_nothing,
            concurrent_puts_of_one_digest,
            delete_is_idempotent,
            list_streams_every_blob,
            session_small_chunks,
            session_large_chunks,
            session_refuses_out_of_order_chunks,
            session_rolls_back_failed_chunks,
            session_resumes_after_restart,
            session_abort,
            session_finish_with_wrong_digest_leaves_nothing,
            session_finish_edge_cases,
            session_ids_and_listing,
            session_found_by_id,
            session_has_one_writer_at_a_time,
            sweep_leftovers_spares_live_data,
            strays_and_quarantine
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::blobstore::testsuite::$case(harness).await;
            }
        )*
    };
}
