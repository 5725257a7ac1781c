//! After an imgpkg import, the container runtimes pull every relocated reference: each
//! image of the rewritten `images.yml` (`<airdock>/<repo>@sha256:…`), the bundles, and the
//! multi-platform index by its original tag. Uses the private dockerd / containerd that
//! `tests/it/clients` starts.

use crate::clients::containerd::Containerd;
use crate::clients::docker::Docker;
use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, lock_images, server};
use crate::support::Server;

/// Every `image:` of the report's relocated images.yml, plus each imported image and
/// bundle by digest and the index by tag.
async fn relocated_refs(s: &Server) -> Vec<String> {
    let host = s.host();
    let bundle = import_ok(s, "lab/platform", fixture_tar("platform-bundle")).await;
    let multi = import_ok(s, "lab/multi", fixture_tar("multi-image")).await;
    let mut refs = lock_images(bundle["images_yml"].as_str().expect("images.yml"));
    for img in bundle["images"].as_array().into_iter().flatten() {
        if matches!(img["kind"].as_str(), Some("image" | "bundle")) {
            refs.push(format!(
                "{host}/lab/platform@{}",
                img["digest"].as_str().expect("digest")
            ));
        }
    }
    let index = multi["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["kind"] == "index")
        .expect("the index");
    assert!(index["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "v1")));
    refs.push(format!("{host}/lab/multi:v1"));
    refs.sort();
    refs.dedup();
    assert!(refs.len() >= 6, "{refs:?}");
    refs
}

#[tokio::test]
async fn ctr_pulls_every_relocated_reference() {
    let c = Containerd::start();
    let s = server();
    for r in relocated_refs(&s).await {
        c.ctr(
            "imgpkg",
            &[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                &r,
            ],
        );
    }
}

#[tokio::test]
async fn docker_pulls_every_relocated_reference() {
    let docker = Docker::start();
    let s = server();
    for r in relocated_refs(&s).await {
        docker.run(&["pull", &r]);
    }
}
