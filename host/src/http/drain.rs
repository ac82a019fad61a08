//! Graceful shutdown: the `/mcp` POST requests still being answered, so the
//! host can let them finish before it closes the MCP sessions, and cut off the
//! plugin calls of those still running when its grace period ends.
//!
//! A request counts from when it enters until its response body has been
//! delivered or dropped (the ticket rides in the body wrapper of
//! [`super::disconnect`]). Long-lived `GET` event streams do not count: they
//! never finish on their own, and closing them is what shutdown does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The count of requests in flight.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Inner>);

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
    cut_off: CancellationToken,
}

/// One request in flight; dropping it ends it.
pub struct Ticket(Arc<Inner>);

impl InFlight {
    /// Counts a request until the ticket is dropped.
    pub fn enter(&self) -> Ticket {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        Ticket(self.0.clone())
    }

    /// Requests in flight now.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::SeqCst)
    }

    /// Cancelled by [`InFlight::cut_off`]: the plugin call of a request
    /// holding it stops, and is answered and audited as cut off by shutdown.
    pub fn cut_off_token(&self) -> CancellationToken {
        self.0.cut_off.clone()
    }

    /// Stops the plugin calls of the requests in flight (shutdown's grace
    /// period is over); their answers still go out.
    pub fn cut_off(&self) {
        self.0.cut_off.cancel();
    }

    /// Returns once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_ticket() {
        let f = InFlight::default();
        f.idle().await;
        let (a, b) = (f.enter(), f.enter());
        assert_eq!(f.count(), 2);
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.count(), 0);
    }
}
