//! Pins: digests a writer is about to rely on being present. GC never deletes a pinned
//! blob file nor drops a link to it, so "found it already stored, link it" cannot race
//! with "nobody uses it, delete it".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Digest;

/// The set of pinned digests, counted (two pushes of one blob pin it twice).
#[derive(Default, Clone)]
pub(crate) struct Pins {
    /// std Mutex: only map updates and, in GC, one `unlink` per held lock happen under it,
    /// never an `.await`. GC holds it across the unlink so that "not pinned" and "deleted"
    /// are one step as seen by a writer taking a pin.
    map: Arc<Mutex<HashMap<Digest, usize>>>,
}

impl Pins {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<Digest, usize>> {
        // Updates are single inserts/removes: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pin(&self, d: &Digest) -> Pin {
        *self.lock().entry(d.clone()).or_default() += 1;
        Pin {
            pins: self.clone(),
            digest: d.clone(),
        }
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
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut map = self.pins.lock();
        if let Some(n) = map.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.digest);
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

    #[test]
    fn counted_and_released() {
        let pins = Pins::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        let a = pins.pin(&d);
        let b = pins.pin(&d);
        drop(a);
        assert!(pins.lock().contains_key(&d));
        drop(b);
        assert!(!pins.lock().contains_key(&d));
    }
}
