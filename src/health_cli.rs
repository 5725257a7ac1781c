//! `airdock health`: ask a server's `/readyz` and exit 0 (ready) or 1 (anything else). For
//! exec probes and the image's `HEALTHCHECK`, where no curl exists (`FROM scratch`): one
//! request through reqwest, bounded by one deadline, resolving no name through the system.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// The most of a response that is read: a probe's answer is small.
const MAX_RESPONSE: usize = 64 << 10;

#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// The URL to ask, e.g. `http://127.0.0.1:5000/readyz`. Default: `/readyz` on the
    /// loopback address of `--addr` (a wildcard address means this host's loopback), over
    /// HTTPS when the server has a certificate (`AIRDOCK_TLS_CERT`).
    #[arg(long, env = "AIRDOCK_HEALTH_URL")]
    pub url: Option<String>,
    /// The address the server listens on (the forms `serve --addr` takes); the probe goes to
    /// its port.
    #[arg(
        long,
        env = "AIRDOCK_ADDR",
        default_value = "127.0.0.1:5000",
        value_parser = crate::config::parse_listen_addr
    )]
    pub addr: SocketAddr,
    /// The server's certificate: when set (and no --url), the probe speaks HTTPS.
    #[arg(long, env = "AIRDOCK_TLS_CERT", hide = true)]
    pub tls_cert: Option<PathBuf>,
    /// Seconds for the whole probe: connect, request, answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// What to ask: the URL, and the addresses `localhost` stands for in it.
#[derive(Debug, PartialEq)]
struct Target {
    url: reqwest::Url,
    localhost: Vec<SocketAddr>,
}

impl HealthArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let url = match &self.url {
            Some(url) => {
                let u = reqwest::Url::parse(url).map_err(|e| anyhow!("{url}: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    bail!("{url}: the URL must be http://HOST[:PORT]/PATH or https://…");
                }
                u
            }
            None => {
                let scheme = if self.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                let host = match self.addr.ip() {
                    // A wildcard listener is reached on this host's loopback.
                    ip if ip.is_unspecified() => "localhost".to_owned(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    IpAddr::V4(v4) => v4.to_string(),
                };
                let port = self.addr.port();
                reqwest::Url::parse(&format!("{scheme}://{host}:{port}/readyz"))?
            }
        };
        let port = url.port_or_known_default().unwrap_or(80);
        // The static binary has no NSS to ask, so `localhost` is resolved here. An IPv6
        // wildcard listener (`:PORT`) may be dual-stack, IPv6-only or (on a host without
        // IPv6) IPv4: both loopbacks are tried, in the order its family suggests.
        let mut localhost = vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ];
        if self.url.is_none() && self.addr.is_ipv6() {
            localhost.reverse();
        }
        Ok(Target { url, localhost })
    }
}

/// Probe; `Ok(message)` when ready, `Err` saying why not.
pub async fn run(args: HealthArgs) -> anyhow::Result<String> {
    let target = args.target()?;
    let limit = Duration::from_secs(args.timeout_secs.max(1));
    let url = target.url.to_string();
    match tokio::time::timeout(limit, ask(&target, limit)).await {
        Err(_) => bail!("{url}: no answer within {}s", limit.as_secs()),
        Ok(Err(e)) => Err(e.context(url)),
        Ok(Ok((200, _))) => Ok(format!("{url}: ready")),
        Ok(Ok((status, body))) => bail!("{url}: {status} {}", body.trim()),
    }
}

/// One `GET`; the status code and the start of the body.
async fn ask(t: &Target, limit: Duration) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        // The probe asks "does this process answer ready": liveness, not identity. It sends
        // no credential and reads nothing secret, and it talks to its own container over
        // loopback, where the certificate names the public host (or a lab CA the image does
        // not carry), not `127.0.0.1`. Verifying would make every TLS deployment unhealthy.
        .danger_accept_invalid_certs(true)
        // An `HTTPS_PROXY` in the container's environment is for its clients, not for a
        // probe of the local process.
        .no_proxy()
        .resolve_to_addrs("localhost", &t.localhost)
        .timeout(limit)
        .connect_timeout(limit)
        .user_agent("airdock-health")
        .build()
        .context("setting up the HTTP client")?;
    let mut resp = client.get(t.url.clone()).send().await.map_err(|e| {
        let what = if e.is_connect() {
            "connecting"
        } else {
            "asking"
        };
        anyhow::Error::new(e).context(what)
    })?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    // A server may end a TLS stream without close_notify; what arrived still counts.
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_RESPONSE {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    Ok((status, text.chars().take(512).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, url: Option<&str>, tls: bool) -> HealthArgs {
        HealthArgs {
            url: url.map(str::to_owned),
            addr: crate::config::parse_listen_addr(addr).expect("addr"),
            tls_cert: tls.then(|| PathBuf::from("/tls/tls.crt")),
            timeout_secs: 5,
        }
    }

    #[test]
    fn the_default_target_is_readyz_on_the_listeners_loopback() {
        let t = args("0.0.0.0:5000", None, false).target().expect("target");
        assert_eq!(t.url.as_str(), "http://localhost:5000/readyz");
        assert_eq!(t.localhost[0], "127.0.0.1:5000".parse().expect("addr"));
        let t = args("[::]:5443", None, true).target().expect("target");
        assert_eq!(t.url.as_str(), "https://localhost:5443/readyz");
        assert_eq!(t.localhost[0], "[::1]:5443".parse().expect("addr"));
        let t = args(":5000", None, false).target().expect("target");
        assert_eq!(t.localhost.len(), 2);
        let t = args("[::1]:5000", None, false).target().expect("target");
        assert_eq!(t.url.as_str(), "http://[::1]:5000/readyz");
        let t = args("localhost:5001", None, false)
            .target()
            .expect("target");
        assert_eq!(t.url.as_str(), "http://127.0.0.1:5001/readyz");
    }

    #[test]
    fn urls_are_checked_and_localhost_is_resolved_here() {
        let t = args("127.0.0.1:1", Some("http://localhost:5000/livez"), false)
            .target()
            .expect("url");
        assert_eq!(t.url.path(), "/livez");
        assert_eq!(t.localhost[0], "127.0.0.1:5000".parse().expect("addr"));
        let t = args("127.0.0.1:1", Some("https://[::1]/readyz"), false)
            .target()
            .expect("url");
        assert_eq!(t.url.port_or_known_default(), Some(443));
        for bad in ["ftp://h/", "http://h:99999/", "http://:5000/", "readyz"] {
            assert!(
                args("127.0.0.1:1", Some(bad), false).target().is_err(),
                "{bad}"
            );
        }
    }
}
