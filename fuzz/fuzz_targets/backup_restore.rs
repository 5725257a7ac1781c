//! `airdock restore` reading an untrusted backup tar into a fresh data dir.
//!
//! Properties: it never panics; a backup it accepts leaves a data dir that opens again, whose
//! journal loads and in which every blob the metadata needs is stored and matches its digest
//! (fsck is clean); one it refuses leaves no metadata behind (an empty catalog).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use airdock_storage::backup::restore;
use airdock_storage::Store;
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    // Directory fsyncs only cost time here: no power is cut.
    std::env::set_var("AIRDOCK_TEST_SKIP_DIR_FSYNC", "1");
    // On tmpfs where there is one: each run fsyncs the restored files, which on a disk costs
    // most of a run's time (≈ 100 runs in 30 s instead of thousands).
    let shm = std::path::Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let base = scratch.join(format!(
        "airdock-fuzz-restore-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&base).expect("scratch dir");
    let tar = base.join("backup.tar");
    std::fs::write(&tar, data).expect("write input");
    let target = base.join("data");
    airdock_fuzz::block_on(async {
        let result = restore(&tar, &target, false).await;
        let store = Store::open_read_only(&target)
            .await
            .expect("restored dir opens");
        match result {
            Ok(report) => {
                let fsck = store.fsck(false).await.expect("fsck runs");
                assert!(fsck.clean, "accepted a backup fsck rejects: {fsck:?}");
                assert_eq!(
                    store.catalog(None, None).items.len() as u64,
                    report.repositories
                );
            }
            Err(_) => assert!(store.catalog(None, None).items.is_empty()),
        }
    });
    let _ = std::fs::remove_dir_all(&base);
});
