//! Pins: digests a writer is about to rely on being present. GC never deletes a pinned
//! blob file nor drops a link to it, so "found it already stored, link it" cannot race
//! with "nobody uses it, delete it".
//!
//! GC claims a digest for deletion ([`Pins::begin_delete`]) only while it is unpinned, and
//! the claim lasts until the backend's delete is over. A writer pinning that digest
//! meanwhile gets its pin at once but waits in [`Pin::settled`] until the delete is done,
//! then finds the blob absent and stores its own copy. No lock is held across the delete
//! itself: on S3 it is network I/O, and a std mutex held across it would block every
//! runtime thread that pins (all of them, under a push load), and with them the I/O driver
//! the delete needs: a deadlock.
//!
//! With PostgreSQL (replicas) a pin must also hold against the GC of another process, so
//! pins and uses of blobs are published as marks (`airdock_marks`, see `meta/pg.rs`) that
//! every replica's GC reads:
//! - a pin is published (one row per process and digest, with a lease its holder renews)
//!   before the writer looks at or writes the blob ([`Pins::pin_published`]), and a use that
//!   no pin covers (`HEAD`) before it is answered ([`Pins::touch_published`]);
//! - a release is published lazily (within a second): the pin row goes and a last-use row
//!   at that moment stays, in one transaction, so the grace window runs on from the release
//!   as on a single node; until then the pin still protects, which is only more cautious;
//! - every publication holds the mark gate shared, and GC holds it exclusively while it
//!   reads a batch's marks and deletes that batch. So a pin lands either before GC reads
//!   (and keeps the blob) or after the deletes (and the writer, which looks only once its
//!   pin is published, finds the blob gone and stores its own copy): the claim above,
//!   across processes.
//!
//! Concurrent publications of one process share one round trip (group commit): a caller
//! waits for a write that started after its mark was queued.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::meta::{MarkBatch, MarksLink, PIN_LEASE};
use crate::{Digest, StoreError};

/// Lazy releases are published at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Table {
    /// Pinned digests, counted (two pushes of one blob pin it twice).
    pinned: HashMap<Digest, usize>,
    /// Digests GC is deleting right now.
    deleting: HashSet<Digest>,
}

#[derive(Default)]
struct Shared {
    /// std Mutex: map updates only, never held across an `.await`.
    table: Mutex<Table>,
    /// Woken whenever a delete is over.
    deleted: Notify,
}

/// The set of pinned digests and of digests being deleted.
#[derive(Default, Clone)]
pub(crate) struct Pins {
    shared: Arc<Shared>,
    /// With PostgreSQL: where pins and uses are published for other replicas' GC.
    published: Option<Arc<Published>>,
}

struct Published {
    /// This process's name in the marks table (random per open).
    holder: String,
    /// tokio Mutex: held across the publishing query, which is the point (one in flight;
    /// whoever holds it publishes everything queued so far).
    link: tokio::sync::Mutex<MarksLink>,
    /// std Mutex: set updates only, never across an `.await`. Taken after the table's lock,
    /// never before it.
    pending: Mutex<Pending>,
    /// The `queued` number up to which everything is published.
    upto: AtomicU64,
}

#[derive(Default)]
struct Pending {
    /// Bumped at each queued mark.
    queued: u64,
    touched: HashSet<Digest>,
    /// Digests whose pin count went from or to zero: published as held or released by
    /// the count at publication time.
    pins: HashSet<Digest>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert, remove or take: still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pins {
    /// Pins published through `link` (PostgreSQL), renewed and released by a task that
    /// lives as long as they do.
    pub(crate) fn published(link: MarksLink) -> Result<Pins, StoreError> {
        let pins = Pins {
            shared: Arc::default(),
            published: Some(Arc::new(Published {
                holder: crate::random::hex(16)?,
                link: tokio::sync::Mutex::new(link),
                pending: Mutex::default(),
                upto: AtomicU64::new(0),
            })),
        };
        let (shared, published) = (
            Arc::downgrade(&pins.shared),
            pins.published
                .as_ref()
                .map_or_else(Weak::new, Arc::downgrade),
        );
        tokio::spawn(keep_published(shared, published));
        Ok(pins)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Updates are single inserts/removes: a poisoned table is still consistent.
        lock(&self.shared.table)
    }

    /// Pin `d` without waiting for a delete of it in flight: await [`Pin::settled`] before
    /// relying on the blob being there or not ([`Pins::pin`] does both). Other replicas
    /// learn of it within a second.
    pub(crate) fn pin_now(&self, d: &Digest) -> Pin {
        let mut t = self.table();
        let n = t.pinned.entry(d.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.queue_pin(d);
        }
        drop(t);
        Pin {
            pins: self.clone(),
            digest: d.clone(),
        }
    }

    /// [`Pins::pin`], returned once every replica's GC sees it: the caller may then look
    /// at, write or link the blob.
    pub(crate) async fn pin_published(&self, d: &Digest) -> Result<Pin, StoreError> {
        let pin = self.pin(d).await;
        self.publish().await?;
        Ok(pin)
    }

    /// Record a use of `d` that no pin covers (a `HEAD`) where every replica's GC sees it,
    /// before returning. Nothing to do on a single node: the store's clock is GC's.
    pub(crate) async fn touch_published(&self, d: &Digest) -> Result<(), StoreError> {
        let Some(p) = &self.published else {
            return Ok(());
        };
        {
            let mut pending = lock(&p.pending);
            pending.touched.insert(d.clone());
            pending.queued += 1;
        }
        self.publish().await
    }

    fn queue_pin(&self, d: &Digest) {
        if let Some(p) = &self.published {
            let mut pending = lock(&p.pending);
            pending.pins.insert(d.clone());
            pending.queued += 1;
        }
    }

    /// Publish everything queued up to now, or wait for a publication that started after it.
    async fn publish(&self) -> Result<(), StoreError> {
        let Some(p) = &self.published else {
            return Ok(());
        };
        let mine = lock(&p.pending).queued;
        let mut link = p.link.lock().await;
        if p.upto.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let (upto, touched, pins) = {
            let mut pending = lock(&p.pending);
            (
                pending.queued,
                std::mem::take(&mut pending.touched),
                std::mem::take(&mut pending.pins),
            )
        };
        let batch = {
            let t = self.table();
            let (held, released) = pins.iter().cloned().partition(|d| t.pinned.contains_key(d));
            MarkBatch {
                touched: touched.iter().cloned().collect(),
                held,
                released,
            }
        };
        if !batch.is_empty() {
            if let Err(e) = link.publish(&p.holder, &batch).await {
                // Queued again: the next publication (this caller's retry, another's, or
                // the task's) writes them.
                let mut pending = lock(&p.pending);
                pending.touched.extend(touched);
                pending.pins.extend(pins);
                return Err(e);
            }
        }
        p.upto.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Pin `d`, once no delete of it is in flight.
    pub(crate) async fn pin(&self, d: &Digest) -> Pin {
        let pin = self.pin_now(d);
        pin.settled().await;
        pin
    }

    /// The digests pinned right now.
    pub(crate) fn pinned(&self) -> HashSet<Digest> {
        self.table().pinned.keys().cloned().collect()
    }

    /// Claim `d` for deletion if nothing pins it: `None` when pinned. Pins taken while
    /// the claim lives wait for its drop.
    pub(crate) fn begin_delete(&self, d: &Digest) -> Option<Deleting> {
        let mut t = self.table();
        if t.pinned.contains_key(d) || !t.deleting.insert(d.clone()) {
            return None;
        }
        Some(Deleting {
            pins: self.clone(),
            digest: d.clone(),
        })
    }

    fn deleting(&self, d: &Digest) -> bool {
        self.table().deleting.contains(d)
    }
}

/// While the pins live: publish lazy releases every [`FLUSH_EVERY`], and renew the lease of
/// every pin still held well within [`PIN_LEASE`].
async fn keep_published(shared: Weak<Shared>, published: Weak<Published>) {
    let renew_every = (PIN_LEASE.as_secs() / 3 / FLUSH_EVERY.as_secs()).max(1);
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let (Some(shared), Some(published)) = (shared.upgrade(), published.upgrade()) else {
            return;
        };
        ticks += 1;
        let pins = Pins {
            shared,
            published: Some(published),
        };
        if ticks.is_multiple_of(renew_every) {
            for d in &pins.pinned() {
                pins.queue_pin(d);
            }
        }
        let idle = pins.published.as_ref().is_some_and(|p| {
            let pending = lock(&p.pending);
            pending.pins.is_empty() && pending.touched.is_empty()
        });
        if !idle {
            if let Err(e) = pins.publish().await {
                tracing::warn!(error = %e, "publishing pins for other replicas failed; retrying");
            }
        }
    }
}

/// GC's claim on a digest it is deleting; released (and waiting pins woken) when dropped.
pub(crate) struct Deleting {
    pins: Pins,
    digest: Digest,
}

impl Drop for Deleting {
    fn drop(&mut self) {
        self.pins.table().deleting.remove(&self.digest);
        self.pins.shared.deleted.notify_waiters();
    }
}

/// Holds a digest pinned until dropped.
pub struct Pin {
    pins: Pins,
    digest: Digest,
}

impl Pin {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Wait until no delete of this digest is in flight. From then on GC leaves it alone
    /// while the pin lives.
    pub async fn settled(&self) {
        loop {
            let deleted = self.pins.shared.deleted.notified();
            tokio::pin!(deleted);
            // Registered before looking, so a delete ending in between still wakes us.
            deleted.as_mut().enable();
            if !self.pins.deleting(&self.digest) {
                return;
            }
            deleted.await;
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut t = self.pins.table();
        if let Some(n) = t.pinned.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                t.pinned.remove(&self.digest);
                self.pins.queue_pin(&self.digest);
            }
        }
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pin({})", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;
    use std::time::Duration;

    #[test]
    fn counted_and_released() {
        let pins = Pins::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        let a = pins.pin_now(&d);
        let b = pins.pin_now(&d);
        drop(a);
        assert!(pins.pinned().contains(&d));
        drop(b);
        assert!(!pins.pinned().contains(&d));
    }

    #[test]
    fn a_pinned_digest_cannot_be_claimed_for_deletion() {
        let pins = Pins::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        let pin = pins.pin_now(&d);
        assert!(pins.begin_delete(&d).is_none());
        drop(pin);
        let claim = pins.begin_delete(&d).expect("unpinned");
        assert!(pins.begin_delete(&d).is_none(), "one delete at a time");
        drop(claim);
    }

    /// A pin taken during a delete waits for its end; other digests do not wait.
    #[tokio::test]
    async fn a_pin_taken_during_a_delete_waits_for_it() {
        let pins = Pins::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        let other = Digest::of(Algorithm::Sha256, b"y");
        let claim = pins.begin_delete(&d).expect("unpinned");
        pins.pin(&other).await;
        let waiting = tokio::spawn({
            let pins = pins.clone();
            async move { pins.pin(&d).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the pin waits while the delete is in flight"
        );
        drop(claim);
        let pin = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the delete ends")
            .expect("task");
        assert!(pins.pinned().contains(pin.digest()));
    }
}
