use std::time::Duration;

use super::*;

async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn cancelled_waiters_give_their_place_back() {
    let gate = ConcurrencyGate::new(1, 2);
    let running = gate.enter().await.unwrap();
    // Far more rounds of queue-and-cancel than the queue has places.
    for _ in 0..7 {
        let a = tokio::spawn({
            let g = gate.clone();
            async move { g.enter().await.map(drop) }
        });
        let b = tokio::spawn({
            let g = gate.clone();
            async move { g.enter().await.map(drop) }
        });
        settle().await;
        assert_eq!(gate.waiting(), 2);
        a.abort();
        b.abort();
        let _ = a.await;
        let _ = b.await;
        assert_eq!(gate.waiting(), 0, "a cancelled waiter kept its place");
    }
    // A call that has to wait still gets in once the running one finishes.
    let waiter = tokio::spawn({
        let g = gate.clone();
        async move { g.enter().await }
    });
    settle().await;
    drop(running);
    let slot = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("admitted")
        .unwrap();
    assert!(slot.is_ok());
    assert_eq!(gate.running(), 1);
    drop(slot);
    assert_eq!(gate.running(), 0);
}

#[tokio::test]
async fn a_full_queue_refuses_and_order_is_first_come() {
    let gate = ConcurrencyGate::new(1, 1);
    let first = gate.enter().await.unwrap();
    let queued = tokio::spawn({
        let g = gate.clone();
        async move { g.enter().await }
    });
    settle().await;
    assert_eq!(gate.enter().await.unwrap_err(), Full);
    drop(first);
    let slot = queued.await.unwrap().unwrap();
    assert_eq!(gate.running(), 1);
    drop(slot);
}

/// Issue 23: first come, first served with several waiters (one waiter
/// cannot tell a queue from a stack): five calls queued in a known order are
/// admitted in exactly that order, one per freed slot, whatever order they
/// are polled in.
#[tokio::test]
async fn several_waiters_are_admitted_in_the_order_they_queued() {
    let gate = ConcurrencyGate::new(1, 8);
    let mut running = gate.enter().await.unwrap();
    let mut queue: Vec<_> = (0..5).map(|_| Some(Box::pin(gate.enter()))).collect();
    // Each polled once, front to back: queued in that order.
    for waiter in queue.iter_mut().flatten() {
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
    }
    assert_eq!(gate.waiting(), 5);
    let mut admitted = Vec::new();
    for _ in 0..5 {
        drop(running);
        // Polled back to front, so the order found is the gate's own.
        let mut now = Vec::new();
        for (i, place) in queue.iter_mut().enumerate().rev() {
            let Some(waiter) = place else { continue };
            if let std::task::Poll::Ready(slot) = futures_util::poll!(waiter.as_mut()) {
                now.push((i, slot.expect("admitted, not refused")));
                *place = None;
            }
        }
        let which: Vec<usize> = now.iter().map(|(i, _)| *i).collect();
        assert_eq!(which.len(), 1, "one slot freed, admitted: {which:?}");
        let (i, slot) = now.pop().unwrap();
        admitted.push(i);
        assert_eq!(gate.running(), 1);
        running = slot;
    }
    assert_eq!(admitted, [0, 1, 2, 3, 4], "admitted in queue order");
    assert_eq!(gate.waiting(), 0);
    drop(running);
    assert_eq!(gate.running(), 0);
}

#[tokio::test]
async fn a_slot_granted_to_a_waiter_that_is_dropped_is_handed_on() {
    let gate = ConcurrencyGate::new(1, 4);
    let first = gate.enter().await.unwrap();
    let mut doomed = Box::pin(gate.enter());
    // Poll once so it queues, then grant it a slot it never collects.
    assert!(futures_util::poll!(doomed.as_mut()).is_pending());
    drop(first);
    drop(doomed);
    assert_eq!(gate.running(), 0, "the granted slot leaked");
    assert!(gate.enter().await.is_ok());
}

#[tokio::test]
async fn resizing_keeps_counting_running_calls() {
    let gates = Gates::default();
    let g = gates.get("p", 1, 0);
    let a = g.enter().await.unwrap();
    // A reload with the same limits returns the same gate: still full.
    let g2 = gates.get("p", 1, 0);
    assert!(Arc::ptr_eq(&g, &g2));
    assert_eq!(g2.enter().await.unwrap_err(), Full);
    // Growing the cap admits more at once.
    let g3 = gates.get("p", 2, 0);
    let b = g3.enter().await.unwrap();
    assert_eq!(g.running(), 2);
    drop((a, b));
    assert_eq!(g.running(), 0);
}
