//! The per-plugin concurrency cap: at most `max_concurrent` calls run, at most
//! `max_queue` wait (first come, first served), the rest are refused.
//!
//! One [`ConcurrencyGate`] lives per plugin *name* for the life of the process
//! ([`Gates`]), so a config reload or a new version of the plugin keeps counting
//! the calls already running; new limits apply to the next admission. Every slot
//! and every queue place is held by a guard that gives it back on drop, so a call
//! that is cancelled (or whose client went away) while running or waiting never
//! leaks a slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The concurrency cap and queue of one plugin.
#[derive(Debug)]
pub struct ConcurrencyGate {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max_concurrent: usize,
    max_queue: usize,
    running: usize,
    next_ticket: u64,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// The gate is full and so is its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many concurrent calls")]
pub struct Full;

/// A running call's slot; dropping it lets the next waiting call in.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<ConcurrencyGate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.running -= 1;
        s.admit();
    }
}

/// A place in the queue; dropping it before admission gives the place back
/// (and a slot granted in the meantime, too).
struct Waiting {
    gate: Arc<ConcurrencyGate>,
    ticket: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return; // admitted: the slot belongs to a `Slot` now
        };
        let mut s = self.gate.lock();
        s.waiting.retain(|(t, _)| *t != self.ticket);
        // Granted between the send and this drop: hand the slot on.
        if rx.try_recv().is_ok() {
            s.running -= 1;
            s.admit();
        }
    }
}

impl State {
    /// Admits waiting calls while there is room. A waiter whose receiver is gone
    /// is skipped (its guard already left the queue or is about to).
    fn admit(&mut self) {
        while self.running < self.max_concurrent {
            let Some((_, tx)) = self.waiting.pop_front() else {
                break;
            };
            if tx.send(()).is_ok() {
                self.running += 1;
            }
        }
    }
}

impl ConcurrencyGate {
    /// A gate admitting `max_concurrent` calls with `max_queue` more waiting.
    pub fn new(max_concurrent: u32, max_queue: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                max_concurrent: max_concurrent as usize,
                max_queue: max_queue as usize,
                running: 0,
                next_ticket: 0,
                waiting: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies new limits. Calls running keep running; if the cap grew, waiting
    /// calls are admitted now; if it shrank, new calls wait until enough finish.
    pub fn resize(&self, max_concurrent: u32, max_queue: u32) {
        let mut s = self.lock();
        s.max_concurrent = max_concurrent as usize;
        s.max_queue = max_queue as usize;
        s.admit();
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Calls waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Waits for a slot: at once if one is free, after the calls ahead of it if
    /// the queue has room, else [`Full`]. Dropping the future gives up the place.
    pub async fn enter(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut waiting = {
            let mut s = self.lock();
            if s.running < s.max_concurrent && s.waiting.is_empty() {
                s.running += 1;
                return Ok(Slot { gate: self.clone() });
            }
            if s.waiting.len() >= s.max_queue {
                return Err(Full);
            }
            let (tx, rx) = oneshot::channel();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiting.push_back((ticket, tx));
            Waiting {
                gate: self.clone(),
                ticket,
                rx: Some(rx),
            }
        };
        let rx = waiting.rx.as_mut().expect("set above");
        match rx.await {
            Ok(()) => {
                waiting.rx = None;
                Ok(Slot { gate: self.clone() })
            }
            // The sender is only dropped by `admit` after a failed send or by
            // `retain` in our own drop; neither happens while we wait.
            Err(_) => Err(Full),
        }
    }
}

/// Every plugin's gate, by plugin name, for the life of the process.
#[derive(Debug, Default)]
pub struct Gates {
    by_name: Mutex<HashMap<String, Arc<ConcurrencyGate>>>,
}

impl Gates {
    /// The gate of plugin `name`, created on first use, with the given limits
    /// applied.
    pub fn get(&self, name: &str, max_concurrent: u32, max_queue: u32) -> Arc<ConcurrencyGate> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        // Forget gates nobody holds (plugins gone for good) so the map stays small.
        map.retain(|_, g| Arc::strong_count(g) > 1 || g.running() > 0);
        let gate = map
            .entry(name.to_owned())
            .or_insert_with(|| ConcurrencyGate::new(max_concurrent, max_queue))
            .clone();
        gate.resize(max_concurrent, max_queue);
        gate
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
