//! [`FileClock`]: GC's clock for backends that keep no writable time per blob (S3, memory),
//! persisted beside the journal (`meta/clock`), so a restart does not reset every blob's
//! grace window.
//!
//! The file is a log of lines:
//!
//! ```text
//! since <unix-secs>        from here on, every blob counts as used at this time at least
//! <digest> <unix-secs>     a touch
//! <digest> -               a forget (the blob was deleted)
//! clean <unix-secs>        the clock was closed with every touch before it written and synced
//! ```
//!
//! Touches are not synced one by one (a `HEAD` must not cost an fsync): they are appended by
//! a background thread once a second, and synced only at a clean close, after which the
//! `clean` line is written and synced. So the file is exact only if it ends in `clean`. At
//! open, a file that does not (the process was killed, or the host lost power) may have lost
//! touches, of unknown blobs: the clock then appends `since <now>`, the contract's rule for
//! lost touches (every blob counts as used at the open, as an in-memory clock would have
//! it). A torn last line is ignored. After a clean close nothing is lost: GC's grace window
//! runs on across the restart from each blob's real last use.
//!
//! The wall clock is trusted as the file's times are: a clock set back makes blobs look
//! younger (kept longer), never older than their last touch.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::BlobClock;
use crate::{Digest, StoreError};

/// How often pending touches are appended to the file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Rewrite the file at open when it holds this many more lines than live records (and is
/// past [`COMPACT_MIN_BYTES`]): every `HEAD` appends one.
const COMPACT_RATIO: usize = 4;
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// GC's clock in a file beside the journal. See the module docs for the format and rules.
pub struct FileClock {
    shared: Arc<Shared>,
}

struct Shared {
    /// std Mutex: map updates only, never held across I/O.
    state: Mutex<State>,
    /// `None` when read-only (nothing is ever written) or closed. std Mutex: held across
    /// one append (and, at close, one fdatasync) on the flusher thread or at close.
    file: Mutex<Option<File>>,
}

#[derive(Default)]
struct State {
    times: HashMap<Digest, SystemTime>,
    /// What no record answers below: see the `since` line.
    floor: Option<SystemTime>,
    /// Lines not yet appended.
    pending: String,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (single inserts, whole appends).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a file says: the records, the floor, whether it ends clean, how many lines.
struct Loaded {
    times: HashMap<Digest, SystemTime>,
    floor: Option<SystemTime>,
    clean: bool,
    lines: usize,
    bytes: u64,
}

fn load(path: &Path) -> Result<Option<Loaded>, StoreError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = text.len() as u64;
    // A torn last line (the process died mid-append) was never relied upon: ignored.
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&text[..complete]);
    let mut out = Loaded {
        times: HashMap::new(),
        floor: None,
        clean: false,
        lines: 0,
        bytes,
    };
    for (n, line) in text.lines().enumerate() {
        let bad = || StoreError::Corrupt(format!("{} line {}: {line:?}", path.display(), n + 1));
        let (key, value) = line.split_once(' ').ok_or_else(bad)?;
        out.lines += 1;
        out.clean = key == "clean";
        match key {
            "clean" => {}
            "since" => out.floor = Some(time(value.parse().map_err(|_| bad())?)),
            _ => {
                let d = Digest::parse(key).map_err(|_| bad())?;
                if value == "-" {
                    out.times.remove(&d);
                } else {
                    let t = time(value.parse().map_err(|_| bad())?);
                    let e = out.times.entry(d).or_insert(t);
                    *e = (*e).max(t);
                }
            }
        }
    }
    Ok(Some(out))
}

/// Replace `path` by `text`, durably (temp, fsync, rename, fsync of the directory).
fn replace(path: &Path, text: &str) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        crate::blobs::fsync_dir(dir)?;
    }
    OpenOptions::new().append(true).open(path)
}

impl FileClock {
    /// Open the clock kept at `path`. A missing file is created (`writable`) and starts with
    /// `since <now>`: blobs stored before it existed have no record. Read-only, the file is
    /// read (if there) and nothing is ever written; touches stay in memory.
    pub fn open(path: impl Into<PathBuf>, writable: bool) -> Result<FileClock, StoreError> {
        FileClock::open_at(path.into(), writable, SystemTime::now())
    }

    /// [`FileClock::open`] at `now` (tests start a clock with no floor by passing the epoch).
    fn open_at(path: PathBuf, writable: bool, now: SystemTime) -> Result<FileClock, StoreError> {
        let loaded = load(&path)?;
        let (times, floor, file) = match loaded {
            None => {
                let floor = Some(now).filter(|t| *t > UNIX_EPOCH);
                let file = if writable {
                    let line = floor.map_or(String::new(), |t| format!("since {}\n", secs(t)));
                    Some(replace(&path, &line)?)
                } else {
                    None
                };
                (HashMap::new(), floor, file)
            }
            Some(l) => {
                // Not closed cleanly: touches may be missing, of blobs nobody can name.
                let floor = if l.clean { l.floor } else { Some(now) };
                let file = if !writable {
                    None
                } else if l.bytes > COMPACT_MIN_BYTES
                    && l.lines > COMPACT_RATIO * (l.times.len() + 1)
                {
                    let mut text = String::new();
                    if let Some(t) = floor {
                        text.push_str(&format!("since {}\n", secs(t)));
                    }
                    for (d, t) in &l.times {
                        text.push_str(&format!("{d} {}\n", secs(*t)));
                    }
                    Some(replace(&path, &text)?)
                } else {
                    let mut f = OpenOptions::new().append(true).open(&path)?;
                    // Synced before any touch: from here, a crash is never taken for a
                    // clean close (the file no longer ends in `clean`).
                    let since = floor.map_or(0, secs);
                    f.write_all(format!("since {since}\n").as_bytes())?;
                    f.sync_data()?;
                    Some(f)
                };
                (l.times, floor, file)
            }
        };
        let writable = file.is_some();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                times,
                floor,
                pending: String::new(),
            }),
            file: Mutex::new(file),
        });
        if writable {
            let weak = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("airdock-clock".into())
                .spawn(move || flusher(weak))
                .map_err(StoreError::from)?;
        }
        Ok(FileClock { shared })
    }
}

impl Shared {
    /// Append the pending lines (not synced: only a clean close relies on them).
    fn flush(&self) -> io::Result<()> {
        let mut file = lock(&self.file);
        let Some(f) = file.as_mut() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut lock(&self.state).pending);
        f.write_all(pending.as_bytes())
    }
}

/// Appends pending touches every [`FLUSH_EVERY`] until the clock is gone.
fn flusher(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.flush() {
            // Nothing is lost yet: the close will not mark the file clean if it fails too.
            tracing::warn!(error = %e, "cannot append to GC's clock file");
        }
    }
}

impl Drop for FileClock {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "cannot close GC's clock file; the next start counts every blob as used then");
        }
    }
}

impl BlobClock for FileClock {
    fn touch(&self, d: &Digest, at: SystemTime) {
        let mut state = lock(&self.shared.state);
        let t = state.times.entry(d.clone()).or_insert(at);
        if *t > at {
            return;
        }
        *t = at;
        let line = format!("{d} {}\n", secs(at));
        state.pending.push_str(&line);
    }

    fn last_used(&self, d: &Digest) -> Option<SystemTime> {
        let state = lock(&self.shared.state);
        match (state.times.get(d).copied(), state.floor) {
            (Some(t), Some(f)) => Some(t.max(f)),
            (t, f) => t.or(f),
        }
    }

    fn forget(&self, d: &Digest) {
        let mut state = lock(&self.shared.state);
        if state.times.remove(d).is_some() {
            let line = format!("{d} -\n");
            state.pending.push_str(&line);
        }
    }

    /// Write every pending touch, sync, and mark the file clean. Later touches are kept in
    /// memory only. Also run on drop; idempotent.
    fn close(&self) -> Result<(), StoreError> {
        let mut file = lock(&self.shared.file);
        let Some(f) = file.as_mut() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut lock(&self.shared.state).pending);
        f.write_all(pending.as_bytes())?;
        f.sync_data()?;
        // Only after everything before it is durable.
        f.write_all(format!("clean {}\n", secs(SystemTime::now())).as_bytes())?;
        f.sync_data()?;
        *file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobstore::testsuite;
    use crate::Algorithm;

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    #[test]
    fn keeps_the_contract_rules() {
        let dir = tempfile::tempdir().expect("tmp");
        let clock = FileClock::open_at(dir.path().join("clock"), true, UNIX_EPOCH).expect("open");
        testsuite::clock_keeps_the_latest_touch(&clock);
    }

    #[tokio::test]
    async fn clock_and_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let clock = FileClock::open(dir.path().join("clock"), true).expect("open");
        let blobs = crate::blobstore::memory::MemBlobStore::new();
        testsuite::clock_and_writes(&blobs, &clock).await;
    }

    /// Issue 11: GC's grace window survives a restart. Closed cleanly, every touch and forget
    /// comes back exactly; killed (no close), every blob counts as used at the reopen.
    #[test]
    fn survives_a_clean_restart_and_is_conservative_after_a_crash() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("clock");
        let (a, b, c) = (sha(b"a"), sha(b"b"), sha(b"c"));
        let old = time(secs(SystemTime::now() - Duration::from_secs(7200)));
        {
            let clock = FileClock::open(&path, true).expect("open");
            let opened = clock.last_used(&c).expect("a new file's floor: its open");
            assert!(opened > old);
            clock.touch(&a, old);
            assert_eq!(clock.last_used(&a), Some(opened), "never below the floor");
        }
        // A cleanly closed file whose records are older than its floor.
        fs::write(&path, format!("since 0\n{a} {}\nclean 1\n", secs(old))).expect("seed");
        let later = old + Duration::from_secs(60);
        {
            let clock = FileClock::open(&path, true).expect("reopen");
            assert_eq!(clock.last_used(&a), Some(old), "kept across a clean close");
            assert_eq!(
                clock.last_used(&b),
                Some(UNIX_EPOCH),
                "no record: the floor"
            );
            clock.touch(&b, later);
            clock.forget(&a);
            clock.close().expect("close");
            // Closed: kept in memory only.
            clock.touch(&c, later);
        }
        let text = fs::read_to_string(&path).expect("read");
        let last = text.lines().last().expect("a line");
        assert!(last.starts_with("clean "), "{text}");
        assert!(!text.contains(&c.to_string()), "{text}");
        let clock = FileClock::open(&path, true).expect("reopen");
        assert_eq!(clock.last_used(&b), Some(later));
        assert_eq!(clock.last_used(&a), Some(UNIX_EPOCH), "forgotten");
        // Killed: no close. Whether or not the flusher appended this touch, the reopen
        // cannot know which touches are missing, so it trusts no record below its open.
        clock.touch(&a, later);
        std::mem::forget(clock);
        let before = time(secs(SystemTime::now()));
        let clock = FileClock::open(&path, true).expect("reopen after a kill");
        for d in [&a, &b, &c] {
            assert!(clock.last_used(d).expect("floor") >= before, "{d}");
        }
    }

    #[test]
    fn torn_tail_is_ignored_and_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("clock");
        let a = sha(b"a");
        fs::write(&path, format!("since 0\n{a} 100\nclean 5\n{a} 2")).expect("torn");
        let clock = FileClock::open(&path, false).expect("open");
        assert_eq!(clock.last_used(&a), Some(time(100)));
        fs::write(&path, "since zero\n").expect("bad");
        assert!(matches!(
            FileClock::open(&path, false),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn read_only_writes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("clock");
        let clock = FileClock::open(&path, false).expect("open");
        clock.touch(&sha(b"a"), SystemTime::now());
        drop(clock);
        assert!(!path.exists());
    }

    #[test]
    fn compacts_a_long_file_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("clock");
        let a = sha(b"a");
        let mut text = String::from("since 0\n");
        for n in 0..20_000u64 {
            text.push_str(&format!("{a} {n}\n"));
        }
        text.push_str("clean 1\n");
        fs::write(&path, &text).expect("long");
        let clock = FileClock::open(&path, true).expect("open");
        assert_eq!(clock.last_used(&a), Some(time(19_999)));
        drop(clock);
        assert!(fs::metadata(&path).expect("meta").len() < 1000);
        let clock = FileClock::open(&path, true).expect("open");
        assert_eq!(clock.last_used(&a), Some(time(19_999)));
    }
}
