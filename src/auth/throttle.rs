//! Throttling of failed logins per client address: after `max_failures` failures in a row
//! the address is refused (429 with `Retry-After`) for `lockout`, without checking passwords,
//! so guessing costs the guesser time and costs the server no bcrypt work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked addresses, entries with no recent failure are dropped, so a
/// flood of addresses cannot grow the table without bound.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    lockout: Duration,
    /// std Mutex: a few map operations, never held across an await.
    state: Mutex<HashMap<Option<IpAddr>, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    pub fn new(max_failures: u32, lockout: Duration) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            lockout,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, Entry>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds)` while `ip` is locked out.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        match self.map().get(&ip).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err((until - now).as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// Count a failure; `true` when it locked the address out.
    pub fn failed(&self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut map = self.map();
        if map.len() >= MAX_TRACKED {
            let horizon = self.lockout.max(Duration::from_secs(60));
            map.retain(|_, e| now.duration_since(e.last) < horizon);
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            last: now,
            locked_until: None,
        });
        // A lockout that ran out starts a fresh count.
        if matches!(e.locked_until, Some(u) if u <= now) {
            e.failures = 0;
            e.locked_until = None;
        }
        e.failures += 1;
        e.last = now;
        if e.failures >= self.max_failures {
            let was_locked = e.locked_until.is_some();
            e.locked_until = Some(now + self.lockout);
            return !was_locked;
        }
        false
    }

    pub fn succeeded(&self, ip: Option<IpAddr>) {
        self.map().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_failures_and_success_resets() {
        let t = Throttle::new(3, Duration::from_secs(30));
        let ip = Some("10.0.0.1".parse().expect("ip"));
        let other = Some("10.0.0.2".parse().expect("ip"));
        t.failed(ip);
        t.failed(ip);
        assert!(t.check(ip).is_ok());
        t.succeeded(ip);
        assert!(!t.failed(ip));
        assert!(!t.failed(ip));
        assert!(t.failed(ip), "the third failure locks the address out");
        let wait = t.check(ip).expect_err("locked");
        assert!((1..=30).contains(&wait));
        assert!(t.check(other).is_ok());
    }
}
