//! Instance reuse, opt-in per component (`instance_reuse` in its manifest entry): an instance that
//! answered a request without trapping waits here, idle, to serve the next request of the same
//! component version, up to a number of requests. It weakens isolation (a request can see what an
//! earlier one left in the instance's memory), so it is off by default, and an instance whose
//! request trapped, ran out of time or was cut off is dropped, never put back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use wasmtime::Store;
use crate::entry::Bound;
use crate::runtime::HostState;

/// The most idle instances one component version keeps (what `wasmtime serve` and Spin keep busy
/// at once per instance, 16, is the same order): each holds a slot of the instance pool.
pub const MAX_IDLE: usize = 16;

/// An instance that served `served` requests and may serve more.
pub struct Warm {
    pub store: Store<HostState>,
    pub instance: Bound,
    pub served: u32,
}

/// What an idle pool keeps: something that says how many requests it served.
pub trait Reusable {
    fn served(&self) -> u32;
}

impl Reusable for Warm {
    fn served(&self) -> u32 {
        self.served
    }
}

/// The idle instances of one component version, last returned first (its memory is the most
/// likely still in cache).
pub struct IdleInstances<T: Reusable = Warm> {
    idle: Mutex<Vec<T>>,
    max_idle: usize,
    /// Set while the version does not serve (replaced by a deploy): nothing is kept.
    retired: AtomicBool,
}

impl<T: Reusable> IdleInstances<T> {
    /// A pool keeping at most `max_idle` instances.
    pub fn new(max_idle: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), max_idle, retired: AtomicBool::new(false) }
    }

    /// An idle instance, if one waits.
    pub fn take(&self) -> Option<T> {
        self.idle.lock().expect("idle instances lock").pop()
    }

    /// Keeps `warm` for a later request if it has served fewer than `max_requests`, there is
    /// room and its version still serves; otherwise it is dropped (its slot goes back to the
    /// instance pool).
    pub fn give_back(&self, warm: T, max_requests: u32) {
        if warm.served() >= max_requests {
            return;
        }
        let mut idle = self.idle.lock().expect("idle instances lock");
        if idle.len() < self.max_idle && !self.retired.load(Ordering::Acquire) {
            idle.push(warm);
        }
    }

    /// The version stopped serving: drops every idle instance (their slots go back to the pool)
    /// and keeps none returned later by requests still running on it.
    pub fn retire(&self) {
        let mut idle = self.idle.lock().expect("idle instances lock");
        self.retired.store(true, Ordering::Release);
        let drained: Vec<T> = std::mem::take(&mut *idle);
        drop(idle);
        drop(drained);
    }

    /// The version serves again (a rollback): its instances may be kept again.
    pub fn serve(&self) {
        self.retired.store(false, Ordering::Release);
    }

    /// How many instances wait.
    pub fn len(&self) -> usize {
        self.idle.lock().expect("idle instances lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Reusable> Default for IdleInstances<T> {
    fn default() -> Self {
        Self::new(MAX_IDLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for an instance that served this many requests.
    struct Served(u32);

    impl Reusable for Served {
        fn served(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn keeps_at_most_max_idle_and_drops_the_rest() {
        let idle = IdleInstances::<Served>::default();
        for _ in 0..MAX_IDLE + 5 {
            idle.give_back(Served(1), 128);
        }
        assert_eq!(idle.len(), MAX_IDLE, "the idle instances stop at their bound");
        assert!(idle.take().is_some());
        idle.give_back(Served(1), 128);
        assert_eq!(idle.len(), MAX_IDLE, "a place freed by a take is taken again, no more");
    }

    #[test]
    fn drops_an_instance_that_served_its_requests() {
        let idle = IdleInstances::<Served>::default();
        idle.give_back(Served(128), 128);
        idle.give_back(Served(127), 128);
        assert_eq!(idle.take().map(|s| s.0), Some(127), "only the one that may serve again is kept");
        assert!(idle.is_empty());
    }

    #[test]
    fn a_retired_version_keeps_nothing_until_it_serves_again() {
        let idle = IdleInstances::<Served>::default();
        idle.give_back(Served(1), 128);
        idle.retire();
        assert!(idle.is_empty(), "retiring drops the idle instances");
        idle.give_back(Served(1), 128);
        assert!(idle.is_empty(), "a request still running on a retired version does not give its instance back");
        idle.serve();
        idle.give_back(Served(1), 128);
        assert_eq!(idle.len(), 1);
    }
}
