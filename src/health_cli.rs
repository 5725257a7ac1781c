//! `airdock health`: ask a server's `/readyz` and exit 0 (ready) or 1 (anything else). For
//! exec probes and the image's `HEALTHCHECK`, where no curl exists (`FROM scratch`): a
//! one-request HTTP/1.1 client over a `TcpStream`, TLS optional, bounded by one deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a response that is read: a probe's answer is small.
const MAX_RESPONSE: u64 = 64 << 10;

#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// The URL to ask, e.g. `http://127.0.0.1:5000/readyz`. Default: `/readyz` on the
    /// loopback address of `--addr` (a wildcard address means this host's loopback), over
    /// HTTPS when the server has a certificate (`AIRDOCK_TLS_CERT`).
    #[arg(long, env = "AIRDOCK_HEALTH_URL")]
    pub url: Option<String>,
    /// The address the server listens on; the probe goes to its port.
    #[arg(long, env = "AIRDOCK_ADDR", default_value = "127.0.0.1:5000")]
    pub addr: SocketAddr,
    /// The server's certificate: when set (and no --url), the probe speaks HTTPS.
    #[arg(long, env = "AIRDOCK_TLS_CERT", hide = true)]
    pub tls_cert: Option<PathBuf>,
    /// Seconds for the whole probe: connect, request, answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, PartialEq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl HealthArgs {
    fn target(&self) -> anyhow::Result<Target> {
        if let Some(url) = &self.url {
            return parse_url(url);
        }
        // A wildcard listener is reached on this host's loopback.
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(Target {
            tls: self.tls_cert.is_some(),
            host: ip.to_string(),
            port: self.addr.port(),
            path: "/readyz".into(),
        })
    }
}

/// Probe; `Ok(message)` when ready, `Err` saying why not.
pub async fn run(args: HealthArgs) -> anyhow::Result<String> {
    let target = args.target()?;
    let limit = Duration::from_secs(args.timeout_secs.max(1));
    let url = target.to_string();
    match tokio::time::timeout(limit, ask(&target)).await {
        Err(_) => bail!("{url}: no answer within {}s", limit.as_secs()),
        Ok(Err(e)) => Err(e.context(url)),
        Ok(Ok((200, _))) => Ok(format!("{url}: ready")),
        Ok(Ok((status, body))) => bail!("{url}: {status} {}", body.trim()),
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let host = match self.host.parse::<Ipv6Addr>() {
            Ok(_) => format!("[{}]", self.host),
            Err(_) => self.host.clone(),
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        bail!("{url}: the URL must start with http:// or https://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/readyz"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: unclosed `[` in the host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().with_context(|| format!("{url}: bad port"))?,
            None if after.is_empty() => default_port,
            None => bail!("{url}: unexpected text after the address"),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().with_context(|| format!("{url}: bad port"))?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        bail!("{url}: no host");
    }
    Ok(Target {
        tls,
        host,
        port,
        path: path.to_owned(),
    })
}

/// The socket address of `t`, resolving no name for IP literals and `localhost`: a static
/// binary in an empty image has no resolver configuration to ask.
async fn socket_addr(t: &Target) -> anyhow::Result<SocketAddr> {
    if let Ok(ip) = t.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, t.port));
    }
    if t.host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), t.port));
    }
    tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("resolving {}", t.host))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", t.host))
}

/// One `GET`; the status code and the start of the body.
async fn ask(t: &Target) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(socket_addr(t).await?)
        .await
        .context("connecting")?;
    if !t.tls {
        return exchange(stream, t).await;
    }
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .with_context(|| format!("{} is not a TLS server name", t.host))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(insecure_client_config()?))
        .connect(name, stream)
        .await
        .context("TLS handshake")?;
    exchange(tls, t).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    t: &Target,
) -> anyhow::Result<(u16, String)> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: airdock-health\r\nConnection: close\r\n\r\n",
        t.path, t.host
    );
    s.write_all(req.as_bytes()).await.context("sending")?;
    let mut raw = Vec::new();
    // A server may end a TLS stream without close_notify; what arrived still counts.
    let _ = (&mut s).take(MAX_RESPONSE).read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", head.lines().next()))?;
    Ok((status, body.chars().take(512).collect()))
}

/// A TLS client that accepts any certificate. The probe asks "does this server answer
/// ready", sends no credential and reads nothing secret, and typically talks to its own
/// container over loopback where the certificate names the public host, not `127.0.0.1`.
fn insecure_client_config() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCert(provider.clone()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, url: Option<&str>, tls: bool) -> HealthArgs {
        HealthArgs {
            url: url.map(str::to_owned),
            addr: addr.parse().expect("addr"),
            tls_cert: tls.then(|| PathBuf::from("/tls/tls.crt")),
            timeout_secs: 5,
        }
    }

    #[test]
    fn the_default_target_is_readyz_on_the_listeners_loopback() {
        let t = args("0.0.0.0:5000", None, false).target().expect("target");
        assert_eq!(t.to_string(), "http://127.0.0.1:5000/readyz");
        let t = args("[::]:5443", None, true).target().expect("target");
        assert_eq!(t.to_string(), "https://[::1]:5443/readyz");
    }

    #[test]
    fn urls_parse_without_resolving() {
        let t = parse_url("http://localhost:5000/livez").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 5000, "/livez")
        );
        let t = parse_url("https://[::1]/readyz").expect("url");
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "::1", 443));
        assert_eq!(parse_url("http://h").expect("url").path, "/readyz");
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(parse_url("http://:5000/").is_err());
    }
}
