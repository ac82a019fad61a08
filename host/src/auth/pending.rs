//! Login forms waiting to be submitted, by CSRF token, with a share per client
//! address.
//!
//! Every `GET /authorize` that shows the login page stores one form for
//! [`FORM_TTL`]. Without shares one address could fill the table and lock
//! everyone out, so each address holds at most `per_address` forms (its oldest
//! is dropped for a new one), and when the whole table is full the oldest form
//! of the address holding the most makes room. Someone flooding from one
//! address only ever evicts their own forms.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login form stays valid.
pub const FORM_TTL: Duration = Duration::from_secs(600);
/// Forms held at once, all addresses together.
pub const MAX_PENDING: usize = 10_000;
/// Forms one client address may hold at once.
pub const MAX_PENDING_PER_ADDRESS: usize = 16;

struct Form<T> {
    created: Instant,
    addr: String,
    value: T,
}

struct Table<T> {
    forms: HashMap<String, Form<T>>,
    /// Each address's CSRF tokens, oldest first.
    by_addr: HashMap<String, VecDeque<String>>,
}

/// The pending forms (`T` is what a form carries).
pub struct PendingForms<T> {
    total: usize,
    per_address: usize,
    table: Mutex<Table<T>>,
}

impl<T> Default for PendingForms<T> {
    fn default() -> Self {
        Self::with_limits(MAX_PENDING, MAX_PENDING_PER_ADDRESS)
    }
}

impl<T> PendingForms<T> {
    /// A table of at most `total` forms, `per_address` per address (both ≥ 1).
    pub fn with_limits(total: usize, per_address: usize) -> Self {
        PendingForms {
            total: total.max(1),
            per_address: per_address.max(1),
            table: Mutex::new(Table {
                forms: HashMap::new(),
                by_addr: HashMap::new(),
            }),
        }
    }

    /// Stores `value` for a form shown to `addr`; returns its CSRF token.
    /// Always succeeds: room is made by evicting as described above.
    pub fn insert(&self, addr: &str, value: T) -> String {
        let csrf = super::random_token();
        let mut t = self.table.lock().expect("pending forms lock");
        if t.by_addr
            .get(addr)
            .is_some_and(|q| q.len() >= self.per_address)
        {
            t.evict_oldest_of(addr);
        }
        if t.forms.len() >= self.total {
            t.sweep(Instant::now());
        }
        if t.forms.len() >= self.total
            && let Some(busiest) = t
                .by_addr
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(a, _)| a.clone())
        {
            t.evict_oldest_of(&busiest);
        }
        t.by_addr
            .entry(addr.to_owned())
            .or_default()
            .push_back(csrf.clone());
        t.forms.insert(
            csrf.clone(),
            Form {
                created: Instant::now(),
                addr: addr.to_owned(),
                value,
            },
        );
        csrf
    }

    /// Takes the form `csrf` names (single use); `None` when unknown, evicted or
    /// older than [`FORM_TTL`].
    pub fn take(&self, csrf: &str) -> Option<T> {
        let mut t = self.table.lock().expect("pending forms lock");
        let form = t.forms.remove(csrf)?;
        t.forget(&form.addr, csrf);
        (form.created.elapsed() < FORM_TTL).then_some(form.value)
    }

    /// Drops expired forms; returns how many.
    pub fn sweep(&self) -> usize {
        self.table
            .lock()
            .expect("pending forms lock")
            .sweep(Instant::now())
    }

    /// Forms held (tests).
    pub fn len(&self) -> usize {
        self.table.lock().expect("pending forms lock").forms.len()
    }

    /// Whether no form is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Table<T> {
    fn evict_oldest_of(&mut self, addr: &str) {
        let oldest = self.by_addr.get_mut(addr).and_then(VecDeque::pop_front);
        if let Some(csrf) = oldest {
            self.forms.remove(&csrf);
        }
        if self.by_addr.get(addr).is_some_and(VecDeque::is_empty) {
            self.by_addr.remove(addr);
        }
    }

    fn forget(&mut self, addr: &str, csrf: &str) {
        if let Some(q) = self.by_addr.get_mut(addr) {
            q.retain(|c| c != csrf);
            if q.is_empty() {
                self.by_addr.remove(addr);
            }
        }
    }

    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.forms.len();
        self.forms
            .retain(|_, f| now.saturating_duration_since(f.created) < FORM_TTL);
        let forms = &self.forms;
        self.by_addr.retain(|_, q| {
            q.retain(|c| forms.contains_key(c));
            !q.is_empty()
        });
        before - self.forms.len()
    }
}

#[cfg(test)]
#[path = "pending_tests.rs"]
mod tests;
