//! Content digests as they appear inside an imgpkg tar (`sha256:<hex>` strings).
//!
//! This module keeps its own small digest type instead of the storage crate's so that the
//! tar/manifest parsers stay free of I/O dependencies and can be fuzzed on their own; the
//! import driver converts at the boundary.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

/// The hash algorithms an OCI digest may name that we can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    Sha256,
    Sha512,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha256",
            Alg::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Alg::Sha256 => 64,
            Alg::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "sha256" => Some(Alg::Sha256),
            "sha512" => Some(Alg::Sha512),
            _ => None,
        }
    }
}

/// A validated `<alg>:<lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dgst {
    alg: Alg,
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {0:?}")]
pub struct BadDigest(pub String);

impl Dgst {
    /// Parses `sha256:<64 hex>` / `sha512:<128 hex>`; uppercase hex is refused because
    /// registries compare digests as strings.
    pub fn parse(s: &str) -> Result<Dgst, BadDigest> {
        let bad = || BadDigest(truncate(s, 200));
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        Self::from_parts(alg, hex).ok_or_else(bad)
    }

    /// Builds a digest from the two halves of a tar member name `<alg>-<hex>.tar.gz`.
    pub fn from_parts(alg: &str, hex: &str) -> Option<Dgst> {
        let alg = Alg::from_name(alg)?;
        let ok = hex.len() == alg.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Dgst {
            alg,
            hex: hex.to_owned(),
        })
    }

    /// sha256 of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Dgst {
        Dgst {
            alg: Alg::Sha256,
            hex: hex(&Sha256::digest(bytes)),
        }
    }

    /// Whether `bytes` hash to this digest (with this digest's algorithm).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let got = match self.alg {
            Alg::Sha256 => hex(&Sha256::digest(bytes)),
            Alg::Sha512 => hex(&Sha512::digest(bytes)),
        };
        got == self.hex
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// imgpkg's default upload tag for an item: `sha256-<hex>.imgpkg`.
    pub fn imgpkg_tag(&self) -> String {
        format!("{}-{}.imgpkg", self.alg.name(), self.hex)
    }

    /// The tag of a bundle's ImageLocations image: `sha256-<hex>.image-locations.imgpkg`.
    pub fn locations_tag(&self) -> String {
        format!("{}-{}.image-locations.imgpkg", self.alg.name(), self.hex)
    }

    /// The tar member name imgpkg uses for a blob: `sha256-<hex>.tar.gz`.
    pub fn tar_member_name(&self) -> String {
        format!("{}-{}.tar.gz", self.alg.name(), self.hex)
    }
}

impl fmt::Display for Dgst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Shortens attacker-controlled text before it goes into an error message.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let s = "sha256:761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7";
        let d = Dgst::parse(s).expect("valid");
        assert_eq!(d.to_string(), s);
        assert_eq!(
            d.imgpkg_tag(),
            "sha256-761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7.imgpkg"
        );
        assert_eq!(
            d.locations_tag(),
            "sha256-761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7.image-locations.imgpkg"
        );
    }

    #[test]
    fn rejects_bad_digests() {
        for s in [
            "",
            "sha256",
            "sha256:",
            "md5:abcd",
            "sha256:ABCDEF0000000000000000000000000000000000000000000000000000000000",
            "sha256:00",
            "sha256:761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7x",
        ] {
            assert!(Dgst::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn hashes() {
        let d = Dgst::sha256_of(b"");
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
    }
}
