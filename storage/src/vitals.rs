//! What a readiness probe asks of the store: can it write a file, can its journal take
//! commits, how much disk is free. Cheap enough to run every second: one tiny file created
//! and removed in `tmp/`, one `stat` of the journal, one `statvfs`.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout;

/// The store's health at one moment. Each `*_error` says, for a person, what is wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vitals {
    /// Why a file could not be written and removed in `tmp/`, if it could not.
    pub write_error: Option<String>,
    /// Why the metadata journal cannot take commits, if it cannot.
    pub journal_error: Option<String>,
    /// Bytes available to unprivileged writers on the data dir's filesystem.
    pub free_bytes: Option<u64>,
}

/// Probe files are numbered so that two probes at once never share one.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Blocking: write, sync and remove a probe file; stat the journal; statvfs the data dir.
/// `shared`: the metadata is in PostgreSQL, there is no journal file to look at (the caller
/// asks the database).
pub(crate) fn check(root: &Path, journal_poisoned: bool, shared: bool) -> Vitals {
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = layout::ready_probe_path(root, n);
    let write_error = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&probe)?;
        f.write_all(b"ok")?;
        // A filesystem remounted read-only or out of quota fails here at the latest.
        f.sync_data()?;
        fs::remove_file(&probe)
    })()
    .err()
    .map(|e| {
        let _ = fs::remove_file(&probe);
        format!("cannot write in {}: {e}", root.join(layout::TMP).display())
    });
    let journal = layout::journal_path(root);
    let journal_error = if shared {
        None
    } else if journal_poisoned {
        Some("the journal could not be repaired after a failed write; restart the server".into())
    } else {
        match fs::metadata(&journal) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some(format!("{} is not a file", journal.display())),
            Err(e) => Some(format!("{}: {e}", journal.display())),
        }
    };
    let free_bytes = rustix::fs::statvfs(root)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    Vitals {
        write_error,
        journal_error,
        free_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_store_reports_no_error_and_some_free_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join(layout::TMP)).expect("tmp");
        fs::create_dir_all(dir.path().join(layout::META)).expect("meta");
        fs::write(layout::journal_path(dir.path()), b"").expect("journal");
        let v = check(dir.path(), false, false);
        assert_eq!((v.write_error, v.journal_error), (None, None));
        assert!(v.free_bytes.is_some_and(|b| b > 0));
        let left = fs::read_dir(dir.path().join(layout::TMP))
            .expect("ls")
            .count();
        assert_eq!(left, 0, "the probe file is removed");
    }

    #[test]
    fn a_missing_tmp_dir_and_a_poisoned_journal_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = check(dir.path(), true, false);
        assert!(v.write_error.is_some_and(|e| e.contains("cannot write")));
        assert!(v.journal_error.is_some_and(|e| e.contains("restart")));
    }
}
