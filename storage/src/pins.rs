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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::Digest;

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
}

impl Pins {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Updates are single inserts/removes: a poisoned table is still consistent.
        self.shared.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pin `d` without waiting for a delete of it in flight: await [`Pin::settled`] before
    /// relying on the blob being there or not ([`Pins::pin`] does both).
    pub(crate) fn pin_now(&self, d: &Digest) -> Pin {
        *self.table().pinned.entry(d.clone()).or_default() += 1;
        Pin {
            pins: self.clone(),
            digest: d.clone(),
        }
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
