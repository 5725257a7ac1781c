//! nginx (Debian `nginx-light`) in front of airdock for the tests: TLS termination for one
//! upstream (`proxy.rs`), round-robin over several replicas (`cluster.rs`). One process in
//! the foreground (`master_process off`: one worker, so the round-robin is strict), its own
//! prefix, configuration, logs and temp dirs, on a free loopback port, stopped by its PID.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{require_tool, scratch_dir};

/// A running nginx; dropping it stops it (SIGQUIT, then SIGKILL).
pub(crate) struct Nginx {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: TempDir,
}

/// A certificate and key to serve TLS with.
pub(crate) struct Tls<'a> {
    pub(crate) cert: &'a Path,
    pub(crate) key: &'a Path,
}

impl Nginx {
    /// Proxy everything to `upstreams`, in turn when there are several (round-robin, each
    /// request to the next), the way the README's snippet does: request bodies streamed
    /// (`proxy_request_buffering off`), no body size limit, HTTP/1.1 with kept-alive
    /// connections to the upstreams, `X-Forwarded-*` set. With `tls`, over TLS.
    pub(crate) fn start(upstreams: &[SocketAddr], tls: Option<Tls<'_>>) -> Nginx {
        let bin = require_tool("nginx");
        let dir = scratch_dir("airdock-nginx-");
        let p = dir.path().display().to_string();
        let port = free_port();
        let (listen, certs) = match tls {
            Some(t) => (
                format!("127.0.0.1:{port} ssl"),
                format!(
                    "    ssl_certificate {};\n    ssl_certificate_key {};\n",
                    t.cert.display(),
                    t.key.display()
                ),
            ),
            None => (format!("127.0.0.1:{port}"), String::new()),
        };
        // One upstream: proxied as such (its address is the `Host` airdock sees, as before
        // the round-robin existed). Several: a group, and the client's `Host` passed on.
        let (group, target, host) = match upstreams {
            [one] => (String::new(), one.to_string(), ""),
            many => {
                let servers: String = many
                    .iter()
                    .map(|a| format!("    server {a} max_fails=0;\n"))
                    .collect();
                (
                    format!("  upstream airdock {{\n{servers}    keepalive 16;\n  }}\n"),
                    "airdock".to_owned(),
                    "      proxy_set_header Host $http_host;\n",
                )
            }
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
events {{ worker_connections 256; }}\n\
http {{\n  log_format lb '$upstream_addr $request_method $request_uri $status';\n  \
access_log {p}/access.log lb;\n  client_body_temp_path {p}/body;\n  \
proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
scgi_temp_path {p}/scgi;\n  client_max_body_size 0;\n{group}  server {{\n    \
listen {listen};\n{certs}    location / {{\n      proxy_pass http://{target};\n      \
proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{host}      \
proxy_request_buffering off;\n      proxy_buffering off;\n      proxy_read_timeout 300s;\n      \
proxy_send_timeout 300s;\n      \
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
proxy_set_header X-Forwarded-Proto $scheme;\n      \
proxy_set_header X-Forwarded-Host $http_host;\n    }}\n  }}\n}}\n",
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            child: Some(child),
            port,
            dir,
        };
        nginx.wait_ready();
        nginx
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!("nginx did not start ({exited:?}):\n{}", self.error_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT` (for the plain-HTTP balancer).
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The requests served so far, in order: (upstream address, method, URI, status), once
    /// there are `at_least` (nginx logs a request just after its response went out; 10 s at
    /// most).
    pub(crate) fn requests(&self, at_least: usize) -> Vec<(String, String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
            let served: Vec<_> = log
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(' ').map(str::to_owned);
                    Some((f.next()?, f.next()?, f.next()?, f.next()?))
                })
                .collect();
            if served.len() >= at_least || Instant::now() > deadline {
                return served;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGQUIT is nginx's graceful stop; SIGKILL if it does not go.
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
