//! TLS: a rustls server configuration (TLS 1.2 and 1.3 only) whose certificate is re-read
//! when its files change, so a renewed certificate is served to new connections without a
//! restart while open connections carry on; and `airdock cert init`, a lab CA and a server
//! certificate signed by it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// How often a handshake may look at the files' modification times.
const RECHECK: Duration = Duration::from_secs(1);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM chain and key and check that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("loading the key in {}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(ck)
}

/// Serves the certificate in two files and swaps it when either file's mtime changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// std RwLock: handshakes read an `Arc` out; a reload swaps it. Never held across await.
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

fn stamp(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<ReloadingCert> {
        let ck = load_certified_key(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Current {
                key: Arc::new(ck),
                stamp: stamp(cert, key),
                checked: Instant::now(),
            }),
        })
    }

    fn maybe_reload(&self) {
        {
            let c = self.current.read().unwrap_or_else(|e| e.into_inner());
            if c.checked.elapsed() < RECHECK {
                return;
            }
        }
        let now = stamp(&self.cert, &self.key);
        let mut c = self.current.write().unwrap_or_else(|e| e.into_inner());
        c.checked = Instant::now();
        if now == c.stamp {
            return;
        }
        // Files replaced one after the other may be caught half-way (new cert, old key):
        // keep serving the old pair and try again at the next check.
        match load_certified_key(&self.cert, &self.key) {
            Ok(ck) => {
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                c.key = Arc::new(ck);
                c.stamp = now;
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "TLS certificate not reloaded"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        let c = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(&c.key))
    }
}

/// The server's TLS configuration: TLS 1.2+, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let resolver = ReloadingCert::new(cert, key)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

// ---- airdock cert init -------------------------------------------------------------------

/// The CA's name is fixed so that a CA kept from an earlier `cert init` can sign again
/// (the issuer name and key identifier are derived from it and the key).
const CA_NAME: &str = "airdock lab CA";

fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "airdock");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, 10);
    Ok(p)
}

/// Valid from yesterday (clock skew between lab machines) to `years` from today.
fn set_validity(p: &mut rcgen::CertificateParams, years: i32) {
    let days = (crate::sys::now() / 86400) as i64;
    let (y, m, d) = crate::sys::civil_from_days(days - 1);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = crate::sys::civil_from_days(days);
    p.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

pub struct CertInit {
    pub ca_reused: bool,
    pub files: Vec<PathBuf>,
}

/// Write `ca.crt`, `ca.key` (unless a CA is there and `force` is off), `tls.crt`, `tls.key`.
pub fn cert_init(dir: &Path, hosts: &[String], force: bool) -> anyhow::Result<CertInit> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (tls_crt, tls_key) = (dir.join("tls.crt"), dir.join("tls.key"));
    for h in hosts {
        if h.parse::<IpAddr>().is_err()
            && (h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*'))
        {
            anyhow::bail!("`{h}` is neither an IP address nor a DNS name");
        }
    }
    let params = ca_params()?;
    let reuse = !force && ca_crt.exists() && ca_key.exists();
    let ca_keypair = if reuse {
        let pem = std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading {}", ca_key.display()))?;
        rcgen::KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", ca_key.display()))?
    } else {
        let kp = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&kp)?;
        crate::sys::write_private(&ca_key, kp.serialize_pem().as_bytes())?;
        std::fs::write(&ca_crt, cert.pem())?;
        kp
    };
    let issuer = rcgen::Issuer::new(params, ca_keypair);

    let mut sp = rcgen::CertificateParams::new(hosts.to_vec())?;
    sp.distinguished_name = rcgen::DistinguishedName::new();
    sp.distinguished_name
        .push(rcgen::DnType::CommonName, hosts[0].as_str());
    sp.is_ca = rcgen::IsCa::ExplicitNoCa;
    sp.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    sp.use_authority_key_identifier_extension = true;
    set_validity(&mut sp, 2);
    let kp = rcgen::KeyPair::generate()?;
    let cert = sp.signed_by(&kp, &issuer)?;
    // The key first: a reloading server never pairs the new certificate with the old key
    // for longer than one check.
    crate::sys::write_private(&tls_key, kp.serialize_pem().as_bytes())?;
    std::fs::write(&tls_crt, cert.pem())?;
    Ok(CertInit {
        ca_reused: reuse,
        files: vec![ca_crt, ca_key, tls_crt, tls_key],
    })
}

/// What to do with the files, for people: one block per client.
pub fn trust_instructions(dir: &Path, hosts: &[String], port: u16) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let ca = dir.join("ca.crt");
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ca = ca.display();
    let h = &hosts[0];
    let hp = if h.contains(':') {
        format!("[{h}]:{port}")
    } else {
        format!("{h}:{port}")
    };
    format!(
        "\
Serve with:
  airdock serve --addr 0.0.0.0:{port} --tls-cert {crt} --tls-key {key}

Trust the lab CA ({ca}) on each client machine (shown for {hp}; repeat per name):

docker (no restart needed):
  mkdir -p /etc/docker/certs.d/{hp}
  cp {ca} /etc/docker/certs.d/{hp}/ca.crt

containerd / crictl / kubelet (config_path = \"/etc/containerd/certs.d\" in the CRI registry section):
  mkdir -p /etc/containerd/certs.d/{hp}
  cp {ca} /etc/containerd/certs.d/{hp}/ca.crt
  cat > /etc/containerd/certs.d/{hp}/hosts.toml <<EOF
server = \"https://{hp}\"
[host.\"https://{hp}\"]
  capabilities = [\"pull\", \"resolve\", \"push\"]
  ca = \"/etc/containerd/certs.d/{hp}/ca.crt\"
EOF

imgpkg:
  imgpkg copy ... --registry-ca-cert-path {ca}

skopeo / podman (per registry directory):
  mkdir -p /etc/containers/certs.d/{hp} && cp {ca} /etc/containers/certs.d/{hp}/ca.crt

crane / oras and every Go or curl client (system store):
  Debian/Ubuntu: cp {ca} /usr/local/share/ca-certificates/airdock-lab-ca.crt && update-ca-certificates
  RHEL/Fedora:   cp {ca} /etc/pki/ca-trust/source/anchors/airdock-lab-ca.crt && update-ca-trust
  or per call:   SSL_CERT_FILE={ca} crane ... ; oras ... --ca-file {ca} ; curl --cacert {ca} ...
",
        crt = crt.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_and_reuse_ca() {
        let dir = tempfile::tempdir().expect("tmp");
        let hosts = vec!["registry.lab".to_owned(), "127.0.0.1".to_owned()];
        let first = cert_init(dir.path(), &hosts, false).expect("init");
        assert!(!first.ca_reused);
        load_certified_key(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .expect("server pair loads");
        let ca_before = std::fs::read(dir.path().join("ca.crt")).expect("ca");
        let again = cert_init(dir.path(), &hosts, false).expect("init again");
        assert!(again.ca_reused);
        assert_eq!(
            ca_before,
            std::fs::read(dir.path().join("ca.crt")).expect("ca")
        );
        assert!(cert_init(dir.path(), &["bad host".to_owned()], false).is_err());
        let text = trust_instructions(dir.path(), &hosts, 5000);
        assert!(text.contains("/etc/docker/certs.d/registry.lab:5000/ca.crt"));
        assert!(text.contains("--registry-ca-cert-path"));
    }
}
