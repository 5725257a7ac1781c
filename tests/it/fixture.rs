//! Where the integration tests get tars, gzip streams and imgpkg fixtures. There is one tar
//! writer and one gzip writer in the project, the library's (`airdock::imgpkg::synth`, also
//! used by the unit tests and the benchmarks, and `airdock::imgpkg::gzip::stored_gzip`);
//! this module re-exports them and adds the directory-tree layout that container clients
//! extract.

use std::path::{Path, PathBuf};

use airdock::imgpkg::synth;
use airdock::imgpkg::tarfmt::{self, Kind};

pub use airdock::imgpkg::gzip::stored_gzip;
pub use synth::gzip;

/// The imgpkg fixtures written by `imgpkg copy --to-tar` (see tests/fixtures/imgpkg).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imgpkg")
}

/// One of the fixture tars, by name (`multi-image`, `platform-bundle`, ...).
pub fn fixture_tar(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("tars/{name}.tar"))).expect("fixture tar")
}

/// An entry of a layer tar.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
}

/// A tar of these entries: directories 0755 (named with a trailing `/`), files 0644,
/// owner 0:0, then the end-of-archive marker.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let (name, kind, mode, data): (String, Kind, u32, &[u8]) = match entry {
            Entry::Dir(name) => (
                format!("{}/", name.trim_end_matches('/')),
                Kind::Directory,
                0o755,
                &[],
            ),
            Entry::File(name, data) => ((*name).to_owned(), Kind::Regular, 0o644, data),
        };
        assert!(name.len() < 100, "tar name too long: {name}");
        let size = data.len() as u64;
        out.extend_from_slice(&synth::header_with_mode(&name, kind, size, b"", mode));
        out.extend_from_slice(data);
        out.resize(out.len() + tarfmt::padding(size) as usize, 0);
    }
    out.resize(out.len() + 2 * tarfmt::BLOCK, 0);
    out
}

/// A tar of files given by path, with a directory entry before the first file of each
/// directory (as `docker save` and layer tars have them).
pub fn tree_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut dirs: Vec<String> = Vec::new();
    let mut names: Vec<(bool, String, &[u8])> = Vec::new();
    for (path, content) in files {
        let parts: Vec<&str> = path.split('/').collect();
        let mut prefix = String::new();
        for dir in &parts[..parts.len() - 1] {
            prefix.push_str(dir);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                names.push((true, prefix.clone(), &[]));
            }
        }
        names.push((false, path.clone(), content));
    }
    let entries: Vec<Entry> = names
        .iter()
        .map(|(dir, name, data)| match dir {
            true => Entry::Dir(name),
            false => Entry::File(name, data),
        })
        .collect();
    tar(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::harness::{tool, Cmd};
    use crate::clients::image::gunzip;
    use crate::support::xorshift_bytes;

    #[test]
    fn tars_and_gzip_are_read_by_the_system_tools() {
        let files = vec![
            ("a/b.txt".to_string(), b"hello\n".to_vec()),
            ("a/big".to_string(), xorshift_bytes(200_000, 7)),
        ];
        let t = tree_tar(&files);
        assert_eq!(gunzip(&stored_gzip(&t)), t);
        assert_eq!(gunzip(&gzip(&t)), t);
        let listing = Cmd::new(tool("tar"))
            .args(["-tvf", "-"])
            .stdin(t)
            .run()
            .stdout_text();
        for want in ["drwxr-xr-x", "a/", "-rw-r--r--", "a/b.txt", "a/big"] {
            assert!(listing.contains(want), "{want}: {listing}");
        }
        // An empty file, and a directory named without its slash.
        let t = tar(&[Entry::Dir("etc"), Entry::File("etc/empty", b"")]);
        assert_eq!(t.len() % 512, 0);
        let listing = Cmd::new(tool("tar"))
            .args(["-tzvf", "-"])
            .stdin(gzip(&t))
            .run()
            .stdout_text();
        assert!(listing.lines().any(|l| l.ends_with(" etc/")), "{listing}");
        assert!(listing.contains("etc/empty"), "{listing}");
    }
}
