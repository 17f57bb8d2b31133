//! The burst gate: how many workers pipelined bursts may occupy at once.
//!
//! A connection that has worked through pipelined requests for a whole
//! fair slice without waiting for input is *bursting*. Each of its further
//! requests runs only while it holds one of the gate's permits, and there
//! are one fewer permits than runtime workers (at least one). So however
//! many connections flood the server with pipelined requests, one worker
//! is always left for connections that send a request and wait for its
//! reply: a flood slows other floods, not the interactive clients.
//!
//! Invariant: a permit is held only while its connection computes. Any
//! wait (for input, for the socket to take replies, for a write's fsync)
//! gives it back first, so a bursting client that stops reading or
//! sending cannot hold the gate shut.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits; shared by every connection of a server.
pub(crate) struct BurstGate {
    permits: Arc<Semaphore>,
}

impl BurstGate {
    /// A gate for a runtime of `workers` workers.
    pub(crate) fn new(workers: usize) -> BurstGate {
        BurstGate {
            permits: Arc::new(Semaphore::new(workers.saturating_sub(1).max(1))),
        }
    }

    /// Waits for a permit; others get theirs in the order they asked.
    pub(crate) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this is always `Some`.
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// Runs `fut`; the first time it has to wait, `permit` is given back.
/// Also returns whether it waited.
pub(crate) async fn releasing_on_wait<F: Future>(
    fut: F,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> (F::Output, bool) {
    let mut fut = std::pin::pin!(fut);
    let mut waited = false;
    let output = std::future::poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        if poll.is_pending() {
            waited = true;
            permit.take();
        }
        poll
    })
    .await;
    (output, waited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_one_worker_to_interactive_clients() {
        assert_eq!(BurstGate::new(1).permits.available_permits(), 1);
        assert_eq!(BurstGate::new(2).permits.available_permits(), 1);
        assert_eq!(BurstGate::new(8).permits.available_permits(), 7);
    }

    #[tokio::test]
    async fn a_wait_gives_the_permit_back() {
        let gate = BurstGate::new(2);
        let mut permit = gate.enter().await;
        let ((), waited) = releasing_on_wait(async {}, &mut permit).await;
        assert!(
            permit.is_some() && !waited,
            "a ready future keeps the permit"
        );
        let ((), waited) = releasing_on_wait(tokio::task::yield_now(), &mut permit).await;
        assert!(permit.is_none() && waited, "a pending future releases it");
        assert_eq!(gate.permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_second_burst_waits_for_the_first() {
        let gate = BurstGate::new(2);
        let first = gate.enter().await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), gate.enter());
        assert!(second.await.is_err(), "the gate let two bursts in");
        drop(first);
        assert!(gate.enter().await.is_some());
    }
}
