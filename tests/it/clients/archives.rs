//! Archives written by the real tools, imported through `POST /admin/v1/import` and pulled
//! back by docker and by containerd (`ctr`): `docker save` (two images, the classic layout of
//! the installed dockerd), `skopeo copy … docker-archive:` (the classic layout: `<hex>.tar` layers,
//! `<id>/layer.tar` symlinks, `repositories`) and `… oci-archive:`, and `podman save` in both
//! its formats. Each archive is also made hostile (a flipped byte in a layer, a layer left
//! out) and must be refused with the entry named and the repository unchanged. Each is
//! dry-run first (`?dry_run=true`): the report predicts the import (same blobs, images and
//! tags), a hostile variant gets the same refusal or, for a missing layer, a report listing
//! it, and the repository is unchanged.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use super::containerd::Containerd;
use super::docker::Docker;
use super::harness::{state_dir, tool, Cmd, Http};
use super::image::{host_arch, Flavor, Image};
use super::podman::Podman;
use crate::support::Server;

const TOKEN: &str = "archives-admin-token";

/// `POST /admin/v1/import?repository=`: status and JSON body.
fn import(http: &Http, server: &Server, repo: &str, body: Vec<u8>) -> (u16, Value) {
    post_import(http, server, &format!("repository={repo}"), body)
}

/// The same with `&dry_run=true`.
fn dry_run(http: &Http, server: &Server, repo: &str, body: Vec<u8>) -> (u16, Value) {
    post_import(
        http,
        server,
        &format!("repository={repo}&dry_run=true"),
        body,
    )
}

fn post_import(http: &Http, server: &Server, query: &str, body: Vec<u8>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let resp = http.request(
        "POST",
        &server.url(&format!("/admin/v1/import?{query}")),
        &[("Authorization", auth.as_str())],
        Some(body),
    );
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json)
}

/// Tag → digest of `repo`, through the registry API.
fn tag_state(http: &Http, server: &Server, repo: &str) -> Vec<(String, String)> {
    super::image::tags(http, server, repo)
        .into_iter()
        .map(|t| {
            let d = super::image::resolve(http, server, repo, &t).unwrap_or_default();
            (t, d)
        })
        .collect()
}

/// A tar's entries as (name, typeflag, data), by a minimal ustar/PAX-unaware walk: enough
/// for the archives these tools write (short names).
fn entries(tar: &[u8]) -> Vec<(String, u8, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &tar[at..at + 512];
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let mut name = field(0..100);
        let prefix = field(345..500);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = u64::from_str_radix(field(124..136).trim(), 8).expect("size") as usize;
        let data = tar[at + 512..at + 512 + size].to_vec();
        out.push((name, h[156], data, h.to_vec()));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Rebuilds a tar from `entries` (headers reused, checksum recomputed for changed sizes).
fn rebuild(entries: &[(String, u8, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, _, data, header) in entries {
        let mut h = header.clone();
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The largest regular file of the archive: a layer.
fn largest(entries: &[(String, u8, Vec<u8>, Vec<u8>)]) -> usize {
    (0..entries.len())
        .filter(|&i| entries[i].1 == b'0' || entries[i].1 == 0)
        .max_by_key(|&i| entries[i].2.len())
        .expect("a regular file")
}

/// Hostile variants of a real archive: each refused with 400, naming the entry, state kept.
fn assert_hostile_refused(http: &Http, server: &Server, repo: &str, archive: &[u8]) {
    let before = tag_state(http, server, repo);
    let es = entries(archive);
    let layer = largest(&es);
    let name = es[layer].0.clone();

    let mut flipped = es.clone();
    let mid = flipped[layer].2.len() / 2;
    flipped[layer].2[mid] ^= 0x55;
    let dry = dry_run(http, server, repo, rebuild(&flipped));
    let (status, body) = import(http, server, repo, rebuild(&flipped));
    assert_eq!(
        dry,
        (status, body.clone()),
        "dry run of a flipped byte in {name}"
    );
    assert_eq!(status, 400, "flipped byte in {name}: {body}");
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID", "{body}");
    let detail = body["errors"][0]["detail"].to_string();
    assert!(
        detail.contains(name.trim_start_matches("./")),
        "the refusal must name {name}: {body}"
    );

    // Into a fresh repository: one that already holds the layer does not need it in the archive.
    let mut missing = es.clone();
    missing.remove(layer);
    let fresh = format!("{repo}-fresh");
    let (status, dry) = dry_run(http, server, &fresh, rebuild(&missing));
    assert_eq!(status, 200, "dry run, {name} left out: {dry}");
    assert_eq!(dry["dry_run"]["would_import"], false, "{dry}");
    let listed = dry["dry_run"]["missing"].to_string();
    assert!(
        listed.contains(name.trim_start_matches("./")),
        "the dry run must list {name}: {dry}"
    );
    let (status, body) = import(http, server, &fresh, rebuild(&missing));
    assert_eq!(status, 400, "{name} left out: {body}");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
    let listed = http.get(&server.url(&format!("/v2/{fresh}/tags/list")));
    assert_eq!(
        listed.status, 404,
        "{fresh} must not exist after a refused import"
    );

    let mut traversal = es.clone();
    traversal[0].3[..100].fill(0);
    traversal[0].3[..9].copy_from_slice(b"../escape");
    let (status, body) = import(http, server, repo, rebuild(&traversal));
    assert_eq!(
        (status, &body["errors"][0]["code"]),
        (400, &Value::from("TAR_INVALID")),
        "{body}"
    );

    assert_eq!(
        tag_state(http, server, repo),
        before,
        "a refused import changed {repo}"
    );
}

#[test]
fn archives_from_docker_skopeo_and_podman_import_and_pull_back() {
    let started = Instant::now();
    let server = Server::start_with_args(&["--admin-token", TOKEN]);
    let http = Http::new();
    let host = server.host();
    let work = state_dir("airdock-archives-");
    let w = work.path();
    let p = |n: &str| w.join(n).display().to_string();

    let a = Image::build(Flavor::Docker, host_arch(), "archives-a");
    let b = Image::build(Flavor::Docker, host_arch(), "archives-b");
    a.write_docker_archive(&w.join("a.tar"), "example.com/team/app:v1");
    b.write_docker_archive(&w.join("b.tar"), "example.com/team/tool:v2");

    // docker save, two images (Debian's dockerd 20.10 writes the classic layout; the OCI-layout
    // form of docker ≥ 25 is covered by `archive::tests` with a synthetic archive).
    let docker = Docker::start();
    docker.run(&["load", "-i", &p("a.tar")]);
    docker.run(&["load", "-i", &p("b.tar")]);
    docker.run(&[
        "save",
        "-o",
        &p("docker-save.tar"),
        "example.com/team/app:v1",
        "example.com/team/tool:v2",
    ]);

    // skopeo, from an OCI layout of image a (skopeo's layout reader takes only OCI-typed
    // manifests; the config and layer are the same bytes either way).
    let layout = w.join("layout");
    let a_oci = Image::build(Flavor::Oci, host_arch(), "archives-a");
    assert_eq!(a_oci.config.digest, a.config.digest);
    a_oci.write_oci_layout(&layout, "v1");
    let policy = w.join("policy.json");
    fs::write(
        &policy,
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("policy");
    let skopeo = |dest: &str| {
        Cmd::new(tool("skopeo"))
            .arg("--policy")
            .arg(&policy)
            .args(["copy", &format!("oci:{}:v1", layout.display()), dest])
            .run();
    };
    skopeo(&format!(
        "docker-archive:{}:example.com/sk/app:v1",
        p("skopeo-docker.tar")
    ));
    skopeo(&format!("oci-archive:{}:v1", p("skopeo-oci.tar")));

    // podman save, both formats.
    let podman = Podman::new();
    podman.run(&["load", "-i", &p("a.tar")]);
    for (format, file) in [
        ("docker-archive", "podman-docker.tar"),
        ("oci-archive", "podman-oci.tar"),
    ] {
        podman.run(&[
            "save",
            "--format",
            format,
            "-o",
            &p(file),
            "example.com/team/app:v1",
        ]);
    }
    let written = started.elapsed();

    // Import each; the tags come from the archive.
    let kinds = [
        (
            "docker-save.tar",
            "arch/docker",
            "docker-archive",
            vec!["v1", "v2"],
        ),
        (
            "skopeo-docker.tar",
            "arch/skopeo-docker",
            "docker-archive",
            vec!["v1"],
        ),
        (
            "skopeo-oci.tar",
            "arch/skopeo-oci",
            "oci-archive",
            vec!["v1"],
        ),
        (
            "podman-docker.tar",
            "arch/podman-docker",
            "docker-archive",
            vec!["v1"],
        ),
        (
            "podman-oci.tar",
            "arch/podman-oci",
            "oci-archive",
            vec!["v1"],
        ),
    ];
    for (file, repo, format, want_tags) in &kinds {
        let bytes = fs::read(w.join(file)).expect("archive");
        let (status, dry) = dry_run(&http, &server, repo, bytes.clone());
        assert_eq!(status, 200, "{file} dry run: {dry}");
        let listed = http.get(&server.url(&format!("/v2/{repo}/tags/list")));
        assert_eq!(listed.status, 404, "{file}: a dry run created {repo}");
        let predicted: Vec<&str> = dry["dry_run"]["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .inspect(|t| assert_eq!(t["change"], "create", "{file}: {dry}"))
            .filter_map(|t| t["tag"].as_str())
            .collect();
        assert_eq!(predicted, *want_tags, "{file}: {dry}");
        let (status, report) = import(&http, &server, repo, bytes.clone());
        assert_eq!(status, 201, "{file}: {report}");
        assert_eq!(report["format"], *format, "{file}: {report}");
        for key in ["format", "blobs", "images"] {
            assert_eq!(report[key], dry[key], "{file}: dry run's {key}");
        }
        let state = tag_state(&http, &server, repo);
        for t in dry["dry_run"]["tags"].as_array().expect("tags") {
            assert!(
                state.contains(&(
                    t["tag"].as_str().unwrap_or_default().to_owned(),
                    t["digest"].as_str().unwrap_or_default().to_owned()
                )),
                "{file}: {t} not set as predicted: {state:?}"
            );
        }
        let tags: Vec<String> = state.into_iter().map(|t| t.0).collect();
        assert_eq!(tags, *want_tags, "{file}: {report}");
        let (_, again) = dry_run(&http, &server, repo, bytes.clone());
        assert_eq!(again["blobs"]["new"], 0, "{file}: {again}");
        assert!(
            again["dry_run"]["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .all(|t| t["change"] == "unchanged"),
            "{file}: {again}"
        );
        assert_hostile_refused(&http, &server, repo, &bytes);
    }
    let imported = started.elapsed();

    // Pull every kind back with docker (fresh: remove what it loaded) and read a file.
    docker.run(&["rmi", "example.com/team/app:v1", "example.com/team/tool:v2"]);
    for (_, repo, _, want_tags) in &kinds {
        for t in want_tags {
            let reference = format!("{host}/{repo}:{t}");
            docker.run(&["pull", &reference]);
            let want = if *t == "v2" { &b } else { &a };
            let got = docker.read_file(
                &reference,
                "airdock/hello.txt",
                &w.join(format!("docker-{}-{t}", repo.replace('/', "-"))),
            );
            assert_eq!(
                got,
                want.file("airdock/hello.txt"),
                "docker pull {reference}"
            );
            // The image id is the config the registry serves (podman's oci-archive rewrites
            // the config, so it is not always the loaded one).
            let m = http.get(&server.url(&format!("/v2/{repo}/manifests/{t}")));
            let m: Value = serde_json::from_slice(&m.body).expect("manifest JSON");
            assert_eq!(
                Value::from(docker.image_id(&reference)),
                m["config"]["digest"],
                "{reference}"
            );
        }
    }
    drop(docker);

    // And with containerd, unpacked.
    let ctr = Containerd::start();
    for (_, repo, _, want_tags) in &kinds {
        let t = want_tags[0];
        let reference = format!("{host}/{repo}:{t}");
        ctr.ctr(
            "archives",
            &[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                &reference,
            ],
        );
        let files = ctr.read_files("archives", &reference, &["airdock/hello.txt"]);
        assert_eq!(
            files[0],
            a.file("airdock/hello.txt"),
            "ctr pull {reference}"
        );
    }
    eprintln!(
        "archives: written in {:.1}s, imported (with hostile variants) by {:.1}s, pulled back by {:.1}s",
        written.as_secs_f64(),
        imported.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
