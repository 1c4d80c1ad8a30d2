//! A bound on calls or requests running at once with a bounded FIFO queue in front of it: a
//! newcomer over the bound waits in arrival order for at most the queue wait, and past the queue's
//! bound or the wait it is refused (the HTTP hosts' fast `503`, the gRPC producer's
//! `RESOURCE_EXHAUSTED`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One bound on requests running at once, with a bounded FIFO queue in front of it (the host's
/// bound and each component's share of it; the gRPC producer's calls).
pub struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Requests waiting for a place now.
    queued: AtomicUsize,
    max_queued: usize,
    queue_wait: Duration,
}

impl Admission {
    pub fn new(max_in_flight: usize, max_queued: usize, queue_wait: Duration) -> Self {
        Self { in_flight: Arc::new(Semaphore::new(max_in_flight)), max_in_flight, queued: AtomicUsize::new(0), max_queued, queue_wait }
    }

    /// A place at once, if one is free.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// A place at once if one is free, else after waiting in arrival order (tokio's semaphore is
    /// fair) for at most the queue wait, if fewer than `max_queued` already wait. `None`: the
    /// request gets the fast `503`. Reports how long it waited.
    pub async fn enter(&self) -> (Option<OwnedSemaphorePermit>, Duration) {
        if let Some(permit) = self.try_enter() {
            return (Some(permit), Duration::ZERO);
        }
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_queued || self.queue_wait.is_zero() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return (None, Duration::ZERO);
        }
        let started = Instant::now();
        let permit = tokio::time::timeout(self.queue_wait, self.in_flight.clone().acquire_owned()).await.ok().and_then(Result::ok);
        self.queued.fetch_sub(1, Ordering::AcqRel);
        (permit, started.elapsed())
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Requests holding a place now.
    pub fn running(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_waiter_gets_a_freed_place() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
        let held = admission.try_enter().expect("a free place");
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.enter().await }
        });
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let (refused, waited) = admission.enter().await;
        assert!(refused.is_none() && waited == Duration::ZERO, "the queue of 1 is full: refused at once");
        drop(held);
        let (place, _) = waiter.await.unwrap();
        assert!(place.is_some(), "the waiter gets the freed place");
        assert_eq!((admission.queued(), admission.running()), (0, 1));
    }

    #[tokio::test]
    async fn a_waiter_is_refused_after_the_queue_wait() {
        let admission = Admission::new(1, 4, Duration::from_millis(50));
        let _held = admission.try_enter().expect("a free place");
        let (place, waited) = admission.enter().await;
        assert!(place.is_none() && waited >= Duration::from_millis(50), "refused after the wait: {waited:?}");
        assert_eq!(admission.queued(), 0);
    }
}
