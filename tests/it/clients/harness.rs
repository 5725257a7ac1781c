//! What every client test needs: finding the client binaries, running them
//! with a bound on time, daemons that are always stopped, and a small
//! blocking HTTP client to check what the registry really holds.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Where the failure messages send people.
pub const INSTALL_HINT: &str =
    "run `scripts/install-clients.sh` (as root) to install the client matrix \
     (Debian packages and pinned Go tools in target/tools/bin)";

/// Project-local directory of the pinned Go tools (crane, oras, crictl),
/// as `scripts/install-clients.sh` fills it; `AIRDOCK_TOOLS_BIN` overrides.
pub fn tools_bin() -> PathBuf {
    match std::env::var_os("AIRDOCK_TOOLS_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin"),
    }
}

/// `PATH`'s directories, then the system ones (daemons live in `/usr/sbin`, which a
/// non-login `PATH` may lack).
fn path_and_system_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Directories searched for a client, in order: the project's tools dir, then
/// [`path_and_system_dirs`].
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![tools_bin()];
    dirs.extend(path_and_system_dirs());
    dirs
}

/// Path of a client binary, or a panic (never a skip) that says how to get it.
pub fn tool(name: &str) -> PathBuf {
    for dir in search_dirs() {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed (looked in {} and on PATH); {INSTALL_HINT}",
        tools_bin().display()
    );
}

/// Panic unless running as root: the daemons (dockerd, containerd) and
/// podman's root storage need it, as in CI.
pub fn require_root(what: &str) {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "{what} must run as root (CI does); this test starts its own daemons and storage"
    );
}

/// `PATH` for daemons: the caller's, plus the system directories, so that
/// dockerd finds containerd and runc, and containerd finds its shims.
pub fn daemon_path() -> OsString {
    std::env::join_paths(path_and_system_dirs()).expect("PATH entries contain no separator")
}

// ---------------------------------------------------------------------------
// Running a client
// ---------------------------------------------------------------------------

/// Default bound on one client invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// What a finished command left behind.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Out {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout and stderr together, for matching messages that a client may
    /// print on either.
    pub fn all_text(&self) -> String {
        format!("{}\n{}", self.stdout_text(), self.stderr_text())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "expected JSON on stdout ({e}):\n{}\n--- stderr ---\n{}",
                self.stdout_text(),
                self.stderr_text()
            )
        })
    }
}

/// A command line with a bounded run time, whose failure message holds
/// everything needed to see what went wrong.
pub struct Cmd {
    cmd: Command,
    display: String,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Cmd {
        let program = program.as_ref();
        let mut cmd = Command::new(program);
        cmd.env("PATH", daemon_path());
        Cmd {
            cmd,
            display: program.display().to_string(),
            timeout: DEFAULT_TIMEOUT,
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Cmd {
        let arg = arg.as_ref();
        let _ = write!(self.display, " {}", arg.to_string_lossy());
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(mut self, data: Vec<u8>) -> Cmd {
        self.stdin = Some(data);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The command line as it will run (for messages).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Run; panic with the full output unless it exits 0.
    pub fn run(self) -> Out {
        let display = self.display.clone();
        let out = self.run_unchecked();
        if !out.status.success() {
            panic!(
                "command failed ({}): {display}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                tail(&out.stdout_text(), 150),
                tail(&out.stderr_text(), 150)
            );
        }
        out
    }

    /// Run to completion (or the time limit, which panics) and return
    /// whatever happened.
    pub fn run_unchecked(mut self) -> Out {
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}; {INSTALL_HINT}", self.display));

        let writer = match (self.stdin.take(), child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("waiting for `{}`: {e}", self.display),
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = collect(&stdout, &stderr);
                panic!(
                    "command timed out after {:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.timeout,
                    self.display,
                    tail(&String::from_utf8_lossy(&out.0), 100),
                    tail(&String::from_utf8_lossy(&out.1), 100)
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let (stdout, stderr) = collect(&stdout, &stderr);
        Out {
            status,
            stdout,
            stderr,
        }
    }
}

/// Read a pipe to its end on a thread; the result arrives on the channel.
fn drain(mut from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// The output of both pipes. A grandchild that keeps a pipe open (a daemon
/// a client forked) must not hang the test, so the wait is bounded.
fn collect(out: &mpsc::Receiver<Vec<u8>>, err: &mpsc::Receiver<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    let wait = Duration::from_secs(10);
    (
        out.recv_timeout(wait).unwrap_or_default(),
        err.recv_timeout(wait).unwrap_or_default(),
    )
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------

/// How long a daemon may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A daemon this test started (dockerd, containerd). Dropping it stops it
/// (SIGTERM, then SIGKILL), stops the processes it started that would
/// outlive it (`companions`, by PID), and unmounts anything left mounted
/// under its directory, also when the test panics. On a panic the tail of
/// the daemon's log is printed.
///
/// As a second line of defence, a daemon is started through
/// `setpriv --pdeathsig TERM` where available, so it also gets SIGTERM if
/// the test thread dies without running destructors.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    companions: Vec<u32>,
    dir: PathBuf,
}

impl Daemon {
    /// Start `program args` with stdout and stderr appended to
    /// `dir/<name>.log`. `dir` is the daemon's private directory (mounts
    /// left under it are cleaned up on drop).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        envs: &[(&str, OsString)],
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let log_file = fs::File::create(&log).expect("create daemon log");
        let log_err = log_file.try_clone().expect("clone daemon log handle");

        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file());
        let mut cmd = match setpriv {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.arg("--pdeathsig").arg("TERM").arg("--").arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("PATH", daemon_path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", program.display()));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
            companions: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Poll `probe` until it returns true; panic with the daemon's log if
    /// the daemon exits or `READY_TIMEOUT` passes first.
    pub fn wait_ready(&mut self, mut probe: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited ({status}) while starting\n--- {} ---\n{}",
                        self.name,
                        self.log.display(),
                        tail(&self.log_text(), 80)
                    );
                }
            }
            if probe() {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "{} was not ready within {READY_TIMEOUT:?}\n--- {} ---\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log_text(), 80)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Also stop process `pid` (read from `pidfile`) when this daemon is
    /// stopped: a child that the daemon put in its own process group.
    pub fn add_companion_pidfile(&mut self, pidfile: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                self.companions.push(pid);
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no pid in {} \n--- log ---\n{}",
                    self.name,
                    pidfile.display(),
                    tail(&self.log_text(), 40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Stop the daemon and its companions, then unmount leftovers.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in std::mem::take(&mut self.companions) {
            if !alive(pid) {
                continue;
            }
            signal(pid, "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            while alive(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                signal(pid, "KILL");
            }
        }
        unmount_under(&self.dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        self.stop();
        if panicking {
            eprintln!(
                "--- {} log ({}) ---\n{}\n--- end of {} log ---",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 60),
                self.name
            );
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Lazily unmount every mount point at or under `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Undo the octal escapes (`\040` for a space) of /proc/self/mountinfo.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A private directory for a daemon or a client's state. Kept short: unix
/// socket paths must fit in 108 bytes.
pub fn state_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .expect("create state dir")
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Every manifest media type, as a client that accepts them all sends.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A response, fully read.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub what: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.what,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Panic with the response unless the status is `want`.
    pub fn expect_status(self, want: u16) -> Resp {
        assert_eq!(
            self.status,
            want,
            "{}: status {} (want {want}); body: {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// A blocking wrapper over reqwest, so the client tests stay plain `#[test]`s.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Http {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        Http { rt, client }
    }

    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let what = format!("{method} {url}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self.client.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        self.rt.block_on(async {
            let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{what}: reading body: {e}"))
                .to_vec();
            Resp {
                status,
                headers,
                body,
                what,
            }
        })
    }

    pub fn get(&self, url: &str) -> Resp {
        self.request("GET", url, &[("Accept", ACCEPT_MANIFESTS)], None)
    }

    pub fn head(&self, url: &str) -> Resp {
        self.request("HEAD", url, &[("Accept", ACCEPT_MANIFESTS)], None)
    }
}
