//! Content digests (`algorithm:hex`) and the streaming hasher that produces them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::StoreError;

/// The digest algorithms airdock computes. The spec registers exactly these two.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Algorithm, StoreError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(StoreError::DigestInvalid(format!(
                "unsupported digest algorithm {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated digest. The only way to build one is [`Digest::parse`] or hashing, so a
/// `Digest` is always safe to turn into a file name. Held as raw bytes, not hex: the
/// metadata of a large registry holds several digests per manifest and tag.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(Raw);

/// Variant order and byte order give the same order as the `algorithm:hex` strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Raw {
    Sha256([u8; 32]),
    Sha512(Box<[u8; 64]>),
}

/// A digest's hex form, on the stack.
pub struct Hex {
    buf: [u8; 128],
    len: usize,
}

impl std::ops::Deref for Hex {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever written into `buf`.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl AsRef<std::path::Path> for Hex {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&**self)
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn decode(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (unhex(pair[0]), unhex(pair[1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| StoreError::DigestInvalid(format!("{s:?} is not algorithm:hex")))?;
        let alg = Algorithm::parse(alg)?;
        let bad = || {
            StoreError::DigestInvalid(format!(
                "{s:?}: {alg} needs {} lowercase hex characters",
                alg.hex_len()
            ))
        };
        let raw = match alg {
            Algorithm::Sha256 => {
                let mut b = [0u8; 32];
                if !decode(hex.as_bytes(), &mut b) {
                    return Err(bad());
                }
                Raw::Sha256(b)
            }
            Algorithm::Sha512 => {
                let mut b = Box::new([0u8; 64]);
                if !decode(hex.as_bytes(), &mut b[..]) {
                    return Err(bad());
                }
                Raw::Sha512(b)
            }
        };
        Ok(Digest(raw))
    }

    /// Hash a small in-memory value (manifests, configs).
    pub fn of(alg: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = alg.hasher();
        h.update(bytes);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.0 {
            Raw::Sha256(_) => Algorithm::Sha256,
            Raw::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The raw digest bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Raw::Sha256(b) => b,
            Raw::Sha512(b) => &b[..],
        }
    }

    pub fn hex(&self) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut h = Hex {
            buf: [0u8; 128],
            len: 0,
        };
        for b in self.bytes() {
            h.buf[h.len] = DIGITS[usize::from(b >> 4)];
            h.buf[h.len + 1] = DIGITS[usize::from(b & 15)];
            h.len += 2;
        }
        h
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An in-progress hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(Raw::Sha256(h.finalize().into())),
            Hasher::Sha512(h) => Digest(Raw::Sha512(Box::new(h.finalize().into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::parse(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .expect("valid");
        assert_eq!(d, Digest::of(Algorithm::Sha256, b""));
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:../../../../etc/passwd000000000000000000000000000000000000000000",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
        let d512 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(Digest::parse(&d512.to_string()).expect("roundtrip"), d512);
        assert!(d512.to_string().starts_with("sha512:ddaf35a1"));
    }

    #[test]
    fn order_and_size() {
        let mut ds: Vec<Digest> = (0..50u8)
            .map(|i| {
                Digest::of(
                    if i % 3 == 0 {
                        Algorithm::Sha512
                    } else {
                        Algorithm::Sha256
                    },
                    &[i],
                )
            })
            .collect();
        let mut strings: Vec<String> = ds.iter().map(Digest::to_string).collect();
        ds.sort();
        strings.sort();
        assert_eq!(
            ds.iter().map(Digest::to_string).collect::<Vec<_>>(),
            strings
        );
        // Metadata holds several digests per manifest: keep them small and heap-free.
        assert!(std::mem::size_of::<Digest>() <= 40);
        let d = &ds[0];
        assert_eq!(d.hex().len() * 4, d.bytes().len() * 8);
    }
}
