//! Shared helpers for the integration tests: start the real `airdock`
//! binary on a free loopback port with a throw-away data directory.
//!
//! Every wait is bounded, so a broken server makes a test fail with the
//! server's own output instead of hanging the suite.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// Path of the binary under test, built by cargo for integration tests.
pub const AIRDOCK_BIN: &str = env!("CARGO_BIN_EXE_airdock");

/// How long the server may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful stop may take before we fall back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many bytes of server output are kept (the tail wins).
const LOG_LIMIT: usize = 1 << 20;

/// Server output (stdout and stderr interleaved by arrival), shared with
/// the reader threads.
type Log = Arc<Mutex<String>>;

/// A running `airdock serve` process with its own temporary data directory.
///
/// Dropping it kills the process (SIGKILL), waits for it, and then removes
/// the data directory.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// Command the binary is started through (`ip netns exec NS`, `sh -c …`), if any.
    /// Each one execs the binary, so the child's PID is airdock's own.
    launcher: Vec<String>,
    extra_args: Vec<String>,
    /// Environment variables set for the process (kept across restarts).
    env: Vec<(String, String)>,
    log: Log,
    // Declared last so the directory outlives the process on drop.
    data_dir: TempDir,
}

impl Server {
    /// `airdock serve --addr 127.0.0.1:0 --data-dir <fresh temp dir>`.
    pub fn start() -> Server {
        Server::start_with_args(&[])
    }

    /// Like [`Server::start`], with extra command-line arguments appended
    /// after `serve --addr .. --data-dir ..` (e.g. `&["--sparse"]`).
    /// Do not pass `--addr` or `--data-dir` here.
    pub fn start_with_args(args: &[&str]) -> Server {
        let data_dir = tempfile::Builder::new()
            .prefix("airdock-it-")
            .tempdir()
            .expect("create temporary data dir");
        Server::start_in(data_dir, args)
    }

    /// Start on an existing (possibly pre-populated) data directory.
    pub fn start_in(data_dir: TempDir, args: &[&str]) -> Server {
        Server::start_in_env(data_dir, args, &[])
    }

    /// Like [`Server::start_in`], with environment variables set for the process (the
    /// caller's `AIRDOCK_*` variables are dropped; these are not).
    pub fn start_in_env(data_dir: TempDir, args: &[&str], env: &[(&str, &str)]) -> Server {
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("valid socket address");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::spawn_at(Vec::new(), bind, data_dir, args, env)
    }

    /// Start inside network namespace `netns`, listening on `bind` (an address of that
    /// namespace; port 0 picks a free one). `ip netns exec` execs the binary, so the child's
    /// PID is airdock's own and dropping the server still kills exactly that process.
    pub fn start_in_netns(netns: &str, bind: SocketAddr, args: &[&str]) -> Server {
        let data_dir = tempfile::Builder::new()
            .prefix("airdock-it-")
            .tempdir()
            .expect("create temporary data dir");
        let launcher = ["ip", "netns", "exec", netns].map(String::from).to_vec();
        Server::spawn_at(launcher, bind, data_dir, args, Vec::new())
    }

    /// Start through `sh -c '<prelude> && exec airdock …'`, e.g. with `ulimit -n 64` as the
    /// prelude to run the server with a low descriptor limit (the tests cannot call
    /// setrlimit themselves: the workspace forbids unsafe code).
    pub fn start_after_shell(prelude: &str, args: &[&str]) -> Server {
        let data_dir = tempfile::Builder::new()
            .prefix("airdock-it-")
            .tempdir()
            .expect("create temporary data dir");
        let script = format!("{prelude} && exec \"$0\" \"$@\"");
        let launcher = vec!["sh".to_owned(), "-c".to_owned(), script];
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("valid socket address");
        Server::spawn_at(launcher, bind, data_dir, args, Vec::new())
    }

    fn spawn_at(
        launcher: Vec<String>,
        bind: SocketAddr,
        data_dir: TempDir,
        args: &[&str],
        env: Vec<(String, String)>,
    ) -> Server {
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let log: Log = Arc::new(Mutex::new(String::new()));
        match spawn(&launcher, bind, data_dir.path(), &extra_args, &env, &log) {
            Ok((child, addr)) => Server {
                child: Some(child),
                addr,
                launcher,
                extra_args,
                env,
                log,
                data_dir,
            },
            Err(msg) => panic!("{msg}\n--- airdock output ---\n{}", snapshot(&log)),
        }
    }

    /// The address the server listens on, e.g. `127.0.0.1:41234`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as used in image references (`HOST/repo:tag`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` joined with `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Process id of the running server, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the server has printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        snapshot(&self.log)
    }

    /// Kill the server with SIGKILL (no chance to clean up) and wait for it.
    /// The data directory is kept; call [`Server::restart`] to start again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Ask the server to shut down with SIGTERM and wait for it to exit
    /// (SIGKILL after a timeout). Returns whether it exited on its own.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) => return true,
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stop the server (SIGTERM) and keep its data directory, to start another server (or
    /// command) on it.
    pub fn into_data_dir(mut self) -> TempDir {
        self.terminate();
        let placeholder = scratch_dir("airdock-it-stopped-");
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    /// Kill the server (SIGKILL) and start it again on the same data
    /// directory with the same arguments. The same port is reused when it
    /// can be bound again; otherwise a new free port is picked, so always
    /// read [`Server::base_url`] again afterwards.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Like [`Server::restart`] but stops the server with SIGTERM first.
    pub fn restart_graceful(&mut self) {
        self.terminate();
        self.start_again();
    }

    fn start_again(&mut self) {
        append(&self.log, "--- restart ---\n");
        let mut last_err = String::new();
        let mut any_port = self.addr;
        any_port.set_port(0);
        let candidates = [self.addr, self.addr, any_port];
        for (i, bind) in candidates.into_iter().enumerate() {
            if i > 0 {
                thread::sleep(Duration::from_millis(200));
            }
            match spawn(
                &self.launcher,
                bind,
                self.data_dir.path(),
                &self.extra_args,
                &self.env,
                &self.log,
            ) {
                Ok((child, addr)) => {
                    self.child = Some(child);
                    self.addr = addr;
                    return;
                }
                Err(msg) => last_err = msg,
            }
        }
        panic!(
            "restart failed: {last_err}\n--- airdock output ---\n{}",
            self.logs()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- airdock output ({}) ---\n{}\n--- end of airdock output ---",
                self.data_dir.path().display(),
                tail(&self.logs(), 200)
            );
        }
    }
}

/// Start one process and wait for its `listening on` line.
fn spawn(
    launcher: &[String],
    bind: SocketAddr,
    data_dir: &Path,
    extra_args: &[String],
    env: &[(String, String)],
    log: &Log,
) -> Result<(Child, SocketAddr), String> {
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(AIRDOCK_BIN);
            c
        }
        None => Command::new(AIRDOCK_BIN),
    };
    // Only the arguments below configure the server: drop AIRDOCK_* settings
    // (e.g. AIRDOCK_SPARSE) inherited from the caller's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AIRDOCK_") {
            cmd.env_remove(&key);
        }
    }
    // Plain log lines in failure output.
    cmd.env("NO_COLOR", "1");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.arg("serve")
        .arg("--addr")
        .arg(bind.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {AIRDOCK_BIN}: {e}"))?;

    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");

    // Both streams are drained into the log for the life of the process
    // (so the server never blocks on a full pipe); the first `listening on`
    // line is reported. The contract says stdout, stderr is accepted too.
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    watch(stdout, tx.clone(), log);
    watch(stderr, tx, log);

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(addr) => return Ok((child, addr)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Both streams closed without the line: the process is exiting.
                let status = wait_briefly(&mut child);
                return Err(format!(
                    "airdock exited ({status}) before printing `listening on ADDR`"
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "airdock did not print `listening on ADDR` within {STARTUP_TIMEOUT:?}"
            ));
        }
    }
}

/// Wait a little for an exiting child; kill it if it lingers.
fn wait_briefly(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    "killed after closing stdout".to_string()
}

/// Parse `... listening on 127.0.0.1:PORT ...` (an `http://` prefix and
/// trailing text or terminal colour codes are tolerated).
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Copy `from` line by line into the log; send the first listening address.
fn watch(from: impl Read + Send + 'static, tx: mpsc::Sender<SocketAddr>, log: &Log) {
    let log = Arc::clone(log);
    thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut tx = Some(tx);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    append(&log, &text);
                    if let Some(addr) = parse_listening(&text) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                }
            }
        }
    });
}

fn append(log: &Log, text: &str) {
    let mut guard = log.lock().unwrap_or_else(|p| p.into_inner());
    guard.push_str(text);
    if guard.len() > LOG_LIMIT {
        let mut cut = guard.len() - LOG_LIMIT / 2;
        while !guard.is_char_boundary(cut) {
            cut += 1;
        }
        guard.replace_range(..cut, "[... earlier output dropped ...]\n");
    }
}

fn snapshot(log: &Log) -> String {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A scratch directory for test files (not the server's data dir).
pub fn scratch_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create scratch dir")
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of `b`.
pub fn sha256(b: &[u8]) -> String {
    let hex: String = Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub fn client(timeout: Duration) -> Client {
    Client::builder().timeout(timeout).build().expect("client")
}

/// `method path` on `s` without a body. Only a missing answer panics: every status is the
/// caller's to check.
pub async fn send(c: &Client, s: &Server, method: Method, path: &str) -> Response {
    c.request(method.clone(), s.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`send`], with `Authorization: Bearer token`.
pub async fn send_bearer(
    c: &Client,
    s: &Server,
    method: Method,
    path: &str,
    token: &str,
) -> Response {
    c.request(method.clone(), s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub async fn get(c: &Client, s: &Server, path: &str) -> Response {
    send(c, s, Method::GET, path).await
}

pub async fn head(c: &Client, s: &Server, path: &str) -> Response {
    send(c, s, Method::HEAD, path).await
}

pub async fn post(c: &Client, s: &Server, path: &str) -> Response {
    send(c, s, Method::POST, path).await
}

pub async fn delete(c: &Client, s: &Server, path: &str) -> Response {
    send(c, s, Method::DELETE, path).await
}

/// The JSON body of `GET path`, whatever its status.
pub async fn get_json(c: &Client, s: &Server, path: &str) -> Value {
    get(c, s, path)
        .await
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// `len` bytes of xorshift64 output from `state` (non-zero): incompressible, and the same
/// for the same state.
pub fn xorshift_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Push `bytes` to `repo` in one monolithic POST (which must answer 201); returns the digest.
pub async fn push_blob(c: &Client, s: &Server, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

/// PATCH `chunk` (not empty) to the upload session at `url` as its bytes from `start` on
/// (`Content-Range`).
pub async fn patch_chunk(c: &Client, url: &str, start: usize, chunk: &[u8]) -> Response {
    c.patch(url)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .expect("patch")
}

/// The manifest of one config and one layer (not gzipped), for blobs of these sizes.
/// The digests of the layers and config an image manifest (JSON) names.
pub fn manifest_blobs(m: &Value) -> Vec<&str> {
    let blobs = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&m["config"]));
    blobs.filter_map(|b| b["digest"].as_str()).collect()
}

pub fn image_manifest(config: &str, config_len: usize, layer: &str, layer_len: usize) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_len}}}]}}"#
    )
}

pub async fn put_manifest(
    c: &Client,
    s: &Server,
    repo: &str,
    reference: &str,
    media: &str,
    body: &[u8],
) -> Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", media)
        .body(body.to_vec())
        .send()
        .await
        .expect("put manifest")
}

/// The `errors[0].code` of an error body (empty when there is none).
pub async fn error_code(r: Response) -> String {
    let v: Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Path of a required external tool, or a panic that says how to get it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed (not found on PATH); \
         run `scripts/install-deps.sh` (as root) to install the test dependencies"
    );
}

mod tests {
    use super::*;

    #[test]
    fn parses_listening_line() {
        assert_eq!(
            parse_listening("listening on 127.0.0.1:5000\n"),
            Some("127.0.0.1:5000".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening("INFO airdock: listening on http://127.0.0.1:80/"),
            Some("127.0.0.1:80".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening("\x1b[2mINFO\x1b[0m listening on 127.0.0.1:9\x1b[0m"),
            Some("127.0.0.1:9".parse().expect("addr"))
        );
        assert_eq!(parse_listening("starting up"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 1), "c");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
