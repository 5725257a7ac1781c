//! oras (pinned in scripts/install-clients.sh): push an artifact, attach a
//! signature-like artifact to it (through the referrers API: airdock
//! answers `OCI-Subject`, so no `sha256-…` fallback tag may appear), list
//! it with `oras discover`, and pull both by digest.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::harness::{state_dir, tool, Cmd, Http, Out};
use super::image::{sha256_digest, tags};
use crate::support::Server;

const ARTIFACT_TYPE: &str = "application/vnd.airdock.test.artifact.v1";
const FILE_TYPE: &str = "application/vnd.airdock.test.file.v1";
const SIGNATURE_TYPE: &str = "application/vnd.airdock.test.signature.v1";
const SBOM_TYPE: &str = "application/vnd.airdock.test.sbom.v1";

struct Oras {
    bin: PathBuf,
    dir: PathBuf,
    auth: PathBuf,
}

impl Oras {
    fn new(dir: &Path) -> Oras {
        let auth = dir.join("auth.json");
        fs::write(&auth, b"{\"auths\":{}}").expect("write auth.json");
        Oras {
            bin: tool("oras"),
            dir: dir.to_path_buf(),
            auth,
        }
    }

    /// `oras VERB --plain-http --registry-config AUTH ARGS…` in the work dir.
    fn run(&self, verb: &str, args: &[&str]) -> Out {
        Cmd::new(&self.bin)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .arg(verb)
            .arg("--plain-http")
            .arg("--registry-config")
            .arg(&self.auth)
            .args(args)
            .run()
    }
}

/// The referrers in `oras discover --format json` output (the key was
/// `manifests` before oras 1.3, `referrers` since).
fn referrers(discovered: &Value) -> Vec<Value> {
    discovered["referrers"]
        .as_array()
        .or_else(|| discovered["manifests"].as_array())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn oras_push_attach_discover_pull() {
    let server = Server::start();
    let http = Http::new();
    let work = state_dir("airdock-oras-");
    let w = work.path();
    let oras = Oras::new(w);
    let host = server.host();
    let repo = "clients/oras";

    // push an artifact of two files.
    let readme = b"# an artifact pushed by the airdock client tests\n".to_vec();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(w.join("readme.md"), &readme).expect("write readme.md");
    fs::write(w.join("data.bin"), &data).expect("write data.bin");
    let pushed = oras
        .run(
            "push",
            &[
                "--artifact-type",
                ARTIFACT_TYPE,
                "--export-manifest",
                "artifact-manifest.json",
                "--format",
                "json",
                &format!("{host}/{repo}:v1"),
                &format!("readme.md:{FILE_TYPE}"),
                &format!("data.bin:{FILE_TYPE}"),
            ],
        )
        .json();
    let artifact = pushed["digest"]
        .as_str()
        .expect("digest in oras push output")
        .to_string();
    let manifest_bytes = fs::read(w.join("artifact-manifest.json")).expect("exported manifest");
    assert_eq!(
        sha256_digest(&manifest_bytes),
        artifact,
        "exported manifest digest"
    );
    let served = http
        .get(&server.url(&format!("/v2/{repo}/manifests/v1")))
        .expect_status(200);
    assert!(
        served.body == manifest_bytes,
        "the tag serves other bytes than oras pushed"
    );
    assert_eq!(
        served.header("docker-content-digest").as_deref(),
        Some(artifact.as_str())
    );
    let manifest = served.json();
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE, "{manifest}");

    // attach a signature through the referrers API.
    let signature = br#"{"critical":{"type":"airdock test signature"},"optional":{}}"#.to_vec();
    fs::write(w.join("signature.json"), &signature).expect("write signature.json");
    let subject = format!("{host}/{repo}@{artifact}");
    let attached = oras
        .run(
            "attach",
            &[
                "--artifact-type",
                SIGNATURE_TYPE,
                "--distribution-spec",
                "v1.1-referrers-api",
                "--annotation",
                "org.airdock.test=signature",
                "--format",
                "json",
                &subject,
                &format!("signature.json:{SIGNATURE_TYPE}+json"),
            ],
        )
        .json();
    let sig = attached["digest"]
        .as_str()
        .expect("digest in oras attach output")
        .to_string();
    let sig_manifest = http
        .get(&server.url(&format!("/v2/{repo}/manifests/{sig}")))
        .expect_status(200)
        .json();
    assert_eq!(
        sig_manifest["subject"]["digest"],
        artifact.as_str(),
        "{sig_manifest}"
    );

    // attach a second one, letting oras detect the referrers API itself.
    fs::write(w.join("sbom.json"), br#"{"packages":[]}"#).expect("write sbom.json");
    let attached = oras
        .run(
            "attach",
            &[
                "--artifact-type",
                SBOM_TYPE,
                "--format",
                "json",
                &subject,
                &format!("sbom.json:{SBOM_TYPE}+json"),
            ],
        )
        .json();
    let sbom = attached["digest"]
        .as_str()
        .expect("digest in oras attach output")
        .to_string();

    // No referrers tag fallback: only v1 is tagged.
    assert_eq!(
        tags(&http, &server, repo),
        vec!["v1".to_string()],
        "referrers must not be tagged"
    );

    // discover, through the referrers API.
    let discovered = oras
        .run(
            "discover",
            &[
                "--distribution-spec",
                "v1.1-referrers-api",
                "--format",
                "json",
                &subject,
            ],
        )
        .json();
    let found = referrers(&discovered);
    for (digest, kind) in [(&sig, SIGNATURE_TYPE), (&sbom, SBOM_TYPE)] {
        assert!(
            found
                .iter()
                .any(|r| r["digest"] == digest.as_str() && r["artifactType"] == kind),
            "oras discover must list {digest} ({kind}): {discovered}"
        );
    }
    assert_eq!(found.len(), 2, "exactly the two referrers: {discovered}");

    // discover, filtered by artifact type.
    let filtered = oras
        .run(
            "discover",
            &[
                "--artifact-type",
                SIGNATURE_TYPE,
                "--format",
                "json",
                &subject,
            ],
        )
        .json();
    let found = referrers(&filtered);
    assert_eq!(
        found.len(),
        1,
        "the filter must leave the signature only: {filtered}"
    );
    assert_eq!(found[0]["digest"], sig.as_str());

    // The same over plain HTTP.
    let index = http
        .get(&server.url(&format!("/v2/{repo}/referrers/{artifact}")))
        .expect_status(200)
        .json();
    let listed = index["manifests"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().any(|d| d["digest"] == sig.as_str())
            && listed.iter().any(|d| d["digest"] == sbom.as_str()),
        "GET referrers: {index}"
    );

    // pull both by digest, into fresh directories.
    let out = w.join("pulled");
    oras.run("pull", &["-o", &out.display().to_string(), &subject]);
    assert_eq!(
        fs::read(out.join("readme.md")).expect("pulled readme.md"),
        readme
    );
    assert!(
        fs::read(out.join("data.bin")).expect("pulled data.bin") == data,
        "pulled data.bin differs"
    );
    let out_sig = w.join("pulled-signature");
    oras.run(
        "pull",
        &[
            "-o",
            &out_sig.display().to_string(),
            &format!("{host}/{repo}@{sig}"),
        ],
    );
    assert_eq!(
        fs::read(out_sig.join("signature.json")).expect("pulled signature.json"),
        signature
    );
}
