//! A running blob hash whose state can be written down and read back, so an upload session
//! continues after a restart (or, later, on another replica) without re-reading what it
//! already sent to S3: S3 cannot read back the parts of an incomplete multipart upload.

use airdock_storage::{Algorithm, Digest, StoreError};
use sha2_state::digest::common::hazmat::SerializableState;
use sha2_state::Digest as _;

#[derive(Clone)]
pub(crate) enum StateHasher {
    Sha256(sha2_state::Sha256),
    Sha512(sha2_state::Sha512),
}

impl StateHasher {
    pub(crate) fn new(alg: Algorithm) -> StateHasher {
        match alg {
            Algorithm::Sha256 => StateHasher::Sha256(sha2_state::Sha256::new()),
            Algorithm::Sha512 => StateHasher::Sha512(sha2_state::Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            StateHasher::Sha256(h) => h.update(bytes),
            StateHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let (alg, out) = match self {
            StateHasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            StateHasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        // A hash output of the right length always parses.
        Digest::parse(&format!("{alg}:{}", hex(&out))).unwrap_or_else(|_| unreachable!())
    }

    /// The state as hex, for the session's state file.
    pub(crate) fn save(&self) -> String {
        match self {
            StateHasher::Sha256(h) => hex(&h.serialize()),
            StateHasher::Sha512(h) => hex(&h.serialize()),
        }
    }

    /// The state [`save`](Self::save) wrote. A state file is ours, but it lives on a disk
    /// that may have been damaged: a bad one is an error, never a panic.
    pub(crate) fn restore(alg: Algorithm, text: &str) -> Result<StateHasher, StoreError> {
        let bad = || StoreError::Corrupt(format!("upload session hash state {text:?}"));
        let bytes = unhex(text).ok_or_else(bad)?;
        Ok(match alg {
            Algorithm::Sha256 => StateHasher::Sha256(
                sha2_state::Sha256::deserialize(&bytes.as_slice().try_into().map_err(|_| bad())?)
                    .map_err(|_| bad())?,
            ),
            Algorithm::Sha512 => StateHasher::Sha512(
                sha2_state::Sha512::deserialize(&bytes.as_slice().try_into().map_err(|_| bad())?)
                    .map_err(|_| bad())?,
            ),
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_continues_the_same_hash() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
            let mut h = StateHasher::new(alg);
            // Split off a length that is not a multiple of the block size.
            h.update(&data[..4099]);
            let mut resumed = StateHasher::restore(alg, &h.save()).expect("restore");
            resumed.update(&data[4099..]);
            assert_eq!(resumed.finish(), Digest::of(alg, &data));
        }
    }

    #[test]
    fn damaged_state_is_an_error() {
        for bad in ["", "zz", "00", &"ab".repeat(500)] {
            assert!(
                StateHasher::restore(Algorithm::Sha256, bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
