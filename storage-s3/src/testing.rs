//! A real S3 server for tests: `versitygw` (installed by `scripts/install-deps.sh`) serving
//! a temp directory on a free loopback port, stopped by PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::S3Config;

pub const ACCESS_KEY: &str = "airdock-test";
pub const SECRET_KEY: &str = "airdock-test-secret";
pub const BUCKET: &str = "airdock";

/// A running versitygw with one bucket, [`BUCKET`].
pub struct Versitygw {
    child: Child,
    pub port: u16,
    /// The served directory: each directory under it is a bucket.
    pub root: tempfile::TempDir,
}

/// The versitygw binary: `$VERSITYGW`, else where `scripts/install-deps.sh` puts it
/// (`$AIRDOCK_TOOLS_BIN`, default `target/tools/bin`), else `versitygw` on the PATH.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VERSITYGW") {
        return p.into();
    }
    let tools = std::env::var_os("AIRDOCK_TOOLS_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin"),
        PathBuf::from,
    );
    let installed = tools.join("versitygw");
    if installed.is_file() {
        installed
    } else {
        PathBuf::from("versitygw")
    }
}

impl Versitygw {
    /// Start it and wait until it answers. Panics with a clear message when it cannot:
    /// a test that needs S3 must not silently pass without it.
    pub fn start() -> Versitygw {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        // The port is picked, released, and handed over; a race with another process is
        // possible but rare, and shows as a start failure below rather than a wrong server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(binary())
            .arg("--port")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY])
            .arg("posix")
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); scripts/install-deps.sh installs it",
                    binary().display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("versitygw exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "versitygw did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Versitygw { child, port, root }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A configuration for the bucket, keys under `prefix`.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            prefix: prefix.into(),
            path_style: true,
            redirect: false,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
        }
    }

    /// A plain `object_store` client of the bucket, for tests that leave behind in it what a
    /// crash or another process would.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .build()
            .expect("S3 client")
    }

    /// The file holding the object at `key` (versitygw's posix backend maps keys to paths).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(Path::new(key))
    }
}

impl Drop for Versitygw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
