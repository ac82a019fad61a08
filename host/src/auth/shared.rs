//! The authorization server's short-lived state, kept in this host's memory
//! (one host, the SQLite store) or in the shared store (several hosts on one
//! PostgreSQL), behind one interface each:
//!
//! - [`Forms`]: login forms between `GET` and `POST /authorize`, so a login
//!   one host showed can be finished on another;
//! - [`Logins`]: failed-login throttling per client address;
//! - [`SubjectLimit`]: the per-subject limit on `/mcp`, one count for all hosts;
//! - [`Sessions`]: who opened each MCP session, so any host can check the
//!   caller of a session another host created.
//!
//! In the shared store the subject limit counts fixed one-minute windows (one
//! `INSERT ... ON CONFLICT DO UPDATE` per request) instead of the local GCRA:
//! exact across hosts, with bursts up to twice the limit at a window's edge.
//! A store failure refuses (fails closed): a login form is not found, a login
//! is treated as locked, a request over the limit check gets 503.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Principal;
use super::pending::{FORM_TTL, MAX_PENDING_PER_ADDRESS, PendingForms};
use super::ratelimit::{self, Decision, LoginThrottle, SubjectLimiter};
use super::sessions::{SessionBindings, SessionCheck};
use super::store::{SessionOwner, SharedState, StoreError};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Login forms waiting for their password.
pub enum Forms<T> {
    /// In this host's memory.
    Local(PendingForms<T>),
    /// In the shared store, under the hash of the CSRF token.
    Shared(Arc<dyn SharedState>),
}

impl<T: Clone + Serialize + DeserializeOwned> Forms<T> {
    /// Stores `value` for a form shown to `addr`; returns its CSRF token.
    pub async fn insert(&self, addr: &str, value: T) -> Result<String, StoreError> {
        match self {
            Forms::Local(p) => Ok(p.insert(addr, value)),
            Forms::Shared(s) => {
                let csrf = super::random_token();
                let data = serde_json::to_string(&value).map_err(|e| StoreError(e.to_string()))?;
                s.put_form(
                    &super::sha256_hex(&csrf),
                    addr,
                    &data,
                    super::now_secs(),
                    FORM_TTL.as_secs() as i64,
                    MAX_PENDING_PER_ADDRESS as i64,
                )
                .await?;
                Ok(csrf)
            }
        }
    }

    /// Takes the form of `csrf` (single use); `None` if unknown or expired.
    pub async fn take(&self, csrf: &str) -> Option<T> {
        match self {
            Forms::Local(p) => p.take(csrf),
            Forms::Shared(s) => match s
                .take_form(&super::sha256_hex(csrf), super::now_secs())
                .await
            {
                Ok(Some(data)) => serde_json::from_str(&data)
                    .inspect_err(|e| tracing::error!("a stored login form is unreadable: {e}"))
                    .ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!("login form lookup failed: {e}");
                    None
                }
            },
        }
    }

    /// Drops expired forms held in memory (the shared store purges its own).
    pub fn sweep(&self) {
        if let Forms::Local(p) = self {
            p.sweep();
        }
    }
}

/// Failed-login throttling.
pub enum Logins {
    /// In this host's memory.
    Local(LoginThrottle),
    /// In the shared store.
    Shared(Arc<dyn SharedState>),
}

impl Logins {
    /// `Some(wait)` while `addr` is locked out (also when the store cannot
    /// say: then a minute).
    pub async fn locked(&self, addr: &str) -> Option<Duration> {
        match self {
            Logins::Local(t) => t.locked(addr),
            Logins::Shared(s) => match s.login_failures(addr).await {
                Ok(f) => f.and_then(|f| ratelimit::lockout_left(&f, now_ms())),
                Err(e) => {
                    tracing::error!("login throttle lookup failed (refusing the login): {e}");
                    Some(Duration::from_secs(60))
                }
            },
        }
    }

    /// Records a failure; returns the lockout it starts, if any.
    pub async fn failed(&self, addr: &str) -> Option<Duration> {
        match self {
            Logins::Local(t) => t.failed(addr),
            Logins::Shared(s) => {
                let now = now_ms();
                let started = std::sync::Mutex::new(None);
                let update = |old| {
                    let (f, lock) = ratelimit::after_failure(old, now);
                    *started.lock().unwrap_or_else(|e| e.into_inner()) = lock;
                    Some(f)
                };
                match s.update_login_failures(addr, &update).await {
                    Ok(_) => started.into_inner().unwrap_or_else(|e| e.into_inner()),
                    Err(e) => {
                        tracing::error!("login throttle update failed: {e}");
                        None
                    }
                }
            }
        }
    }

    /// Clears `addr` after a successful login.
    pub async fn succeeded(&self, addr: &str) {
        match self {
            Logins::Local(t) => t.succeeded(addr),
            Logins::Shared(s) => {
                if let Err(e) = s.update_login_failures(addr, &|_| None).await {
                    tracing::warn!("login throttle reset failed: {e}");
                }
            }
        }
    }

    /// Forgets stale records held in memory.
    pub fn sweep(&self) {
        if let Logins::Local(t) = self {
            t.sweep();
        }
    }
}

/// The per-subject limit on `/mcp` POSTs.
pub enum SubjectLimit {
    /// This host's GCRA limiter.
    Local(SubjectLimiter),
    /// One-minute windows counted in the shared store.
    Shared {
        /// The store.
        store: Arc<dyn SharedState>,
        /// Requests per minute.
        per_minute: NonZeroU32,
    },
}

impl SubjectLimit {
    /// Counts one request of `subject`; `Err` when the shared count failed.
    pub async fn check(&self, subject: &str) -> Result<Decision, StoreError> {
        match self {
            SubjectLimit::Local(l) => Ok(l.check(subject)),
            SubjectLimit::Shared { store, per_minute } => {
                let now = super::now_secs();
                let window = now - now.rem_euclid(60);
                let count = store.hit(&format!("mcp:{subject}"), window).await?;
                let limit = per_minute.get();
                let allowed = count <= u64::from(limit);
                Ok(Decision {
                    allowed,
                    remaining: u64::from(limit).saturating_sub(count) as u32,
                    reset_secs: (window + 60 - now).max(1) as u64,
                    limit,
                })
            }
        }
    }

    /// Forgets full quotas held in memory.
    pub fn sweep(&self) {
        if let SubjectLimit::Local(l) = self {
            l.sweep();
        }
    }
}

/// Who opened each MCP session: this host's table, and the shared store's for
/// sessions another host created.
pub struct Sessions {
    local: SessionBindings,
    shared: Option<(Arc<dyn SharedState>, String)>,
    /// When this host last refreshed each session's `seen_at` in the shared
    /// store (seconds since the epoch).
    touched: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// How often a session in use refreshes its `seen_at` in the shared store
/// (the purge removes sessions unseen for a day).
pub const TOUCH_EVERY: i64 = 600;

impl Sessions {
    /// Bindings in memory only.
    pub fn local() -> Sessions {
        Sessions {
            local: SessionBindings::default(),
            shared: None,
            touched: Default::default(),
        }
    }

    /// Bindings also written to `store`, as host `host_id`.
    pub fn shared(store: Arc<dyn SharedState>, host_id: String) -> Sessions {
        Sessions {
            local: SessionBindings::default(),
            shared: Some((store, host_id)),
            touched: Default::default(),
        }
    }

    /// Binds a new session to its caller.
    pub async fn bind(&self, id: &str, caller: &Principal) {
        self.local.bind(id, caller);
        if let Some((store, host)) = &self.shared {
            self.touch_due(id, super::now_secs());
            let owner = SessionOwner {
                subject: caller.subject.clone(),
                client_id: caller.client_id.clone(),
            };
            if let Err(e) = store
                .bind_session(id, &owner, host, super::now_secs())
                .await
            {
                tracing::warn!("session {id} is not shared with other hosts: {e}");
            }
        }
    }

    /// Whether `caller` may use session `id`: known here, else known to the
    /// shared store (a session another host created, or this host before a
    /// restart).
    pub async fn check(&self, id: &str, caller: &Principal) -> SessionCheck {
        let check = self.check_owner(id, caller).await;
        if check == SessionCheck::Owner
            && let Some((store, _)) = &self.shared
        {
            let now = super::now_secs();
            if self.touch_due(id, now) {
                let (store, id) = (store.clone(), id.to_owned());
                tokio::spawn(async move {
                    if let Err(e) = store.touch_session(&id, now).await {
                        tracing::debug!("session {id}: seen_at not refreshed: {e}");
                    }
                });
            }
        }
        check
    }

    /// Whether this host should refresh session `id`'s `seen_at` now (and
    /// notes that it does).
    fn touch_due(&self, id: &str, now: i64) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        match touched.get(id) {
            Some(&at) if now - at < TOUCH_EVERY => false,
            _ => {
                if touched.len() >= super::sessions::MAX_SESSIONS {
                    touched.clear();
                }
                touched.insert(id.to_owned(), now);
                true
            }
        }
    }

    async fn check_owner(&self, id: &str, caller: &Principal) -> SessionCheck {
        match self.local.check(id, caller) {
            SessionCheck::Unknown => {}
            known => return known,
        }
        let Some((store, _)) = &self.shared else {
            return SessionCheck::Unknown;
        };
        match store.session_owner(id).await {
            Ok(Some(owner)) => {
                // An empty owner is a handshake saved before its owner was
                // bound: nobody's yet.
                if !owner.subject.is_empty()
                    && owner.subject == caller.subject
                    && owner.client_id == caller.client_id
                {
                    self.local.bind(id, caller);
                    SessionCheck::Owner
                } else {
                    SessionCheck::Foreign
                }
            }
            Ok(None) => SessionCheck::Unknown,
            Err(e) => {
                tracing::error!("session lookup failed: {e}");
                SessionCheck::Unknown
            }
        }
    }

    /// Forgets session `id` (deleted by its client, or unknown to rmcp here);
    /// the shared record goes only when the client deleted it.
    pub async fn unbind(&self, id: &str, deleted: bool) {
        self.local.unbind(id);
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if deleted
            && let Some((store, _)) = &self.shared
            && let Err(e) = store.end_session(id).await
        {
            tracing::warn!("session {id}: shared record not removed: {e}");
        }
    }

    /// Sessions bound in this host's memory.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    /// Whether none is bound here.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::LoginFailures;

    #[test]
    fn the_shared_lockout_follows_the_same_rule_as_memory() {
        // The shared path applies `after_failure` to stored records; a fifth
        // failure in the window locks for 30 s, counted in milliseconds.
        let mut rec: Option<LoginFailures> = None;
        let mut locks = Vec::new();
        for i in 0..ratelimit::FREE_FAILURES {
            let (f, lock) = ratelimit::after_failure(rec, 1_000 + i64::from(i));
            rec = Some(f);
            locks.push(lock);
        }
        assert!(locks[..4].iter().all(Option::is_none));
        assert_eq!(locks[4], Some(Duration::from_secs(30)));
        let f = rec.unwrap();
        assert_eq!(
            ratelimit::lockout_left(&f, 1_004 + 10_000),
            Some(Duration::from_secs(20))
        );
        assert_eq!(ratelimit::lockout_left(&f, 1_004 + 30_000), None);
    }
}
