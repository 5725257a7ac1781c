//! The store's own unit tests: one store on a temp dir per test.
use super::*;
use crate::store::page;

pub(crate) fn name(s: &str) -> RepoName {
    RepoName::parse(s).expect("name")
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).await.expect("open");
    (dir, s)
}

fn files_under(p: &Path) -> usize {
    fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

#[tokio::test]
async fn wrong_digest_stores_nothing() {
    let (dir, s) = store().await;
    let wrong = Digest::of(Algorithm::Sha256, b"other");
    let err = s.push_blob(&name("a"), &wrong, &b"bytes"[..]).await;
    assert!(matches!(err, Err(StoreError::DigestMismatch { .. })));
    assert!(!s
        .blob_exists(&Digest::of(Algorithm::Sha256, b"bytes"))
        .await
        .expect("stat"));
    assert!(!s.repo_exists(&name("a")));
    assert_eq!(files_under(&dir.path().join(layout::TMP)), 0);
}

#[tokio::test]
async fn blob_is_per_repository_but_stored_once() {
    let (_dir, s) = store().await;
    let d = Digest::of(Algorithm::Sha256, b"layer");
    let first = s
        .push_blob(&name("a"), &d, &b"layer"[..])
        .await
        .expect("push");
    assert!(!first.existed);
    assert!(s.stat_blob(&name("b"), &d).await.is_err());
    let again = s
        .push_blob(&name("b"), &d, &b"layer"[..])
        .await
        .expect("push");
    assert!(again.existed);
    assert_eq!(s.stat_blob(&name("b"), &d).await.expect("stat"), 5);
    let anyone = |_: &RepoName| true;
    assert!(s
        .mount_blob(&name("c"), &d, Some(&name("a")), &anyone)
        .await
        .expect("mount"));
    assert!(!s
        .mount_blob(&name("c2"), &d, Some(&name("nothere")), &anyone)
        .await
        .expect("mount"));
    assert!(s
        .mount_blob(&name("c3"), &d, None, &anyone)
        .await
        .expect("mount"));
    // Only from a repository the caller may read, named or not.
    let only_b = |r: &RepoName| r.as_str() == "b";
    let none_holding = |r: &RepoName| r.as_str() == "nothere";
    assert!(!s
        .mount_blob(&name("c4"), &d, Some(&name("a")), &only_b)
        .await
        .expect("mount"));
    assert!(!s
        .mount_blob(&name("c4"), &d, None, &none_holding)
        .await
        .expect("mount"));
    assert!(!s.repo_has_blob(&name("c4"), &d));
    assert!(s
        .mount_blob(&name("c4"), &d, None, &only_b)
        .await
        .expect("mount"));
}

#[tokio::test]
async fn concurrent_pushes_of_one_blob_both_succeed() {
    let (_dir, s) = store().await;
    let body = vec![7u8; 3 << 20];
    let d = Digest::of(Algorithm::Sha256, &body);
    let (ra, rb) = (name("a"), name("b"));
    let (a, b) = tokio::join!(
        s.push_blob(&ra, &d, &body[..]),
        s.push_blob(&rb, &d, &body[..])
    );
    assert_eq!(a.expect("a").digest, d);
    assert_eq!(b.expect("b").digest, d);
    assert_eq!(s.stat_blob(&name("a"), &d).await.expect("a"), 3 << 20);
}

/// The cap counts sessions from POST until finish, cancel or a failed finish, and
/// sessions found on disk at open; a full store refuses new ones only.
#[tokio::test]
async fn open_upload_cap_counts_sessions_until_they_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = name("r");
    let body = b"capped".to_vec();
    let d = Digest::of(Algorithm::Sha256, &body);
    let kept = {
        let s = Store::open(dir.path()).await.expect("open");
        s.set_max_open_uploads(Some(2));
        let a = s.start_upload(&repo, None, "t").await.expect("a");
        let b = s.start_upload(&repo, None, "t").await.expect("b");
        assert!(matches!(
            s.start_upload(&repo, None, "t").await,
            Err(StoreError::TooManyUploads { limit: 2, .. })
        ));
        assert_eq!(s.open_uploads(), 2);
        // A session already open still takes writes at the cap.
        s.append_upload(&repo, &a, None, None, &body[..])
            .await
            .expect("append at cap");
        s.cancel_upload(&repo, &b).await.expect("cancel");
        let c = s
            .start_upload(&repo, None, "t")
            .await
            .expect("c after cancel");
        s.finish_upload(&repo, &a, &d, &b""[..])
            .await
            .expect("finish");
        let wrong = Digest::of(Algorithm::Sha256, b"not it");
        let e = s
            .start_upload(&repo, None, "t")
            .await
            .expect("e after finish");
        assert!(s.finish_upload(&repo, &e, &wrong, &b"x"[..]).await.is_err());
        assert_eq!(s.open_uploads(), 1, "a mismatch closes the session");
        c
    };
    // Reopened: the session left on disk counts.
    let s = Store::open(dir.path()).await.expect("reopen");
    assert_eq!(s.open_uploads(), 1);
    s.set_max_open_uploads(Some(1));
    assert!(matches!(
        s.start_upload(&repo, None, "t").await,
        Err(StoreError::TooManyUploads { limit: 1, .. })
    ));
    s.set_max_open_uploads(None);
    s.start_upload(&repo, None, "t").await.expect("no cap");
    assert_eq!(s.open_uploads(), 2);
    s.cancel_upload(&repo, &kept).await.expect("cancel kept");
    assert_eq!(s.open_uploads(), 1);
}

#[tokio::test]
async fn upload_survives_reopen_and_rehashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = name("r");
    let body = b"0123456789".repeat(1000);
    let id = {
        let s = Store::open(dir.path()).await.expect("open");
        let id = s.start_upload(&repo, None, "t").await.expect("start");
        s.append_upload(&repo, &id, Some(0), Some(4000), &body[..4000])
            .await
            .expect("chunk");
        id
    };
    // A new Store is a restarted server: the running hash is gone.
    let s = Store::open(dir.path()).await.expect("reopen");
    assert_eq!(s.upload_status(&repo, &id).await.expect("status"), 4000);
    let gap = s
        .append_upload(&repo, &id, Some(5000), None, &body[5000..])
        .await;
    assert!(matches!(gap, Err(StoreError::UploadOutOfOrder { .. })));
    let overlap = s
        .append_upload(&repo, &id, Some(3000), None, &body[3000..])
        .await;
    assert!(matches!(overlap, Err(StoreError::UploadOutOfOrder { .. })));
    s.append_upload(&repo, &id, Some(4000), None, &body[4000..])
        .await
        .expect("resume");
    let d = Digest::of(Algorithm::Sha256, &body);
    let got = s
        .finish_upload(&repo, &id, &d, &b""[..])
        .await
        .expect("finish");
    assert_eq!(got.size, 10_000);
    assert!(
        s.upload_status(&repo, &id).await.is_err(),
        "session is gone"
    );
}

#[tokio::test]
async fn sha512_upload() {
    let (_dir, s) = store().await;
    let repo = name("r");
    let id = s
        .start_upload(&repo, Some(Algorithm::Sha512), "t")
        .await
        .expect("start");
    s.append_upload(&repo, &id, None, None, &b"abc"[..])
        .await
        .expect("append");
    let d = Digest::of(Algorithm::Sha512, b"abc");
    let wrong_alg = s
        .finish_upload(&repo, &id, &Digest::of(Algorithm::Sha256, b"abc"), &b""[..])
        .await;
    assert!(wrong_alg.is_err());
    s.finish_upload(&repo, &id, &d, &b""[..])
        .await
        .expect("finish");
    assert!(s.repo_has_blob(&repo, &d));
}

pub(crate) fn manifest_json(config: &Digest, layer: &Digest) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn manifests_need_their_blobs_and_failed_txns_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).await.expect("open");
    let repo = name("r");
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    let body = manifest_json(&cfg, &layer);
    let tag = Reference::parse("v1").expect("tag");
    s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
    let missing = s
        .put_manifest(&repo, &tag, OCI_MANIFEST, &body, &[], true)
        .await;
    assert!(matches!(missing, Err(StoreError::ManifestBlobUnknown(d)) if d == layer));
    assert!(s
        .resolve_tag(&repo, &Tag::parse("v1").expect("t"))
        .is_none());
    // sparse accepts it
    let sparse = s
        .put_manifest(&repo, &tag, OCI_MANIFEST, &body, &[], false)
        .await;
    assert!(sparse.is_ok());
    drop(s);
    let s = Store::open(dir.path()).await.expect("reopen");
    let m = s.get_manifest(&repo, &tag).await.expect("get");
    assert_eq!(&m.bytes[..], &body[..]);
    s.delete_manifest(
        &repo,
        &Reference::Digest(m.record.digest.clone()),
        ManifestDelete::default(),
    )
    .await
    .expect("delete");
    assert!(
        s.resolve_tag(&repo, &Tag::parse("v1").expect("t"))
            .is_none(),
        "no dangling tag"
    );
}

#[tokio::test]
async fn torn_journal_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Digest::of(Algorithm::Sha256, b"x");
    {
        let s = Store::open(dir.path()).await.expect("open");
        s.push_blob(&name("a"), &d, &b"x"[..]).await.expect("push");
    }
    let journal = layout::journal_path(dir.path());
    let mut bytes = fs::read(&journal).expect("journal");
    let good = bytes.len();
    bytes.extend_from_slice(b"0123456789abcdef {\"ops\":[{\"op\":\"li");
    fs::write(&journal, &bytes).expect("write");
    let s = Store::open(dir.path())
        .await
        .expect("reopen after torn write");
    assert!(s.repo_has_blob(&name("a"), &d));
    assert_eq!(fs::metadata(&journal).expect("meta").len() as usize, good);
    // Damage before intact lines is not a torn tail: refuse to guess.
    drop(s);
    let good_line = fs::read(&journal).expect("journal");
    let mut bytes = good_line.clone();
    bytes[0] ^= 1;
    bytes.extend_from_slice(&good_line);
    fs::write(&journal, &bytes).expect("write");
    assert!(matches!(
        Store::open(dir.path()).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn a_data_dir_is_opened_by_one_store_at_a_time() {
    let (dir, s) = store().await;
    assert!(matches!(
        Store::open(dir.path()).await,
        Err(StoreError::Locked(_))
    ));
    drop(s);
    Store::open(dir.path())
        .await
        .expect("free again once the first is gone");
}

#[tokio::test]
async fn pagination() {
    let keys = ["a", "b", "c", "d"];
    assert_eq!(
        page(keys.into_iter(), None, Some(2)),
        Page {
            items: vec!["a".into(), "b".into()],
            more: true
        }
    );
    assert_eq!(
        page(keys.into_iter(), Some("b"), Some(2)),
        Page {
            items: vec!["c".into(), "d".into()],
            more: false
        }
    );
    assert_eq!(
        page(keys.into_iter(), None, Some(0)),
        Page {
            items: vec![],
            more: true
        }
    );
    assert_eq!(
        page(keys.into_iter(), Some("zz"), None),
        Page {
            items: vec![],
            more: false
        }
    );
}

#[tokio::test]
async fn referrers_report_annotations_from_the_stored_bytes() {
    let (dir, s) = store().await;
    let repo = name("r");
    let cfg = Digest::of(Algorithm::Sha256, b"{}");
    let layer = Digest::of(Algorithm::Sha256, b"layer");
    s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
    s.push_blob(&repo, &layer, &b"layer"[..])
        .await
        .expect("layer");
    let subject_body = manifest_json(&cfg, &layer);
    let subject = Digest::of(Algorithm::Sha256, &subject_body);
    let by_digest = Reference::Digest(subject.clone());
    s.put_manifest(&repo, &by_digest, OCI_MANIFEST, &subject_body, &[], true)
        .await
        .expect("subject");
    let signature = |kind: &str, note: &str| -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"note":"{note}"}}}}"#,
            subject_body.len()
        )
        .into_bytes()
    };
    for (kind, note) in [("application/x.sig", "one"), ("application/x.sbom", "two")] {
        let body = signature(kind, note);
        let d = Reference::Digest(Digest::of(Algorithm::Sha256, &body));
        s.put_manifest(&repo, &d, OCI_MANIFEST, &body, &[], true)
            .await
            .expect("referrer");
    }
    let all = s.referrers(&repo, &subject, None).await;
    let mut notes: Vec<String> = all
        .iter()
        .map(|r| r.annotations.as_ref().expect("annotations")["note"].to_string())
        .collect();
    notes.sort();
    assert_eq!(notes, [r#""one""#, r#""two""#]);
    let sigs = s
        .referrers(&repo, &subject, Some("application/x.sig"))
        .await;
    assert_eq!(sigs.len(), 1);
    assert_eq!(
        sigs[0].record.artifact_type.as_deref(),
        Some("application/x.sig")
    );
    // The in-memory index does not keep annotations; a restart still reports them.
    drop(s);
    let s = Store::open(dir.path()).await.expect("reopen");
    let again = s.referrers(&repo, &subject, None).await;
    assert!(again.iter().all(|r| r.annotations.is_some()));
}
