//! The names imgpkg derives from a digest (upload tags, tar member names) and a guard for
//! echoing untrusted text in error messages. Digests themselves are `airdock_storage`'s
//! [`Digest`]: one validated type from the tar parser down to the file system.

use airdock_storage::Digest;

/// imgpkg's own tags: `sha256-<hex>.imgpkg`, `sha256-<hex>.image-locations.imgpkg`. They
/// keep a bundle's images and its locations image tagged, so retention never counts them and
/// the console folds them away.
pub fn is_imgpkg_tag(tag: &str) -> bool {
    tag.starts_with("sha256-") && tag.ends_with(".imgpkg")
}

/// imgpkg's default upload tag for an item: `sha256-<hex>.imgpkg`.
pub fn imgpkg_tag(d: &Digest) -> String {
    format!("{}-{}.imgpkg", d.algorithm().as_str(), d.hex())
}

/// The tag of a bundle's ImageLocations image: `sha256-<bundle hex>.image-locations.imgpkg`.
pub fn locations_tag(bundle: &Digest) -> String {
    format!(
        "{}-{}.image-locations.imgpkg",
        bundle.algorithm().as_str(),
        bundle.hex()
    )
}

/// The tar member name imgpkg uses for a blob: `sha256-<hex>.tar.gz`.
pub fn tar_member_name(d: &Digest) -> String {
    format!("{}-{}.tar.gz", d.algorithm().as_str(), d.hex())
}

/// The digest a tar member name `<alg>-<hex>.tar.gz` stands for, if it is one.
pub fn parse_tar_member_name(name: &str) -> Option<Digest> {
    let (alg, hex) = name.strip_suffix(".tar.gz")?.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
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

    const HEX: &str = "761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7";

    #[test]
    fn names_of_a_digest() {
        let d = Digest::parse(&format!("sha256:{HEX}")).expect("valid");
        assert_eq!(imgpkg_tag(&d), format!("sha256-{HEX}.imgpkg"));
        assert_eq!(
            locations_tag(&d),
            format!("sha256-{HEX}.image-locations.imgpkg")
        );
        assert_eq!(tar_member_name(&d), format!("sha256-{HEX}.tar.gz"));
        assert_eq!(parse_tar_member_name(&tar_member_name(&d)), Some(d));
    }

    #[test]
    fn rejects_odd_member_names() {
        for name in [
            "",
            "sha256-.tar.gz",
            "sha256-abc.tar.gz",
            "md5-d41d8cd98f00b204e9800998ecf8427e.tar.gz",
            &format!("sha256-{}.tar.gz", HEX.to_uppercase()),
            &format!("sha256:{HEX}.tar.gz"),
            &format!("sha256-{HEX}.tar"),
            &format!("sha256-{HEX}x.tar.gz"),
        ] {
            assert_eq!(parse_tar_member_name(name), None, "{name}");
        }
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
        assert_eq!(truncate("aé", 2), "a…");
    }
}
