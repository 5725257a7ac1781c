//! TLS to the metadata database: libpq's `sslmode` and `sslrootcert` taken out of
//! `metadata.url` (tokio-postgres knows `disable|prefer|require` only, and no root file) and
//! turned into a rustls client configuration, with libpq's meaning for each mode.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls::{Error as TlsError, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What `sslmode` asks of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `disable`, `allow`, `prefer` (libpq's default) or absent: plaintext. airdock does not
    /// try TLS and fall back to plaintext: a lab that wants TLS asks for it.
    Off,
    /// `require`: encrypted; the certificate is checked only if `sslrootcert` is given (then
    /// as `verify-ca`), as libpq does.
    Require,
    /// `verify-ca`: encrypted, the server's certificate chains to a trusted root.
    VerifyCa,
    /// `verify-full`: and it names the host connected to.
    VerifyFull,
}

/// `url` without `sslmode` and `sslrootcert`, and their values. Both forms libpq takes: a
/// URL (`postgres://…?sslmode=verify-full&sslrootcert=/etc/ca.pem`) and `key=value` words.
pub(crate) fn take_params(url: &str) -> Result<(String, Mode, Option<String>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => return false,
        }
        true
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|word| {
                let (k, v) = word.split_once('=').unwrap_or((word, ""));
                !take(k.trim(), v.trim().trim_matches('\'').to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mode = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => Mode::Off,
        Some("require") => Mode::Require,
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ))
        }
    };
    Ok((rest, mode, root))
}

/// `%XX` escapes of a URL query value decoded (a root file path may carry them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for `mode` (`None`: plaintext), trusting the CA certificates in the PEM file
/// `root` (`system` or absent: the system's roots).
pub(crate) fn connector(
    mode: Mode,
    root: Option<&str>,
) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match (mode, root) {
        (Mode::Off, _) => return Ok(None),
        (Mode::Require, None) => {
            tracing::warn!(
                "metadata.url: sslmode=require encrypts but does not check the database's \
                 certificate; use sslmode=verify-full and sslrootcert to authenticate it"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
        }
        (Mode::Require | Mode::VerifyCa, root) => {
            let roots = Arc::new(roots(root)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        }
        (Mode::VerifyFull, root) => builder.with_root_certificates(roots(root)?),
    };
    Ok(Some(MakeRustlsConnect::new(config.with_no_client_auth())))
}

/// The CA certificates of PEM file `root`, or the system's (`system`, or none named).
fn roots(root: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        Some(path) if path != "system" => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no CA certificate in it"));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "no system CA certificates found: name the database's CA with sslrootcert"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// `require` without a root file (libpq's meaning): any certificate, but the handshake's
/// signatures are still checked against it, so the channel is encrypted end to end with
/// whoever answered.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not compared with
/// the host (webpki checks the chain first, so a name mismatch means the chain was good).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_leave_the_url_and_keep_the_rest() {
        let (rest, mode, root) = take_params(
            "postgres://a@db:5432/x?application_name=z&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("parse");
        assert_eq!(rest, "postgres://a@db:5432/x?application_name=z");
        assert_eq!(mode, Mode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = take_params("postgres://a@db/x?sslmode=require").expect("parse");
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://a@db/x", Mode::Require, None)
        );
        let (rest, mode, _) =
            take_params("host=db user=a sslmode=verify-ca dbname=x").expect("parse");
        assert_eq!(
            (rest.as_str(), mode),
            ("host=db user=a dbname=x", Mode::VerifyCa)
        );
        assert_eq!(
            take_params("postgres://a@db/x").expect("parse").1,
            Mode::Off
        );
        assert_eq!(
            take_params("postgres://a@db/x?sslmode=prefer")
                .expect("parse")
                .1,
            Mode::Off
        );
        let bad = take_params("postgres://a@db/x?sslmode=verify").expect_err("refused");
        assert!(bad.contains("verify-full"), "{bad}");
        let missing = connector(Mode::VerifyFull, Some("/nonexistent/ca.pem")).err();
        assert!(missing.is_some_and(|m| m.contains("/nonexistent/ca.pem")));
    }
}
