//! airdock with `storage.driver: s3`: its configuration as `airdock config check` and
//! `airdock serve` see it.

use crate::security::airdock;
use crate::support::scratch_dir;

#[test]
fn s3_keys_are_checked() {
    let dir = scratch_dir("airdock-s3cfg-");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        airdock(&["config", "check", path.to_str().expect("utf-8")], "")
    };
    let good = "storage:\n  driver: s3\n  s3:\n    endpoint: http://127.0.0.1:9000\n    \
bucket: reg\n    prefix: lab\n    redirect: true\n";
    let (ok, out, err) = check("good.yaml", good);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = check(
        "typo.yaml",
        "storage:\n  driver: s3\n  s3:\n    buckt: reg\n",
    );
    assert!(
        !ok && err.contains("line 4") && err.contains("buckt"),
        "{err}"
    );
    let (ok, _, err) = check("nobucket.yaml", "storage:\n  driver: s3\n");
    assert!(!ok && err.contains("storage.s3.bucket"), "{err}");
    let (ok, _, err) = check("nodriver.yaml", "storage:\n  s3:\n    bucket: reg\n");
    assert!(!ok && err.contains("storage.driver"), "{err}");
    let (ok, _, err) = check("url.yaml", "storage:\n  s3:\n    endpoint: minio:9000\n");
    assert!(
        !ok && err.contains("line 3") && err.contains("http(s) URL"),
        "{err}"
    );
}

/// Until the store writes through the blob contract, `--storage s3` is refused at start with
/// a clear message: blobs must never silently go to local disk instead.
#[test]
fn serve_refuses_s3_until_supported() {
    let dir = scratch_dir("airdock-s3serve-");
    let data = dir.path().join("data");
    let (ok, out, err) = airdock(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--storage",
            "s3",
            "--s3-bucket",
            "reg",
        ],
        "",
    );
    assert!(!ok, "{out}");
    assert!(err.contains("not yet supported"), "{err}");
    assert!(
        !data.join("blobs").exists(),
        "nothing written to local disk"
    );
}
