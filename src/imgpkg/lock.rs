//! A bundle's `.imgpkg/images.yml` (kind `ImagesLock`): strict parsing as imgpkg does it,
//! and the relocated rewrite `imgpkg pull` produces once the images live in one repository.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::names::truncate;
use super::refs::DigestRef;
use super::yaml::{self, Node};

pub const API_VERSION: &str = "imgpkg.carvel.dev/v1alpha1";
pub const IMAGES_LOCK_KIND: &str = "ImagesLock";

/// Largest `images.yml` we read out of a bundle layer.
pub const MAX_IMAGES_LOCK: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    images: Option<Vec<RawRef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRef {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// One `images.yml` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockImage {
    /// The reference, normalised as imgpkg normalises it on read.
    pub image: DigestRef,
    pub annotations: BTreeMap<String, String>,
}

/// A parsed, validated ImagesLock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagesLock {
    pub images: Vec<LockImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LockError(pub String);

impl ImagesLock {
    /// Parses like imgpkg's `NewImagesLockFromBytes`: strict (unknown fields are errors),
    /// apiVersion and kind checked, every image a digest reference.
    pub fn parse(bytes: &[u8]) -> Result<ImagesLock, LockError> {
        let raw: RawLock = serde_yaml::from_slice(bytes)
            .map_err(|e| LockError(format!("unmarshaling images lock: {e}")))?;
        if raw.api_version.as_deref() != Some(API_VERSION) {
            return Err(LockError(format!(
                "validating apiVersion: unknown version (known: {API_VERSION})"
            )));
        }
        if raw.kind.as_deref() != Some(IMAGES_LOCK_KIND) {
            return Err(LockError(format!(
                "validating kind: unknown kind (known: {IMAGES_LOCK_KIND})"
            )));
        }
        let mut images = Vec::new();
        for r in raw.images.unwrap_or_default() {
            let text = r.image.unwrap_or_default();
            let image = DigestRef::parse(&text).map_err(|_| {
                LockError(format!(
                    "expected ref to be in digest form, got {:?}",
                    truncate(&text, 300)
                ))
            })?;
            images.push(LockImage {
                image,
                annotations: r.annotations.unwrap_or_default(),
            });
        }
        Ok(ImagesLock { images })
    }

    /// The file `imgpkg pull` writes when the bundle's repository hosts every image:
    /// each image becomes `<repo_ref>@<same digest>`, order and annotations kept, in
    /// imgpkg's YAML form. `repo_ref` is `host[:port]/repository`.
    pub fn relocated_yaml(&self, repo_ref: &str) -> String {
        let images: Vec<Node> = self
            .images
            .iter()
            .map(|img| {
                let mut entry = Vec::new();
                if !img.annotations.is_empty() {
                    entry.push((
                        "annotations".to_owned(),
                        Node::Map(
                            img.annotations
                                .iter()
                                .map(|(k, v)| (k.clone(), Node::Str(v.clone())))
                                .collect(),
                        ),
                    ));
                }
                entry.push((
                    "image".to_owned(),
                    Node::Str(format!("{repo_ref}@{}", img.image.digest)),
                ));
                Node::Map(entry)
            })
            .collect();
        let mut doc = vec![("apiVersion".to_owned(), Node::Str(API_VERSION.to_owned()))];
        // `images` is `omitempty` in imgpkg's struct.
        if !images.is_empty() {
            doc.push(("images".to_owned(), Node::Seq(images)));
        }
        doc.push(("kind".to_owned(), Node::Str(IMAGES_LOCK_KIND.to_owned())));
        format!("---\n{}", yaml::to_string(&Node::Map(doc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `images.yml` entry as kbld writes it for `127.0.0.1:5000/src/<name>:<tag>`;
    /// `yaml_tag` is the tag as YAML spells it in the origins block (`"1.0"` is quoted).
    fn kbld_entry(name: &str, tag: &str, yaml_tag: &str, hex: &str) -> String {
        let src = "127.0.0.1:5000/src";
        format!(
            "- annotations:\n    kbld.carvel.dev/id: {src}/{name}:{tag}\n    kbld.carvel.dev/origins: |\n      - resolved:\n          tag: {yaml_tag}\n          url: {src}/{name}:{tag}\n  image: {src}/{name}@sha256:{hex}\n"
        )
    }

    fn lock(entries: &[String]) -> String {
        format!(
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n{}kind: ImagesLock\n",
            entries.concat()
        )
    }

    #[test]
    fn rewrite_matches_imgpkg_pull_output() {
        let src = format!(
            "---\n{}",
            lock(&[
                kbld_entry(
                    "app1",
                    "v1",
                    "v1",
                    "8872a0d0ff55685f8d255ebcebf9c677a820d735a81955406795badb172fc79f"
                ),
                kbld_entry(
                    "app2",
                    "v1",
                    "v1",
                    "7b0d257cb27fbe7158a14f8445924c197116831360a72989ca960350610227ff"
                ),
                kbld_entry(
                    "twolayer",
                    "v1",
                    "v1",
                    "cb056d6afc8d2f88125cab68e9c67479448a3d812ea6f84f83405ee09bd99980"
                ),
            ])
        );
        let lock = ImagesLock::parse(src.as_bytes()).expect("valid");
        let want = include_str!(
            "../../tests/fixtures/imgpkg/expected/guestbook-bundle/pull/.imgpkg/images.yml"
        );
        assert_eq!(
            lock.relocated_yaml("127.0.0.1:5001/library/guestbook-bundle"),
            want
        );
    }

    #[test]
    fn quoted_tag_in_annotation_block() {
        let src = lock(&[
            kbld_entry(
                "app3",
                "v1",
                "v1",
                "c6e33ad0a6322df245f02fd6df24f541209d20f8147ff8f4599ad5014047ac46",
            ),
            kbld_entry(
                "guestbook-bundle",
                "1.0",
                "\"1.0\"",
                "761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7",
            ),
        ]);
        let lock = ImagesLock::parse(src.as_bytes()).expect("valid");
        let want = include_str!(
            "../../tests/fixtures/imgpkg/expected/platform-bundle/pull/.imgpkg/images.yml"
        );
        assert_eq!(
            lock.relocated_yaml("127.0.0.1:5001/library/platform-bundle"),
            want
        );
    }

    #[test]
    fn strictness() {
        let ok = "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\n";
        let lock = ImagesLock::parse(ok.as_bytes()).expect("empty lock is fine");
        assert_eq!(
            lock.relocated_yaml("h/r"),
            "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\n"
        );
        for bad in [
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nextra: 1\n",
            "apiVersion: v1\nkind: ImagesLock\n",
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: BundleLock\n",
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n- image: nginx:1.0\n",
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n- img: x\n",
            "[",
        ] {
            assert!(ImagesLock::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
