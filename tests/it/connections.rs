//! Issue 10, defects 2 and 12 over real sockets: connections that never complete a request
//! head are closed at the head deadline whatever stage they stop in, idle connections are
//! closed, running out of descriptors does not stop the server, and a request refused before
//! its body was read still gets its status and JSON error body in curl, Go and Python.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::security::{basic, htpasswd, lab_ca, tls_server};
use crate::support::{require_tool, scratch_dir, Server};

/// The head deadline the servers here run with.
const HEAD_SECS: u64 = 2;

/// The client preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame.
const H2_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A rustls client trusting `ca_pem`, offering `alpn`.
fn tls_client(ca_pem: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS connection to `addr` with its handshake done.
fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(cfg, name).expect("client");
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Read (and drop) until the server closes; how long that took from `since`, or `None`
/// when it was still open after `patience`.
fn wait_for_close(r: &mut impl Read, since: Instant, patience: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(since.elapsed()),
        }
        if since.elapsed() > patience {
            return None;
        }
    }
}

/// `GET /v2/` on `conn` (then closed); the answer as text.
fn get_v2(mut conn: impl Read + Write) -> String {
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    let _ = conn.read_to_string(&mut got);
    got
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let t = TcpStream::connect(addr).expect("connect");
    t.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    t
}

#[test]
fn silent_connections_are_closed_at_the_head_deadline() {
    let certs = scratch_dir("airdock-certs-");
    let ca = PathBuf::from(lab_ca(certs.path()));
    let head = HEAD_SECS.to_string();
    let plain = Server::start_with_args(&["--header-timeout-secs", &head]);
    let tls = tls_server(certs.path(), &["--header-timeout-secs", &head]);
    let (p, t) = (plain.addr(), tls.addr());
    let h1 = tls_client(&ca, &[b"http/1.1"]);
    let h2 = tls_client(&ca, &[b"h2"]);
    let patience = Duration::from_secs(HEAD_SECS + 10);
    // Each stage: what the client does before it falls silent; then it waits for the close.
    type Stage = Box<dyn FnOnce(Instant) -> Option<Duration> + Send>;
    let stages: Vec<(&str, Stage)> = vec![
        (
            "plain TCP, no byte",
            Box::new(move |t0| wait_for_close(&mut tcp(p), t0, patience)),
        ),
        (
            "plain, part of the HTTP/2 preface",
            Box::new(move |t0| {
                let mut s = tcp(p);
                s.write_all(&H2_PREFACE[..16]).expect("write");
                wait_for_close(&mut s, t0, patience)
            }),
        ),
        (
            "plain, HTTP/2 preface and SETTINGS, no request",
            Box::new(move |t0| {
                let mut s = tcp(p);
                s.write_all(H2_PREFACE).expect("write");
                s.write_all(&H2_SETTINGS).expect("write");
                wait_for_close(&mut s, t0, patience)
            }),
        ),
        (
            "plain, part of an HTTP/1.1 head",
            Box::new(move |t0| {
                let mut s = tcp(p);
                s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
                    .expect("write");
                wait_for_close(&mut s, t0, patience)
            }),
        ),
        (
            "TLS port, no byte",
            Box::new(move |t0| wait_for_close(&mut tcp(t), t0, patience)),
        ),
        (
            "TLS handshake done, then silence",
            Box::new(move |t0| wait_for_close(&mut tls_connect(t, h1), t0, patience)),
        ),
        (
            "TLS with ALPN h2, part of the preface",
            Box::new(move |t0| {
                let mut s = tls_connect(t, h2);
                s.write_all(&H2_PREFACE[..10]).expect("write");
                s.flush().expect("flush");
                wait_for_close(&mut s, t0, patience)
            }),
        ),
    ];
    let running: Vec<_> = stages
        .into_iter()
        .map(|(name, stage)| (name, thread::spawn(move || stage(Instant::now()))))
        .collect();
    for (name, handle) in running {
        let closed = handle.join().expect("stage thread");
        let took = closed.unwrap_or_else(|| panic!("{name}: still open after {patience:?}"));
        assert!(
            took < Duration::from_secs(HEAD_SECS + 3),
            "{name}: closed only after {took:?}"
        );
    }
    // Both servers still serve.
    let c = TcpStream::connect(plain.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let got = get_v2(c);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let got = get_v2(tls_connect(tls.addr(), tls_client(&ca, &[b"http/1.1"])));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

/// One HTTP/2 frame: type, flags, stream, payload.
fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut h = [0u8; 9];
    r.read_exact(&mut h)?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok((h[3], h[4], stream, payload))
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let s = Server::start_with_args(&["--idle-timeout-secs", "2", "--header-timeout-secs", "2"]);

    // HTTP/2 (prior knowledge): one GET, then nothing. The server answers it, and after the
    // idle timeout says GOAWAY and closes.
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    c.write_all(H2_PREFACE).expect("preface");
    c.write_all(&H2_SETTINGS).expect("settings");
    // HPACK: :method GET, :scheme http, :path /v2/ (literal), :authority x (literal).
    let block = [&[0x82u8, 0x86, 0x04, 4][..], b"/v2/", &[0x01, 1], b"x"].concat();
    let mut headers = vec![0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, 1];
    headers.extend_from_slice(&block);
    c.write_all(&headers).expect("headers");
    let mut answered = false;
    let mut goaway = None;
    let start = Instant::now();
    loop {
        match read_frame(&mut c) {
            Ok((1, _, 1, _)) => answered = true,
            Ok((7, _, 0, _)) => goaway = goaway.or(Some(start.elapsed())),
            // Answer pings as a live client does (the server pings to end GOAWAY politely).
            Ok((6, 0, 0, p)) => {
                let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&p);
                let _ = c.write_all(&pong);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let closed = start.elapsed();
    assert!(answered, "no response to the GET");
    let goaway = goaway.expect("no GOAWAY before the close");
    assert!(
        goaway >= Duration::from_millis(1500) && closed < Duration::from_secs(10),
        "GOAWAY after {goaway:?}, closed after {closed:?}"
    );

    // HTTP/1.1 keep-alive: the same after one request.
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let start = Instant::now();
    let took = wait_for_close(&mut c, start, Duration::from_secs(12))
        .expect("idle HTTP/1.1 connection still open after 12 s");
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
}

/// `/proc/<pid>/limits`: the soft and hard "Max open files".
fn open_files_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line")
        .to_owned();
    let mut f = line["Max open files".len()..].split_whitespace();
    let soft = f.next().expect("soft").to_owned();
    let hard = f.next().expect("hard").to_owned();
    (soft, hard)
}

#[test]
fn soft_open_files_limit_is_raised_to_the_hard_one() {
    let s = Server::start_after_shell("ulimit -Sn 100 && ulimit -Hn 4096", &[]);
    let (soft, hard) = open_files_limits(s.pid().expect("running"));
    assert_eq!((soft.as_str(), hard.as_str()), ("4096", "4096"));
}

#[test]
fn running_out_of_descriptors_does_not_stop_serving() {
    // 64 descriptors, a few of them the server's own: 150 silent connections exhaust them.
    let s = Server::start_after_shell("ulimit -n 64", &["--header-timeout-secs", "1"]);
    let (soft, _) = open_files_limits(s.pid().expect("running"));
    assert_eq!(soft, "64");
    let idle: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(s.addr()).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    // Behind them in the queue, an ordinary request gets its answer once the silent ones
    // are closed at the head deadline.
    let start = Instant::now();
    let c = TcpStream::connect(s.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let got = get_v2(c);
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "no answer after {:?}: {got:?}",
        start.elapsed()
    );
    drop(idle);
    // One error line per episode of exhaustion, not one per retry.
    let logs = s.logs();
    let errors = logs.matches("out of file descriptors").count();
    let recovered = logs.matches("accepting connections again").count();
    assert!(errors >= 1, "the exhaustion was not logged:\n{logs}");
    assert!(errors <= recovered + 1, "{errors} error lines:\n{logs}");
}

// ---------------------------------------------------------------------------------------
// Refusals before the body is read (defect 12)
// ---------------------------------------------------------------------------------------

/// A TLS server and a plain one, each with alice (no admin right) and root (admin).
struct RefusalLab {
    tls: Server,
    plain: Server,
    ca: PathBuf,
    dir: tempfile::TempDir,
    _certs: tempfile::TempDir,
}

impl RefusalLab {
    fn start() -> RefusalLab {
        let certs = scratch_dir("airdock-certs-");
        let ca = PathBuf::from(lab_ca(certs.path()));
        let dir = scratch_dir("airdock-refusal-");
        let hp = htpasswd(dir.path(), &[("alice", "alice-pw"), ("root", "root-pw")]);
        let cfg = dir.path().join("airdock.yaml");
        std::fs::write(
            &cfg,
            format!(
                "auth:\n  htpasswd: {}\n  admins: [root]\naccess:\n  - repos: [\"team/**\"]\n    users: [alice]\n    allow: [pull, push]\n",
                hp.display()
            ),
        )
        .expect("config");
        let cfg = cfg.to_str().expect("utf-8");
        RefusalLab {
            tls: tls_server(certs.path(), &["--config", cfg]),
            plain: Server::start_with_args(&["--config", cfg]),
            ca,
            dir,
            _certs: certs,
        }
    }

    /// A file of `size` zero bytes to send.
    fn body(&self, size: usize) -> PathBuf {
        let p = self.dir.path().join(format!("body-{size}"));
        if !p.exists() {
            std::fs::write(&p, vec![0u8; size]).expect("body");
        }
        p
    }

    fn url(&self, tls: bool, path: &str) -> String {
        match tls {
            true => format!("https://localhost:{}{path}", self.tls.addr().port()),
            false => format!("{}{path}", self.plain.base_url()),
        }
    }
}

/// The refusals tried: anonymous upload (401) and a non-admin import (403). Both are
/// decided by the auth layer from the head alone.
const UPLOAD: &str = "/v2/team/app/blobs/uploads/0f9fb2a6-1b7a-4d6e-9c53-0d1e1d2b3c4d";
const IMPORT: &str = "/admin/v1/import?repository=team/app";

/// One refused request: path, method, `Authorization` value, expected status and code.
type Refusal = (
    &'static str,
    &'static str,
    Option<String>,
    u16,
    &'static str,
);

fn refusals() -> [Refusal; 2] {
    [
        (UPLOAD, "PATCH", None, 401, "UNAUTHORIZED"),
        (
            IMPORT,
            "POST",
            Some(basic("alice", "alice-pw")),
            403,
            "DENIED",
        ),
    ]
}

/// Run a client; it must exit 0 and show `status` and a JSON error body with `code`.
fn assert_refusal(what: &str, mut client: Command, status: u16, code: &str) {
    let out = client.output().expect("run the client");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        output.contains(&status.to_string()) && output.contains(&format!("\"code\":\"{code}\"")),
        "{what}: expected {status} {code}, got: {output}"
    );
    assert!(out.status.success(), "{what}: {output}");
}

#[test]
fn early_refusals_reach_curl_over_http2_and_http1() {
    require_tool("curl");
    let lab = RefusalLab::start();
    let ca = lab.ca.to_str().expect("utf-8");
    let body = lab.body(5_000_000);
    let data = format!("@{}", body.display());
    for round in 0..3 {
        for (proto, expect) in [
            ("--http2", None),
            ("--http1.1", None),
            // Without `Expect: 100-continue` the whole body is on its way at once.
            ("--http1.1", Some("Expect:")),
        ] {
            for (path, method, auth, status, code) in refusals() {
                let mut cmd = Command::new("curl");
                cmd.args(["-sS", "--cacert", ca, proto, "-X", method])
                    .args(["--data-binary", &data, "-w", " %{http_code}"]);
                if let Some(a) = &auth {
                    cmd.args(["-H", &format!("Authorization: {a}")]);
                }
                if let Some(h) = expect {
                    cmd.args(["-H", h]);
                }
                cmd.arg(lab.url(true, path));
                let what = format!("curl {proto} {expect:?} {method} {path} (round {round})");
                assert_refusal(&what, cmd, status, code);
            }
        }
    }
}

/// A Go HTTP client: `probe METHOD URL SIZE CA h1|h2` sends SIZE zero bytes and prints the
/// protocol, the status and the body (exit 0), or the error (exit 1). Standard library only.
const GO_PROBE: &str = r#"package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

func main() {
	method, url, ca := os.Args[1], os.Args[2], os.Args[4]
	size, _ := strconv.Atoi(os.Args[3])
	tr := &http.Transport{ForceAttemptHTTP2: os.Args[5] == "h2"}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	req, _ := http.NewRequest(method, url, bytes.NewReader(make([]byte, size)))
	if len(os.Args) > 6 {
		req.Header.Set("Authorization", os.Args[6])
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println("error reading the body:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %d %s\n", resp.Proto, resp.StatusCode, body)
}
"#;

/// The `go` binary: on PATH, or where the Go tarball installs it.
fn go_tool() -> PathBuf {
    let usual = Path::new("/usr/local/go/bin/go");
    if usual.is_file() {
        return usual.to_path_buf();
    }
    require_tool("go")
}

#[test]
fn early_refusals_reach_a_go_client() {
    let go = go_tool();
    let lab = RefusalLab::start();
    let src = scratch_dir("airdock-goprobe-");
    std::fs::write(src.path().join("main.go"), GO_PROBE).expect("main.go");
    std::fs::write(src.path().join("go.mod"), "module probe\n\ngo 1.21\n").expect("go.mod");
    let probe = src.path().join("probe");
    let out = Command::new(&go)
        .args(["build", "-o"])
        .arg(&probe)
        .arg(".")
        .current_dir(src.path())
        // Only the installed toolchain and the standard library: no download.
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .output()
        .expect("go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = lab.ca.to_str().expect("utf-8").to_owned();
    for round in 0..3 {
        for (tls, size, proto) in [
            (true, "1000000", "h1"),
            (true, "5000000", "h2"),
            (false, "20000000", "h1"),
        ] {
            let ca = if tls { ca.as_str() } else { "" };
            for (path, method, auth, status, code) in refusals() {
                let mut cmd = Command::new(&probe);
                cmd.args([method, &lab.url(tls, path), size, ca, proto]);
                cmd.args(auth);
                let what = format!("Go {proto} tls={tls} {size} B {method} {path} (round {round})");
                assert_refusal(&what, cmd, status, code);
            }
        }
    }
}

/// Python `requests`: `probe.py METHOD URL SIZE CA [AUTH]`, like the Go probe.
const PY_PROBE: &str = r#"import sys
import requests

method, url, size, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
headers = {"Authorization": sys.argv[5]} if len(sys.argv) > 5 else {}
try:
    r = requests.request(method, url, data=b"\0" * size, headers=headers,
                         verify=ca or True, timeout=60)
except Exception as e:
    print("error:", e)
    sys.exit(1)
print(r.status_code, r.text)
"#;

#[test]
fn early_refusals_reach_python_requests() {
    // Debian's python3-requests (scripts/install-deps.sh), not whatever python3 is first on
    // PATH.
    let python = Path::new("/usr/bin/python3");
    let check = Command::new(python)
        .args(["-c", "import requests"])
        .status()
        .expect("run /usr/bin/python3");
    assert!(
        check.success(),
        "python3-requests is not installed; run scripts/install-deps.sh"
    );
    let lab = RefusalLab::start();
    let src = scratch_dir("airdock-pyprobe-");
    let probe = src.path().join("probe.py");
    std::fs::write(&probe, PY_PROBE).expect("probe.py");
    let ca = lab.ca.to_str().expect("utf-8").to_owned();
    for round in 0..3 {
        for (tls, size) in [(true, "1000000"), (false, "2000000")] {
            let ca = if tls { ca.as_str() } else { "" };
            for (path, method, auth, status, code) in refusals() {
                let mut cmd = Command::new(python);
                cmd.arg(&probe)
                    .args([method, &lab.url(tls, path), size, ca]);
                cmd.args(auth);
                let what = format!("Python tls={tls} {size} B {method} {path} (round {round})");
                assert_refusal(&what, cmd, status, code);
            }
        }
    }
}
