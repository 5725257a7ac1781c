//! Bearer tokens: compact JWTs signed with HMAC-SHA256 under a key kept in the data dir,
//! carrying the Distribution `access` claim (repository, name, granted actions), and the
//! `scope` strings clients ask for (`repository:team/app:pull,push`, `registry:catalog:*`).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::policy::{Right, Rights};
use crate::sys::{fill_random, now};

const ISSUER: &str = "airdock";
/// Clock skew tolerated between issuing and checking (one process, but be kind to `nbf`).
const LEEWAY: u64 = 5;

/// One `access` entry of a token, as Distribution's token spec writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
}

impl Claims {
    /// Whether the token was issued for admin work: it carries `registry:admin:*`, which
    /// the token endpoint grants only to admins who ask for it.
    pub fn grants_admin(&self) -> bool {
        self.access.iter().any(|a| {
            a.kind == "registry" && a.name == "admin" && a.actions.iter().any(|x| x == "*")
        })
    }

    /// Rights this token grants on repository `name`.
    pub fn rights(&self, name: &str) -> Rights {
        let mut r = Rights::default();
        for a in self
            .access
            .iter()
            .filter(|a| a.kind == "repository" && a.name == name)
        {
            for act in &a.actions {
                for right in Right::parse_action(act) {
                    r.add(right);
                }
            }
        }
        r
    }
}

/// A requested scope. Only `repository` and `registry:catalog` mean anything here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// `type:name:actions`; the name sits between the first and the last colon.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` types are Distribution's old classes; the class is ignored.
        let kind = kind.split('(').next().unwrap_or(kind);
        Some(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Every space-separated scope in every `scope` parameter.
    pub fn parse_all<'a>(params: impl Iterator<Item = &'a str>) -> Vec<Scope> {
        params
            .flat_map(|p| p.split(' '))
            .filter_map(Scope::parse)
            .collect()
    }
}

/// Why a token was refused (logged, never told to the client in detail).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("token expired or not yet valid")]
    Expired,
    #[error("token for another issuer or service")]
    Audience,
}

/// The signing key. Cloned into each request's checks; 32 random bytes.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn random() -> std::io::Result<TokenKey> {
        let mut k = [0u8; 32];
        fill_random(&mut k)?;
        Ok(TokenKey(k))
    }

    /// A key written as 64 hex digits (as replicas share it through the metadata database).
    pub fn from_hex(hex: &str) -> std::io::Result<TokenKey> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the shared token key is not 64 hex digits",
            )
        };
        let hex = hex.trim().as_bytes();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut k = [0u8; 32];
        for (byte, pair) in k.iter_mut().zip(hex.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(TokenKey(k))
    }

    /// The key in `path`, or a new one written there (0600): tokens survive a restart.
    pub fn load_or_create(path: &Path) -> std::io::Result<TokenKey> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                Ok(TokenKey(k))
            }
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", path.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = TokenKey::random()?;
                // Written aside and renamed in, then the directory fsynced: a power loss leaves
                // either no key or the whole durable key, never a short file that would stop
                // the server from starting.
                let tmp = path.with_extension("airdock-tmp");
                crate::sys::write_private(&tmp, &key.0)?;
                std::fs::rename(&tmp, path)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes never fails.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Check signature, algorithm, issuer, audience and validity period.
    pub fn verify(&self, token: &str, service: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(b.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        // Only after the signature holds: the header must say what we sign with, so a
        // token claiming `alg: none` never passes even if someone signed it.
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(h).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(|v| v.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let claims: Claims =
            serde_json::from_slice(&B64.decode(b).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        let t = now();
        if claims.exp <= t || claims.nbf > t + LEEWAY {
            return Err(TokenError::Expired);
        }
        if claims.iss != ISSUER || claims.aud != service {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }
}

/// Claims for `sub` valid from now for `ttl` seconds.
pub fn claims(sub: &str, service: &str, ttl: u64, access: Vec<Access>) -> Claims {
    let t = now();
    let mut jti = [0u8; 12];
    let _ = fill_random(&mut jti);
    Claims {
        iss: ISSUER.to_owned(),
        sub: sub.to_owned(),
        aud: service.to_owned(),
        exp: t + ttl,
        nbf: t.saturating_sub(LEEWAY),
        iat: t,
        jti: B64.encode(jti),
        access,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn sign_verify_and_refusals() {
        let key = TokenKey::random().expect("key");
        let c = claims("alice", "svc", 60, vec![access("a/b", &["pull", "push"])]);
        let t = key.sign(&c);
        let back = key.verify(&t, "svc").expect("valid");
        assert!(back.rights("a/b").push);
        assert!(!back.rights("a/c").pull);
        assert!(matches!(key.verify(&t, "other"), Err(TokenError::Audience)));
        let other = TokenKey::random().expect("key");
        assert!(matches!(
            other.verify(&t, "svc"),
            Err(TokenError::Signature)
        ));
        // Tampered claims with the old signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged =
            B64.encode(serde_json::to_vec(&claims("root", "svc", 60, vec![])).expect("json"));
        parts[1] = &forged;
        assert!(key.verify(&parts.join("."), "svc").is_err());
        // Expired.
        let mut old = claims("alice", "svc", 60, vec![]);
        old.exp = now() - 1;
        assert!(matches!(
            key.verify(&key.sign(&old), "svc"),
            Err(TokenError::Expired)
        ));
        assert!(key.verify("a.b", "svc").is_err());
    }

    #[test]
    fn scopes() {
        let s = Scope::parse("repository:team/app:pull,push").expect("scope");
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(s.actions, ["pull", "push"]);
        let all = Scope::parse_all(["repository:a:pull registry:catalog:*", "bad"].into_iter());
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "catalog");
    }
}
