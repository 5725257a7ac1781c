//! The one source of randomness of airdock: the operating system's generator through
//! `getrandom`. Upload ids, temp names and import ids here; token keys, token ids, the admin
//! token and the password-cache key in the server crate (`airdock::sys`).

use std::io;

/// Fill `buf` with random bytes from the operating system.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(format!("no system randomness: {e}")))
}

/// `bytes` random bytes as lowercase hex (`2 * bytes` characters).
pub fn hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A 128-bit random id as 32 lowercase hex characters: safe as a file or directory name.
pub(crate) fn id() -> String {
    // Only fails when the kernel has no random source at all (no getrandom(2), no
    // /dev/urandom); nothing can be named safely then, so stop rather than guess (the
    // `uuid` crate this replaces panicked the same way).
    hex(16).expect("the operating system gave no random bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_and_differ() {
        let (a, b) = (id(), id());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
