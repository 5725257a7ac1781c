//! The S3 blob store against a real S3 server (versitygw on loopback): what is particular
//! to S3 beyond the contract suite (`contract.rs`): where objects land (no copy on commit),
//! sessions across part boundaries and restarts, aborted multipart uploads, presigned URLs.

use std::time::Duration;

use airdock_storage::blobstore::{BlobStore, ByteRange};
use airdock_storage::{Algorithm, Digest, StoreError, UploadId};
use airdock_storage_s3::testing::Versitygw;
use airdock_storage_s3::{S3Blobs, PART_SIZE};
use bytes::Bytes;
use futures_util::stream::TryStreamExt;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed)) as u8)
        .collect()
}

fn new_id() -> UploadId {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    UploadId::parse(&format!("{:016x}{n:016x}", std::process::id())).expect("id")
}

async fn read(s3: &S3Blobs, d: &Digest, range: ByteRange) -> Vec<u8> {
    let r = s3.read(d, range).await.expect("read");
    let chunks: Vec<Bytes> = r.stream.try_collect().await.expect("stream");
    chunks.concat()
}

/// A new sha256 session holding `bytes`.
async fn session_holding(s3: &S3Blobs, bytes: &[u8]) -> UploadId {
    let id = new_id();
    s3.begin(&id, Algorithm::Sha256, Bytes::new())
        .await
        .expect("begin");
    s3.append(&id, 0, None, &mut &bytes[..])
        .await
        .expect("append");
    id
}

async fn setup(gw: &Versitygw, prefix: &str) -> (S3Blobs, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("tmp");
    let s3 = S3Blobs::open(&gw.config(prefix), state.path())
        .await
        .expect("open");
    (s3, state)
}

fn digest_key(prefix: &str, d: &Digest) -> String {
    let hex = d.hex();
    format!("{prefix}blobs/{}/{}/{}", d.algorithm(), &hex[..2], &*hex)
}

/// Files versitygw keeps for incomplete multipart uploads (its posix backend's layout).
fn pending_parts(gw: &Versitygw) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&gw.root.path().join("airdock/.sgwtmp"), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_land_under_their_digest_and_large_ones_are_multipart() {
    let gw = Versitygw::start();
    let (s3, _state) = setup(&gw, "reg/one").await;
    for len in [0, 1000, 2 * PART_SIZE + 12345] {
        let bytes = data(len, 7);
        let d = Digest::of(Algorithm::Sha256, &bytes);
        let w = s3.put(&d, &mut &bytes[..], None).await.expect("put");
        assert_eq!((w.size, w.existed), (len as u64, false));
        assert!(gw.object_path(&digest_key("reg/one/", &d)).is_file());
        assert!(read(&s3, &d, ByteRange::ALL).await == bytes, "len {len}");
        let w = s3.put(&d, &mut &bytes[..], None).await.expect("again");
        assert!(w.existed);
    }
    // A mismatching large put aborts its multipart upload: nothing visible, nothing pending.
    let bytes = data(PART_SIZE * 2 + 1, 1);
    let claimed = Digest::of(Algorithm::Sha256, b"something else");
    let e = s3
        .put(&claimed, &mut &bytes[..], None)
        .await
        .expect_err("mismatch");
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    assert_eq!(s3.stat(&claimed).await.expect("stat"), None);
    assert!(pending_parts(&gw).is_empty(), "{:?}", pending_parts(&gw));
    // Over the limit: refused, nothing pending either.
    let d = Digest::of(Algorithm::Sha256, &bytes);
    let e = s3
        .put(&d, &mut &bytes[..], Some(PART_SIZE as u64 + 5))
        .await
        .expect_err("limit");
    assert!(matches!(e, StoreError::TooLarge(_)), "{e}");
    assert!(pending_parts(&gw).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_sessions_cross_parts_survive_restarts_and_complete_in_place() {
    let gw = Versitygw::start();
    let state = tempfile::tempdir().expect("tmp");
    let bytes = data(2 * PART_SIZE + 777, 3);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    // Chunks under S3's 5 MiB part minimum, not aligned with parts.
    let cuts = [
        0,
        1_000_000,
        3_000_001,
        PART_SIZE + 5,
        PART_SIZE + 6,
        bytes.len(),
    ];
    let id = new_id();
    {
        let s3 = S3Blobs::open(&gw.config("p"), state.path())
            .await
            .expect("open");
        s3.begin(
            &id,
            Algorithm::Sha256,
            Bytes::from_static(b"{\"repo\":\"a\"}"),
        )
        .await
        .expect("begin");
        for w in cuts.windows(2).take(3) {
            let mut chunk = &bytes[w[0]..w[1]];
            let n = s3
                .append(&id, w[0] as u64, Some(chunk.len() as u64), &mut chunk)
                .await
                .expect("append");
            assert_eq!(n, w[1] as u64);
        }
        // A chunk shorter than announced is rolled back, even after it sent a part.
        let mut short = &bytes[cuts[3]..cuts[3] + PART_SIZE];
        let e = s3
            .append(&id, cuts[3] as u64, Some(PART_SIZE as u64 + 1), &mut short)
            .await
            .expect_err("short");
        assert!(matches!(e, StoreError::ChunkLength { .. }), "{e}");
        assert_eq!(s3.session_size(&id).await.expect("size"), cuts[3] as u64);
    }
    // A restart: a new store over the same state dir continues the session.
    let s3 = S3Blobs::open(&gw.config("p"), state.path())
        .await
        .expect("reopen");
    let listed = s3.sessions().await.expect("sessions");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].size, &listed[0].info[..]),
        (cuts[3] as u64, &b"{\"repo\":\"a\"}"[..])
    );
    for w in cuts.windows(2).skip(3) {
        let mut chunk = &bytes[w[0]..w[1]];
        s3.append(&id, w[0] as u64, None, &mut chunk)
            .await
            .expect("append");
    }
    let w = s3.finish(&id, &d).await.expect("finish");
    assert_eq!((w.size, w.existed), (bytes.len() as u64, false));
    assert!(read(&s3, &d, ByteRange::ALL).await == bytes);
    let range = ByteRange {
        start: 2 * PART_SIZE as u64,
        len: Some(700),
    };
    assert_eq!(
        read(&s3, &d, range).await,
        bytes[2 * PART_SIZE..2 * PART_SIZE + 700]
    );
    // No copy: the object is where the multipart upload put it, and nothing else is there.
    assert!(gw.object_path(&format!("p/objects/{id}")).is_file());
    assert!(!gw.object_path(&digest_key("p/", &d)).exists());
    let all: Vec<Digest> = s3.list().try_collect().await.expect("list");
    assert_eq!(all, vec![d.clone()]);
    // The index survives a restart too.
    drop(s3);
    let s3 = S3Blobs::open(&gw.config("p"), state.path())
        .await
        .expect("reopen");
    assert_eq!(s3.stat(&d).await.expect("stat"), Some(bytes.len() as u64));
    assert!(s3.sessions().await.expect("sessions").is_empty());
    assert!(s3.delete(&d).await.expect("delete"));
    assert_eq!(s3.stat(&d).await.expect("stat"), None);
    assert!(!gw.object_path(&format!("p/objects/{id}")).exists());
    assert!(pending_parts(&gw).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_sessions_land_under_their_digest_and_sha512_is_verified() {
    let gw = Versitygw::start();
    let (s3, _state) = setup(&gw, "").await;
    for len in [300_000, PART_SIZE + 3] {
        let bytes = data(len, 9);
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = Digest::of(alg, &bytes);
            let id = new_id();
            s3.begin(&id, Algorithm::Sha256, Bytes::new())
                .await
                .expect("begin");
            let (a, b) = bytes.split_at(1000);
            s3.append(&id, 0, None, &mut &a[..]).await.expect("append");
            s3.append(&id, 1000, None, &mut &b[..])
                .await
                .expect("append");
            if alg == Algorithm::Sha512 {
                // A wrong sha512 digest of a multipart session: checked by reading back.
                let wrong = Digest::of(alg, b"wrong");
                let e = s3.finish(&id, &wrong).await.expect_err("mismatch");
                assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
                assert!(matches!(
                    s3.session_size(&id).await,
                    Err(StoreError::UploadUnknown)
                ));
                assert!(!gw.object_path(&format!("objects/{id}")).exists());
                continue;
            }
            s3.finish(&id, &d).await.expect("finish");
            if len < PART_SIZE {
                assert!(gw.object_path(&digest_key("", &d)).is_file());
            }
            assert!(read(&s3, &d, ByteRange::ALL).await == bytes);
        }
    }
    let bytes = data(PART_SIZE + 3, 10);
    let d = Digest::of(Algorithm::Sha512, &bytes);
    let id = session_holding(&s3, &bytes).await;
    s3.finish(&id, &d).await.expect("sha512 finish");
    assert!(read(&s3, &d, ByteRange::ALL).await == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_removes_the_multipart_upload() {
    let gw = Versitygw::start();
    let (s3, _state) = setup(&gw, "").await;
    let bytes = data(PART_SIZE + 10, 4);
    let id = session_holding(&s3, &bytes).await;
    assert!(!pending_parts(&gw).is_empty(), "a part is pending in S3");
    assert!(s3.abort(&id).await.expect("abort"));
    assert!(!s3.abort(&id).await.expect("abort again"));
    assert!(matches!(
        s3.session_size(&id).await,
        Err(StoreError::UploadUnknown)
    ));
    let parts = pending_parts(&gw);
    assert!(parts.is_empty(), "{parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_presigned_and_opt_in() {
    let gw = Versitygw::start();
    let state = tempfile::tempdir().expect("tmp");
    let bytes = data(5000, 5);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    let plain = S3Blobs::open(&gw.config("x"), state.path())
        .await
        .expect("open");
    plain.put(&d, &mut &bytes[..], None).await.expect("put");
    let ttl = Duration::from_secs(60);
    assert_eq!(
        plain.redirect_url(&d, ttl).await.expect("no redirect"),
        None
    );
    drop(plain);
    let mut cfg = gw.config("x");
    cfg.redirect = true;
    let s3 = S3Blobs::open(&cfg, state.path()).await.expect("open");
    let url = s3.redirect_url(&d, ttl).await.expect("sign").expect("url");
    let got = reqwest::get(&url).await.expect("get");
    assert_eq!(got.status(), 200, "{url}");
    assert!(got.bytes().await.expect("body") == bytes);
    // The signature covers the key.
    let bad = url.replace(&d.hex()[..8], "00000000");
    assert_ne!(reqwest::get(&bad).await.expect("get").status(), 200);
}

/// Issue 11: what a kill leaves in the bucket that nothing records (a multipart upload
/// created by a session or a large put that never recorded it, a session object completed
/// but never indexed) is aborted or deleted by the leftover sweep once older than the
/// cutoff, and only then; open sessions (with their recorded multipart upload), finished
/// session objects and blobs are spared, and still work afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_crashed_writes_are_swept_once_old() {
    use object_store::multipart::MultipartStore;
    use object_store::path::Path;
    use object_store::ObjectStoreExt;
    let gw = Versitygw::start();
    let (s3, _state) = setup(&gw, "left").await;
    // Live: an open session past one part, a finished one (its object indexed), a blob.
    let open_bytes = data(PART_SIZE + 10, 1);
    let open = session_holding(&s3, &open_bytes).await;
    let done_bytes = data(PART_SIZE + 20, 2);
    let done = session_holding(&s3, &done_bytes).await;
    let done_d = Digest::of(Algorithm::Sha256, &done_bytes);
    s3.finish(&done, &done_d).await.expect("finish");
    let blob = data(3000, 3);
    let blob_d = Digest::of(Algorithm::Sha256, &blob);
    s3.put(&blob_d, &mut &blob[..], None).await.expect("put");
    let live_parts = pending_parts(&gw).len();
    assert!(live_parts > 0, "the open session has a part staged");
    // Left by crashes.
    let raw = gw.client();
    let hex = "ab".repeat(32);
    for key in [
        format!("left/objects/{}", new_id()),
        format!("left/blobs/sha256/ab/{hex}"),
    ] {
        let key = Path::from(key);
        let up = raw.create_multipart(&key).await.expect("create");
        raw.put_part(&key, &up, 0, Bytes::from(data(1000, 4)).into())
            .await
            .expect("part");
    }
    let orphan = Path::from(format!("left/objects/{}", new_id()));
    raw.put(&orphan, Bytes::from(data(100, 5)).into())
        .await
        .expect("orphan object");
    assert!(pending_parts(&gw).len() > live_parts);

    // Younger than the window: kept.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let none = airdock_storage_s3::Swept::default();
    assert_eq!(s3.leftovers(hour_ago, false).await.expect("sweep"), none);
    // Old enough (a cutoff in the future): found, and on a dry run only counted.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    let found = airdock_storage_s3::Swept {
        uploads_aborted: 2,
        objects_deleted: 1,
    };
    assert_eq!(s3.leftovers(later, true).await.expect("dry"), found);
    assert!(raw.head(&orphan).await.is_ok(), "a dry run removes nothing");
    assert_eq!(s3.leftovers(later, false).await.expect("sweep"), found);
    assert!(matches!(
        raw.head(&orphan).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(
        pending_parts(&gw).len(),
        live_parts,
        "only the open session's parts"
    );
    assert_eq!(s3.leftovers(later, false).await.expect("again"), none);
    // Everything live still works.
    assert!(read(&s3, &done_d, ByteRange::ALL).await == done_bytes);
    assert!(read(&s3, &blob_d, ByteRange::ALL).await == blob);
    let tail = data(5, 6);
    s3.append(&open, open_bytes.len() as u64, None, &mut &tail[..])
        .await
        .expect("append after the sweep");
    let whole = [open_bytes, tail].concat();
    let d = Digest::of(Algorithm::Sha256, &whole);
    s3.finish(&open, &d).await.expect("finish after the sweep");
    assert!(read(&s3, &d, ByteRange::ALL).await == whole);
}
