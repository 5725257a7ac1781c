//! The admin work that runs on timers while serving: GC every `--gc-interval` and the expiry
//! of idle upload sessions.

use std::time::Duration;

use airdock_storage::{GcOptions, Store};

/// Start the timers: GC every `gc_interval` (if not zero) and upload expiry every so often
/// (if `gc.upload_ttl` is set). They run until the runtime stops.
pub fn spawn_background(store: Store, gc: GcOptions, gc_interval: Duration) {
    if !gc_interval.is_zero() {
        let store = store.clone();
        let opts = GcOptions {
            dry_run: false,
            ..gc.clone()
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(gc_interval).await;
                let report = store.gc(&opts).await;
                if let Err(airdock_storage::StoreError::Busy(why)) = &report {
                    // Another replica is collecting: this round is theirs.
                    tracing::info!(%why, "scheduled gc skipped");
                    continue;
                }
                crate::metrics::get().gc(&report);
                if let Err(e) = report {
                    tracing::error!(error = %e, "scheduled gc failed");
                }
            }
        });
    }
    if let Some(ttl) = gc.upload_ttl {
        // Often enough that a session lives at most ~1.25 × ttl, at most once a minute.
        let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.expire_uploads(ttl).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "upload sessions expired"),
                    Err(e) => tracing::error!(error = %e, "expiring upload sessions failed"),
                }
            }
        });
    }
}
