//! Two `S3Blobs` over one bucket, each with its own local state dir, as two airdock replicas
//! behind a load balancer are (versitygw on loopback): a session begun on one continues and
//! finishes on the other, a blob one finished is found by the other, and two writers on two
//! instances never tear a session.

use std::time::{Duration, Instant};

use airdock_storage::blobstore::testsuite::pattern;
use airdock_storage::blobstore::{BlobStore, ByteRange};
use airdock_storage::{Algorithm, Digest, StoreError, UploadId};
use airdock_storage_s3::testing::Versitygw;
use airdock_storage_s3::{S3Blobs, PART_SIZE};
use bytes::Bytes;
use futures_util::stream::TryStreamExt;
use tokio::io::AsyncWriteExt;

fn data(len: usize, seed: u8) -> Vec<u8> {
    pattern(seed, len)
}

fn new_id() -> UploadId {
    UploadId::parse(&airdock_storage::random::hex(16).expect("random")).expect("id")
}

async fn read(s3: &S3Blobs, d: &Digest) -> Vec<u8> {
    let r = s3.read(d, ByteRange::ALL).await.expect("read");
    let chunks: Vec<Bytes> = r.stream.try_collect().await.expect("stream");
    chunks.concat()
}

/// Two instances on `gw`'s bucket under `prefix`, with their own state dirs.
async fn two(gw: &Versitygw, prefix: &str) -> ([S3Blobs; 2], [tempfile::TempDir; 2]) {
    let dirs = [
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    ];
    let a = S3Blobs::open(&gw.config(prefix), dirs[0].path())
        .await
        .expect("a");
    let b = S3Blobs::open(&gw.config(prefix), dirs[1].path())
        .await
        .expect("b");
    ([a, b], dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_instances_and_its_blob_is_found_by_both() {
    let gw = Versitygw::start();
    let ([a, b], _dirs) = two(&gw, "shared").await;
    let bytes = data(2 * PART_SIZE + 4321, 1);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    let id = new_id();
    a.begin(
        &id,
        Algorithm::Sha256,
        Bytes::from_static(b"{\"repo\":\"r\"}"),
    )
    .await
    .expect("begin");
    // Chunks alternate instances: under a part, across part boundaries, a small rest.
    let cuts = [0, 1 << 20, PART_SIZE + 7, 2 * PART_SIZE + 1, bytes.len()];
    for (n, w) in cuts.windows(2).enumerate() {
        let s = if n % 2 == 0 { &b } else { &a };
        let mut chunk = &bytes[w[0]..w[1]];
        let len = chunk.len() as u64;
        let held = s
            .append(&id, w[0] as u64, Some(len), &mut chunk)
            .await
            .expect("append");
        assert_eq!(held, w[1] as u64);
        let other = if n % 2 == 0 { &a } else { &b };
        assert_eq!(other.session_size(&id).await.expect("size"), held);
    }
    let listed = a.sessions().await.expect("sessions");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].size, &listed[0].info[..]),
        (bytes.len() as u64, &b"{\"repo\":\"r\"}"[..])
    );
    let found = b.session(&id).await.expect("session").expect("open");
    assert_eq!(found.size, bytes.len() as u64);
    let w = b.finish(&id, &d).await.expect("finish on b");
    assert_eq!((w.size, w.existed), (bytes.len() as u64, false));
    // a never saw the blob finished: it finds it through the bucket's index.
    assert_eq!(a.stat(&d).await.expect("stat"), Some(bytes.len() as u64));
    assert!(read(&a, &d).await == bytes);
    assert!(gw.object_path(&format!("shared/objects/{id}")).is_file());
    // A put of the same blob through a is verified and stored nowhere else.
    let again = a.put(&d, &mut &bytes[..], None).await.expect("put");
    assert!(again.existed);
    let listed: Vec<Digest> = a.list().try_collect().await.expect("list");
    assert_eq!(listed, vec![d.clone()]);
    assert!(matches!(
        a.session_size(&id).await,
        Err(StoreError::UploadUnknown)
    ));
    // Deleted through b: gone for a, though a had it in its cache.
    assert!(b.delete(&d).await.expect("delete"));
    assert_eq!(a.stat(&d).await.expect("stat"), None);
    assert!(matches!(
        a.read(&d, ByteRange::ALL).await,
        Err(StoreError::BlobUnknown(_))
    ));
    // A fresh instance over the bucket (a new replica, an empty state dir) sees no leftovers;
    // a segment whose session is gone (an append that failed late) is swept by the listing.
    let orphan = gw.object_path(&format!("shared/_state/uploads/{}/seg/left", new_id()));
    std::fs::create_dir_all(orphan.parent().expect("dir")).expect("mkdir");
    std::fs::write(&orphan, b"left over").expect("orphan segment");
    let fresh = tempfile::tempdir().expect("tmp");
    let c = S3Blobs::open(&gw.config("shared"), fresh.path())
        .await
        .expect("c");
    assert!(c.sessions().await.expect("sessions").is_empty());
    assert!(!orphan.exists(), "leftover segment removed");
    let left: Vec<Digest> = c.list().try_collect().await.expect("list");
    assert!(left.is_empty(), "{left:?}");
}

/// Two chunks at the same offset through two instances at once: one lands, the other is
/// refused, and the session holds exactly the one that landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_two_instances_never_tear_a_session() {
    let gw = Versitygw::start();
    let ([a, b], _dirs) = two(&gw, "race").await;
    for round in 0..5u8 {
        let id = new_id();
        a.begin(&id, Algorithm::Sha256, Bytes::new())
            .await
            .expect("begin");
        let (x, y) = (data(300_000, round), data(200_000, round + 100));
        let (mut bx, mut by) = (&x[..], &y[..]);
        let (rx, ry) = tokio::join!(
            a.append(&id, 0, Some(x.len() as u64), &mut bx),
            b.append(&id, 0, Some(y.len() as u64), &mut by),
        );
        let won = match (rx, ry) {
            (Ok(_), Err(StoreError::UploadInvalid(_) | StoreError::UploadOutOfOrder { .. })) => &x,
            (Err(StoreError::UploadInvalid(_) | StoreError::UploadOutOfOrder { .. }), Ok(_)) => &y,
            other => panic!("exactly one chunk lands: {other:?}"),
        };
        assert_eq!(a.session_size(&id).await.expect("size"), won.len() as u64);
        let d = Digest::of(Algorithm::Sha256, won);
        b.finish(&id, &d).await.expect("finish");
        assert!(read(&a, &d).await == *won);
    }
}

/// While one instance sends a long chunk (it has claimed the session to send parts), a
/// writer on the other is refused rather than interleaved; the long chunk then lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_sending_parts_holds_off_the_other_instance() {
    let gw = Versitygw::start();
    let ([a, b], _dirs) = two(&gw, "claim").await;
    let id = new_id();
    a.begin(&id, Algorithm::Sha256, Bytes::new())
        .await
        .expect("begin");
    let bytes = data(PART_SIZE + 1000, 7);
    let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
    let writer = async { a.append(&id, 0, None, &mut rx).await };
    let other = async {
        tx.write_all(&bytes[..PART_SIZE + 10]).await.expect("write");
        // The first part is out once a's claim shows: b is refused whatever offset it asks.
        let deadline = Instant::now() + Duration::from_secs(30);
        let refused = loop {
            match b.append(&id, 1, None, &mut &b"x"[..]).await {
                Err(StoreError::UploadInvalid(m)) => break m,
                Err(StoreError::UploadOutOfOrder { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("b should be refused: {other:?}"),
            }
        };
        assert!(matches!(
            b.finish(&id, &Digest::of(Algorithm::Sha256, b"x")).await,
            Err(StoreError::UploadInvalid(_))
        ));
        tx.write_all(&bytes[PART_SIZE + 10..]).await.expect("write");
        drop(tx);
        refused
    };
    let (written, refused) = tokio::join!(writer, other);
    assert_eq!(written.expect("a's chunk"), bytes.len() as u64);
    assert!(refused.contains("another request"), "{refused}");
    let d = Digest::of(Algorithm::Sha256, &bytes);
    b.finish(&id, &d).await.expect("finish on b after a let go");
    assert!(read(&b, &d).await == bytes);
}

/// The leftover sweep on one instance spares what the other is in the middle of, though it
/// shares no lock with it: an open session whose state records its multipart upload (it
/// continues and finishes afterwards), and an upload created for a session whose state does
/// not name it yet (the other between `CreateMultipartUpload` and its state write), until
/// that session is gone. An upload no session has is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leftover_sweep_spares_the_other_instances_sessions() {
    use object_store::multipart::MultipartStore;
    use object_store::path::Path;
    let gw = Versitygw::start();
    let ([a, b], _dirs) = two(&gw, "left").await;
    let open_bytes = data(PART_SIZE + 10, 1);
    let open = new_id();
    b.begin(&open, Algorithm::Sha256, Bytes::new())
        .await
        .expect("begin");
    b.append(&open, 0, None, &mut &open_bytes[..])
        .await
        .expect("append");
    let claiming = new_id();
    b.begin(&claiming, Algorithm::Sha256, Bytes::new())
        .await
        .expect("begin");
    let raw = gw.client();
    for id in [&claiming, &new_id()] {
        let key = Path::from(format!("left/objects/{id}"));
        let up = raw.create_multipart(&key).await.expect("create");
        raw.put_part(&key, &up, 0, Bytes::from(data(1000, 2)).into())
            .await
            .expect("part");
    }
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    let swept = a.leftovers(later, false).await.expect("sweep");
    assert_eq!((swept.uploads_aborted, swept.objects_deleted), (1, 0));
    // The open session goes on, on either instance.
    let tail = data(7, 3);
    let at = open_bytes.len() as u64;
    a.append(&open, at, None, &mut &tail[..])
        .await
        .expect("append after the sweep");
    let whole = [open_bytes, tail].concat();
    let d = Digest::of(Algorithm::Sha256, &whole);
    b.finish(&open, &d).await.expect("finish after the sweep");
    assert!(read(&a, &d).await == whole);
    // Once its session is gone, the upload it never recorded is a leftover.
    assert!(b.abort(&claiming).await.expect("abort"));
    let swept = a.leftovers(later, false).await.expect("sweep");
    assert_eq!((swept.uploads_aborted, swept.objects_deleted), (1, 0));
    assert_eq!(
        a.leftovers(later, true)
            .await
            .expect("again")
            .uploads_aborted,
        0
    );
}
