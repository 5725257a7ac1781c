//! Console sessions and CSRF tokens. Every visitor carries a random session id in a cookie;
//! only signed-in ones have an entry here (an anonymous id costs no memory, so a crawler
//! cannot fill the table). The CSRF token of a form is an HMAC of the session id under a
//! per-process key: stateless, tied to that one browser, and unknown to another site (which
//! can neither read the cookie nor, with `SameSite=Strict`, make the browser send it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "airdock_ui";

/// A session ends this long after sign-in, whatever happens.
const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// … or after this long without a request.
const IDLE: Duration = Duration::from_secs(2 * 3600);
/// At most this many signed-in sessions; past it the least recently used goes.
const MAX_SESSIONS: usize = 10_000;

struct Entry {
    user: String,
    started: Instant,
    seen: Instant,
}

/// The signed-in sessions and the CSRF key. Shared by every console request.
pub struct Sessions {
    /// std Mutex: map operations only, never held across an `.await`.
    map: Mutex<HashMap<String, Entry>>,
    key: [u8; 32],
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        let mut key = [0u8; 32];
        // Only fails when the kernel has no random source at all; no session could be
        // made safely then (the store's ids stop the same way).
        crate::sys::fill_random(&mut key).expect("the operating system gave no random bytes");
        Sessions {
            map: Mutex::new(HashMap::new()),
            key,
        }
    }

    /// A fresh session id: 128 random bits as hex.
    pub fn new_id() -> std::io::Result<String> {
        crate::sys::random_hex(16)
    }

    /// The user signed in under `sid`, if the session is alive (and marks it used).
    pub fn user(&self, sid: &str) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let alive = map.get(sid).is_some_and(|e| {
            now.duration_since(e.started) < MAX_AGE && now.duration_since(e.seen) < IDLE
        });
        if !alive {
            map.remove(sid);
            return None;
        }
        let e = map.get_mut(sid)?;
        e.seen = now;
        Some(e.user.clone())
    }

    /// Sign `user` in under a new id (never the one the browser had before: a session id
    /// planted before sign-in is worth nothing after it). Returns the new id.
    pub fn sign_in(&self, user: &str) -> std::io::Result<String> {
        let sid = Self::new_id()?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, e| {
                now.duration_since(e.started) < MAX_AGE && now.duration_since(e.seen) < IDLE
            });
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.seen)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            sid.clone(),
            Entry {
                user: user.to_owned(),
                started: now,
                seen: now,
            },
        );
        Ok(sid)
    }

    pub fn sign_out(&self, sid: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(sid);
    }

    /// The CSRF token of the session `sid`.
    pub fn csrf(&self, sid: &str) -> String {
        // HMAC takes keys of any length; 32 bytes never fails.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"csrf\0");
        mac.update(sid.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `given` is the CSRF token of `sid`, compared in constant time.
    pub fn csrf_ok(&self, sid: &str, given: &str) -> bool {
        let want = self.csrf(sid);
        !sid.is_empty() && want.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

/// The session id in a `Cookie` header, if it is one we could have made (32 hex).
pub fn sid_from_cookies(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for session `sid`: the browser sends it back only to `/ui`, never
/// to scripts, never from another site, and over TLS only when we are served over TLS.
pub fn set_cookie(sid: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={sid}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_is_per_session_and_checked_exactly() {
        let s = Sessions::new();
        let a = Sessions::new_id().expect("id");
        let b = Sessions::new_id().expect("id");
        let t = s.csrf(&a);
        assert!(s.csrf_ok(&a, &t));
        assert!(!s.csrf_ok(&b, &t));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, &t[..10]));
        assert!(!s.csrf_ok("", &s.csrf("")));
        // Another process (another key) does not accept it.
        assert!(!Sessions::new().csrf_ok(&a, &t));
    }

    #[test]
    fn sign_in_rotates_and_sign_out_ends() {
        let s = Sessions::new();
        let sid = s.sign_in("alice").expect("sign in");
        assert_eq!(s.user(&sid).as_deref(), Some("alice"));
        let other = s.sign_in("alice").expect("sign in");
        assert_ne!(sid, other);
        s.sign_out(&sid);
        assert_eq!(s.user(&sid), None);
        assert_eq!(s.user(&other).as_deref(), Some("alice"));
    }

    #[test]
    fn cookie_parsing_takes_only_well_formed_ids() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(sid_from_cookies(&format!("x=1; {COOKIE}={id}")), Some(id));
        assert_eq!(sid_from_cookies(&format!("{COOKIE}=../../etc")), None);
        assert_eq!(sid_from_cookies("other=1"), None);
        assert!(set_cookie(id, true).ends_with("SameSite=Strict; Secure"));
        assert!(!set_cookie(id, false).contains("Secure"));
    }
}
