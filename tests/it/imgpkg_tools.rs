//! The air-gap loop with the real Carvel tool imgpkg 0.43.1:
//! imgpkg pushes images and a nested bundle into one airdock, `imgpkg copy --to-tar` takes
//! them out, the tar is imported into a second airdock through the admin endpoint, the
//! source is stopped, and `imgpkg pull --recursive` from the second one finds every image
//! relocated. Then the next hop (`copy --to-tar` from the second airdock, import into a
//! third), and a differential check: our import equals imgpkg's own `copy --tar --to-repo`
//! into airdock, tag for tag and byte for byte.
//!
//! Tools are looked up on PATH and in `target/tools/bin` (or `$AIRDOCK_TOOLS_BIN`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::fixture::fixtures;
use crate::imgpkg::{import_ok, lock_images, server, tag_map};
use crate::support::{self, Server};

/// A tool from PATH or the project's tool directory.
fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(d) = std::env::var_os("AIRDOCK_TOOLS_BIN") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// imgpkg with a private HOME in a scratch directory it keeps alive, so no docker
/// credentials or imgpkg config from the machine leak in. Every registry here is plain HTTP.
pub(crate) struct Imgpkg {
    bin: PathBuf,
    home: PathBuf,
    work: TempDir,
}

impl Imgpkg {
    pub(crate) fn new(prefix: &str) -> Imgpkg {
        let bin = find_tool("imgpkg").unwrap_or_else(|| {
            panic!(
                "`imgpkg` (0.43.1) is not installed: run scripts/install-clients.sh, or put it on PATH"
            )
        });
        let work = support::scratch_dir(prefix);
        let home = work.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        Imgpkg { bin, home, work }
    }

    /// The scratch directory for the test's own files.
    pub(crate) fn dir(&self) -> &Path {
        self.work.path()
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--registry-insecure")
            .env("HOME", &self.home)
            .env("DOCKER_CONFIG", self.home.join(".docker"))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "imgpkg {} failed:\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn copy_to_tar(&self, bundle: &str, tar: &Path) {
        self.run(&["copy", "-b", bundle, "--to-tar", tar.to_str().expect("p")]);
    }

    /// `imgpkg pull --recursive` of `bundle` into `out`; returns its stdout.
    pub(crate) fn pull(&self, bundle: &str, out: &Path) -> String {
        let o = self.run(&[
            "pull",
            "-b",
            bundle,
            "-o",
            out.to_str().expect("p"),
            "--recursive",
            "--tty",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// Every `image:` of a lock file imgpkg wrote (ImagesLock or BundleLock).
pub(crate) fn lock_file_images(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lock_images(&text)
}

fn digest_of(reference: &str) -> &str {
    reference
        .split_once('@')
        .map(|(_, d)| d)
        .expect("digest reference")
}

async fn import_file(s: &Server, repo: &str, tar: &Path) -> Value {
    import_ok(s, repo, std::fs::read(tar).expect("tar")).await
}

#[tokio::test]
async fn air_gap_loop_with_real_imgpkg() {
    let imgpkg = Imgpkg::new("airdock-imgpkg-loop-");
    let w = imgpkg.dir();

    // --- connected side: a source airdock with images and a nested bundle ---
    let mut source = server();
    let src = source.host();
    let mut image_refs = Vec::new();
    for (name, text) in [("app1", "one"), ("app2", "two"), ("app3", "three")] {
        let dir = w.join(format!("images/{name}"));
        write(&dir.join("index.html"), &format!("<h1>{text}</h1>\n"));
        let target = format!("{src}/src/{name}:v1");
        imgpkg.run(&["push", "-i", &target, "-f", dir.to_str().expect("p")]);
        let digest = tag_map(&source, &format!("src/{name}")).await["v1"].clone();
        image_refs.push((target, format!("{src}/src/{name}@{digest}")));
    }
    let lock_entry = |(tag_ref, digest_ref): &(String, String)| {
        format!("- annotations:\n    kbld.carvel.dev/id: {tag_ref}\n  image: {digest_ref}\n")
    };
    let deployment = |images: &[&(String, String)]| {
        let mut s = String::from("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n");
        for (i, (tag_ref, _)) in images.iter().enumerate() {
            s.push_str(&format!("      - name: c{i}\n        image: {tag_ref}\n"));
        }
        s
    };
    // Inner bundle: app1 + app2.
    let inner = w.join("bundles/inner");
    write(
        &inner.join("config/deploy.yml"),
        &deployment(&[&image_refs[0], &image_refs[1]]),
    );
    write(
        &inner.join(".imgpkg/images.yml"),
        &format!(
            "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n{}{}kind: ImagesLock\n",
            lock_entry(&image_refs[0]),
            lock_entry(&image_refs[1])
        ),
    );
    let inner_lock = w.join("inner.lock.yml");
    let inner_tag = format!("{src}/src/inner:1.0");
    imgpkg.run(&[
        "push",
        "-b",
        &inner_tag,
        "-f",
        inner.to_str().expect("p"),
        "--lock-output",
        inner_lock.to_str().expect("p"),
    ]);
    let inner_ref = (inner_tag, lock_file_images(&inner_lock).remove(0));
    // Outer bundle: the inner bundle + app3.
    let outer = w.join("bundles/outer");
    write(
        &outer.join("config/deploy.yml"),
        &deployment(&[&image_refs[2]]),
    );
    write(
        &outer.join(".imgpkg/images.yml"),
        &format!(
            "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n{}{}kind: ImagesLock\n",
            lock_entry(&inner_ref),
            lock_entry(&image_refs[2])
        ),
    );
    let outer_tag = format!("{src}/src/outer:2.0");
    imgpkg.run(&["push", "-b", &outer_tag, "-f", outer.to_str().expect("p")]);

    let tar = w.join("outer.tar");
    imgpkg.copy_to_tar(&outer_tag, &tar);

    // --- the air gap: the source goes away ---
    source.kill();

    let target = server();
    let dst = target.host();
    let repo = "lab/outer";
    let report = import_file(&target, repo, &tar).await;
    assert_eq!(report["root_bundle"]["tag"], "2.0");

    let out = w.join("pull");
    let stdout = imgpkg.pull(&format!("{dst}/{repo}:2.0"), &out);
    assert!(
        stdout.contains(&format!(
            "The bundle repo ({dst}/{repo}) is hosting every image"
        )),
        "{stdout}"
    );
    let outer_images = lock_file_images(&out.join(".imgpkg/images.yml"));
    assert_eq!(outer_images.len(), 2);
    for img in &outer_images {
        assert!(img.starts_with(&format!("{dst}/{repo}@sha256:")), "{img}");
    }
    // The report's images.yml is what imgpkg wrote.
    assert_eq!(
        report["images_yml"].as_str(),
        Some(
            std::fs::read_to_string(out.join(".imgpkg/images.yml"))
                .expect("yml")
                .as_str()
        )
    );
    let inner_digest = digest_of(&inner_ref.1);
    let nested = out.join(format!(
        ".imgpkg/bundles/{}/.imgpkg/images.yml",
        inner_digest.replace(':', "-")
    ));
    let nested_images = lock_file_images(&nested);
    assert_eq!(nested_images.len(), 2);
    for img in &nested_images {
        assert!(img.starts_with(&format!("{dst}/{repo}@sha256:")), "{img}");
    }

    // kbld's own run over config + images.yml belongs here, but kbld cannot be built on
    // this project's machines (the Go module proxy refuses every carvel.dev/kbld version);
    // what it would read, the rewritten images.yml, is checked above.

    // --- the next hop: copy out of airdock again and import into a third one ---
    let tar2 = w.join("hop2.tar");
    imgpkg.copy_to_tar(&format!("{dst}/{repo}:2.0"), &tar2);
    let third = server();
    import_file(&third, "site/outer", &tar2).await;
    let out2 = w.join("pull2");
    let stdout = imgpkg.pull(&format!("{}/site/outer:2.0", third.host()), &out2);
    assert!(stdout.contains("is hosting every image"));
    // Same digests all the way: nothing was rewritten.
    let digests = |v: &[String]| {
        v.iter()
            .map(|i| digest_of(i).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        digests(&lock_file_images(&out2.join(".imgpkg/images.yml"))),
        digests(&outer_images)
    );
}

/// Our import and imgpkg's own `copy --tar --to-repo` into airdock give the same registry
/// state, except the ImageLocations images' gzip bytes (see src/imgpkg/locations.rs).
#[tokio::test]
async fn import_equals_imgpkg_copy_to_repo() {
    let imgpkg = Imgpkg::new("airdock-imgpkg-diff-");
    let s = server();
    for name in ["platform-bundle", "multi-image"] {
        let tar = fixtures().join(format!("tars/{name}.tar"));
        let ours = format!("ours/{name}");
        let theirs = format!("theirs/{name}");
        import_file(&s, &ours, &tar).await;
        imgpkg.run(&[
            "copy",
            "--tar",
            tar.to_str().expect("p"),
            "--to-repo",
            &format!("{}/{theirs}", s.host()),
        ]);
        let a = tag_map(&s, &ours).await;
        let b = tag_map(&s, &theirs).await;
        assert_eq!(a.len(), b.len(), "ours {a:#?}\ntheirs {b:#?}");
        let loc_digests: Vec<&String> = b
            .iter()
            .filter(|(t, _)| t.ends_with(".image-locations.imgpkg"))
            .map(|(_, d)| d)
            .collect();
        for (t, d) in &b {
            if t.ends_with(".image-locations.imgpkg") {
                assert!(a.contains_key(t), "{t}");
            } else if loc_digests.contains(&d) {
                continue;
            } else {
                assert_eq!(a.get(t), Some(d), "{name}: tag {t}");
            }
        }
        // And imgpkg pulls the bundle from ours just as from theirs.
        if name == "platform-bundle" {
            for repo in [&ours, &theirs] {
                let out = imgpkg.dir().join(repo.replace('/', "-"));
                let stdout = imgpkg.pull(&format!("{}/{repo}:1.0", s.host()), &out);
                assert!(stdout.contains("is hosting every image"));
            }
        }
    }
}
