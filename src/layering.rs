//! The dependency rule between airdock's modules, as a table a test checks: each top-level
//! module may name (`crate::…`) only the modules listed for it. ARCHITECTURE.md explains the
//! layers; this keeps them from growing cycles again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it may use. `lib` is the crate root (`AppState`, `app`, `DRAIN`);
/// `lib.rs` and `main.rs` wire everything and may use anything.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: nothing of airdock's own (the storage crate is below everything), and the
    // one error type, which knows the importer's error categories.
    ("sys", &[]),
    ("rules", &[]),
    // The process's metric handles and the route classifier: every layer bumps them.
    ("metrics", &[]),
    ("forwarded", &[]),
    ("imgpkg", &[]),
    // docker / OCI archives, and the dispatch between them and imgpkg tars.
    ("archive", &["imgpkg"]),
    ("error", &["imgpkg"]),
    ("config", &["forwarded", "imgpkg", "rules"]),
    // Which blob backend a data dir uses, and opening its store.
    ("backend", &["config"]),
    ("tls", &["sys"]),
    ("limits", &["config", "error"]),
    ("http", &["error", "forwarded", "lib"]),
    (
        "auth",
        &[
            "config",
            "error",
            "forwarded",
            "http",
            "metrics",
            "rules",
            "sys",
        ],
    ),
    (
        "admin",
        &[
            "archive",
            "auth",
            "config",
            "error",
            "forwarded",
            "http",
            "imgpkg",
            "lib",
            "metrics",
            "sys",
        ],
    ),
    // The outer request layer (request id, access and audit lines, request metrics), the
    // `/metrics` handler and the log setup.
    (
        "observe",
        &[
            "auth",
            "config",
            "error",
            "forwarded",
            "http",
            "lib",
            "metrics",
            "sys",
        ],
    ),
    // The web console: pages over the store, the rights of `auth`, the importer for uploads.
    (
        "ui",
        &[
            "admin",
            "auth",
            "error",
            "forwarded",
            "http",
            "imgpkg",
            "lib",
            "sys",
        ],
    ),
    ("server", &["config", "lib"]),
    ("health", &["config", "lib"]),
    // `airdock health`: a small HTTP client; of the server, only the listen-address parser.
    ("health_cli", &["config"]),
    // The commands, at the top: nothing uses them but `cli` and `main.rs`.
    (
        "import_cli",
        &["admin", "archive", "backend", "config", "error", "imgpkg"],
    ),
    ("user_cli", &["auth"]),
    ("export_cli", &["auth", "backend", "imgpkg", "import_cli"]),
    (
        "cli",
        &[
            "config",
            "export_cli",
            "forwarded",
            "health_cli",
            "import_cli",
            "user_cli",
        ],
    ),
];

/// Every `crate::name` a source file mentions outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn modules_use_only_what_the_layering_table_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut broken = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_owned();
        // This file's own test strings name modules on purpose.
        if top == "lib" || top == "main" || top == "layering" {
            continue;
        }
        let Some(ok) = allowed.get(top.as_str()) else {
            broken.push(format!(
                "{}: module `{top}` is not in the table",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read");
        for used in uses(&text) {
            // Anything that is not a module is an item of the crate root (`crate::AppState`,
            // `crate::DRAIN`, `crate::app`) and counts as `lib`.
            let module = if allowed.contains_key(used.as_str()) {
                used
            } else {
                "lib".to_owned()
            };
            if module != top && !ok.contains(&module.as_str()) {
                broken.push(format!("{}: `{top}` may not use `{module}`", rel.display()));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_uses_and_skips_comments() {
    let u = uses("use crate::a::b;\n// crate::c\nlet x = crate::AppState::new(); // crate::d\n");
    assert_eq!(u.into_iter().collect::<Vec<_>>(), ["AppState", "a"]);
}
