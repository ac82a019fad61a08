//! Rate limits: per subject on `/mcp` (GCRA via `governor`, with the IETF
//! `RateLimit` / `RateLimit-Policy` headers), per address on registration, and
//! growing lockouts after failed logins.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub use super::store::LoginFailures;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Seconds until the quota is fully available again (allowed) or until the
    /// next request may be made (refused).
    pub reset_secs: u64,
    /// The quota per window.
    pub limit: u32,
}

impl Decision {
    /// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers)
    /// and, when refused, `Retry-After`.
    pub fn apply(&self, h: &mut HeaderMap) {
        let policy = format!("\"mcp\";q={};w=60", self.limit);
        let state = format!("\"mcp\";r={};t={}", self.remaining, self.reset_secs);
        if let Ok(v) = HeaderValue::from_str(&policy) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            h.insert("ratelimit", v);
        }
        if !self.allowed {
            h.insert("retry-after", HeaderValue::from(self.reset_secs.max(1)));
        }
    }
}

/// A per-key quota of N requests per minute.
pub struct SubjectLimiter {
    limiter: Keyed,
    clock: DefaultClock,
    per_minute: u32,
}

impl SubjectLimiter {
    /// `per_minute` requests per minute per key, all of them usable in a burst.
    pub fn new(per_minute: NonZeroU32) -> Self {
        let limiter = RateLimiter::dashmap(Quota::per_minute(per_minute))
            .with_middleware::<StateInformationMiddleware>();
        Self {
            limiter,
            clock: DefaultClock::default(),
            per_minute: per_minute.get(),
        }
    }

    /// Forgets keys whose quota is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &str) -> Decision {
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        let per_token = 60.0 / f64::from(self.per_minute);
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.per_minute.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    remaining,
                    reset_secs: (f64::from(used) * per_token).ceil() as u64,
                    limit: self.per_minute,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    limit: self.per_minute,
                }
            }
        }
    }
}

/// A per-address quota (e.g. registrations).
pub struct AddressLimiter(SubjectLimiter);

impl AddressLimiter {
    /// `n` per minute per address.
    pub fn per_minute(n: u32) -> Self {
        AddressLimiter(SubjectLimiter::new(
            NonZeroU32::new(n.max(1)).expect("n >= 1"),
        ))
    }

    /// Counts one request from `addr`.
    pub fn check(&self, addr: &str) -> Decision {
        self.0.check(addr)
    }

    /// Forgets addresses whose quota is full again.
    pub fn sweep(&self) {
        self.0.sweep();
    }
}

/// Failed logins within [`WINDOW`] that start the first lockout.
pub const FREE_FAILURES: u32 = 5;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);

/// Whether `f` still matters at `now_ms` (within the window, or locked out).
pub fn still_matters(f: &LoginFailures, now_ms: i64) -> bool {
    now_ms.saturating_sub(f.first_at) < WINDOW.as_millis() as i64
        || f.locked_until.is_some_and(|u| u > now_ms)
}

/// How long `f` still locks its address out at `now_ms`.
pub fn lockout_left(f: &LoginFailures, now_ms: i64) -> Option<Duration> {
    let until = f.locked_until?;
    (until > now_ms).then(|| Duration::from_millis((until - now_ms) as u64))
}

/// The record after one more failure at `now_ms` (times in milliseconds), and
/// the lockout that failure starts, if any. One rule for this host's memory
/// and for the shared store.
pub fn after_failure(old: Option<LoginFailures>, now_ms: i64) -> (LoginFailures, Option<Duration>) {
    let fresh = LoginFailures {
        count: 0,
        first_at: now_ms,
        locked_until: None,
    };
    let mut f = old.unwrap_or(fresh);
    let lock_over = f.locked_until.is_none_or(|u| u <= now_ms);
    if now_ms.saturating_sub(f.first_at) >= WINDOW.as_millis() as i64 && lock_over {
        f = fresh;
    }
    f.count += 1;
    if f.count >= FREE_FAILURES {
        let exp = (f.count - FREE_FAILURES).min(16);
        let lock = FIRST_LOCKOUT.saturating_mul(1 << exp).min(MAX_LOCKOUT);
        f.locked_until = Some(now_ms.saturating_add(lock.as_millis() as i64));
        f.first_at = now_ms;
        (f, Some(lock))
    } else {
        (f, None)
    }
}

/// Failed-login throttling per client address: the [`FREE_FAILURES`]th failure
/// within [`WINDOW`] locks the address out for 30 s, and each further failure
/// (after a lockout ends) for twice as long as the previous one, up to an hour.
/// While locked out, no password is checked. A success clears the record.
/// Times are milliseconds since the throttle was made.
pub struct LoginThrottle {
    base: Instant,
    by_addr: Mutex<HashMap<String, LoginFailures>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            base: Instant::now(),
            by_addr: Mutex::default(),
        }
    }
}

impl LoginThrottle {
    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.base).as_millis() as i64
    }

    /// `Some(wait)` when `addr` is locked out right now.
    pub fn locked(&self, addr: &str) -> Option<Duration> {
        self.locked_at(addr, Instant::now())
    }

    fn locked_at(&self, addr: &str, now: Instant) -> Option<Duration> {
        let map = self.by_addr.lock().expect("login throttle lock");
        lockout_left(map.get(addr)?, self.ms(now))
    }

    /// Forgets addresses whose failures are out of the window and not locked out.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let now = self.ms(now);
        self.by_addr
            .lock()
            .expect("login throttle lock")
            .retain(|_, f| still_matters(f, now));
    }

    /// Records a failure; returns the lockout it starts, if any.
    pub fn failed(&self, addr: &str) -> Option<Duration> {
        self.failed_at(addr, Instant::now())
    }

    fn failed_at(&self, addr: &str, now: Instant) -> Option<Duration> {
        let now = self.ms(now);
        let mut map = self.by_addr.lock().expect("login throttle lock");
        if map.len() > 100_000 {
            map.retain(|_, f| still_matters(f, now));
        }
        let (f, lock) = after_failure(map.get(addr).copied(), now);
        map.insert(addr.to_owned(), f);
        lock
    }

    /// Clears `addr` after a successful login.
    pub fn succeeded(&self, addr: &str) {
        self.by_addr
            .lock()
            .expect("login throttle lock")
            .remove(addr);
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
