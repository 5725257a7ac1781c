//! The administrator's commands against real files and servers: `config check` reporting
//! every error, and `airdock user add|del|passwd|list` over the htpasswd file a running
//! server uses.

use crate::security::airdock;
use crate::support::scratch_dir;

#[test]
fn config_check_reports_every_error_with_its_key_and_line() {
    let dir = scratch_dir("airdock-cfg-all-");
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        "addr: registry.lab:5000\n\
         limits:\n  max_header_bytes: 64k\n\
         gc:\n  grace: 1h\n  intervall: 6h\n",
    )
    .expect("write");
    let (ok, out, err) = airdock(&["config", "check", cfg.to_str().expect("utf-8")], "");
    assert!(!ok, "{out}");
    for (key, line) in [
        ("addr", 1),
        ("limits.max_header_bytes", 3),
        ("gc.intervall", 6),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: {key}: "))),
            "{key} (line {line}) not reported:\n{err}"
        );
    }
    assert!(err.contains("3 error(s)"), "{err}");
}
