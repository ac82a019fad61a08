//! MCP sessions bound to the caller that created them.
//!
//! rmcp hands out an `Mcp-Session-Id` on `initialize` and afterwards routes any
//! request carrying it into that session, whoever sends it. The gate therefore
//! records, for each session id an `initialize` response carries, the subject
//! and client of the token that created it, and lets only that same pair use
//! the id again (POST, GET and DELETE). Any other caller, and any id the gate
//! never saw, gets the same 404 rmcp gives for an unknown session, so an id
//! reveals nothing. With `auth.mode = "none"` there is one anonymous caller and
//! nothing to bind.
//!
//! The table is bounded ([`MAX_SESSIONS`]; the least recently used binding goes
//! first, and its session then answers 404, after which MCP clients start a new
//! one). Bindings are dropped when their session is deleted or rmcp answers 404
//! for it (ended or idle-expired).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Principal;

/// Sessions bound at once.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    subject: String,
    client_id: Option<String>,
}

impl Owner {
    fn of(p: &Principal) -> Owner {
        Owner {
            subject: p.subject.clone(),
            client_id: p.client_id.clone(),
        }
    }

    fn is(&self, p: &Principal) -> bool {
        self.subject == p.subject && self.client_id == p.client_id
    }
}

/// Whether a caller may use a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// The caller created it.
    Owner,
    /// Someone else created it.
    Foreign,
    /// The gate never bound it (never existed, ended, or evicted).
    Unknown,
}

#[derive(Default)]
struct Table {
    /// Session id → (owner, last use).
    owners: HashMap<String, (Owner, u64)>,
    clock: u64,
}

/// Session id → the caller that created the session.
pub struct SessionBindings {
    cap: usize,
    table: Mutex<Table>,
}

impl Default for SessionBindings {
    fn default() -> Self {
        Self::with_capacity(MAX_SESSIONS)
    }
}

impl SessionBindings {
    /// A table of at most `cap` bindings (≥ 1).
    pub fn with_capacity(cap: usize) -> Self {
        SessionBindings {
            cap: cap.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// Binds session `id` to `caller`, evicting the least recently used binding
    /// when full.
    pub fn bind(&self, id: &str, caller: &Principal) {
        let mut t = self.table.lock().expect("session bindings lock");
        t.clock += 1;
        if t.owners.len() >= self.cap
            && !t.owners.contains_key(id)
            && let Some(lru) = t
                .owners
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            t.owners.remove(&lru);
        }
        let now = t.clock;
        t.owners.insert(id.to_owned(), (Owner::of(caller), now));
    }

    /// Whether `caller` may use session `id` (a use by its owner counts as recent).
    pub fn check(&self, id: &str, caller: &Principal) -> SessionCheck {
        let mut t = self.table.lock().expect("session bindings lock");
        t.clock += 1;
        let now = t.clock;
        match t.owners.get_mut(id) {
            None => SessionCheck::Unknown,
            Some((owner, used)) if owner.is(caller) => {
                *used = now;
                SessionCheck::Owner
            }
            Some(_) => SessionCheck::Foreign,
        }
    }

    /// Forgets session `id`.
    pub fn unbind(&self, id: &str) {
        self.table
            .lock()
            .expect("session bindings lock")
            .owners
            .remove(id);
    }

    /// Sessions bound.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .expect("session bindings lock")
            .owners
            .len()
    }

    /// Whether no session is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
