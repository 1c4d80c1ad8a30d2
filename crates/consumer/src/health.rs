//! The consumer's health: live while the process serves (`/livez`); ready (`/readyz`) unless it
//! is still connecting, is blocked by a store (full, damaged, a recount), has lag but wrote nothing
//! for a while, or cannot reach a store. Notices (durability, resets, rewinds) ride along.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

/// The stores the consumer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Redis,
    MongoDb,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Redis => "redis",
            Store::MongoDb => "mongodb",
        }
    }
}

#[derive(Debug)]
struct State {
    /// When the last batch was written and committed.
    last_progress: Instant,
    /// Messages behind, from the last lag refresh.
    lag: i64,
    /// Since when the lag has been above zero.
    lag_since: Option<Instant>,
    redis_down_since: Option<Instant>,
    mongo_down_since: Option<Instant>,
    /// Not ready at all yet (still connecting to the stores), with why.
    starting: Option<String>,
    /// What keeps batches from being written right now (Redis full, damaged counters, a recount).
    blocked: Option<String>,
    /// What an operator should know, newest last, at most [`MAX_NOTICES`].
    notices: Vec<String>,
    /// RabbitMQ streams whose node does not answer: since when, and why.
    streams_down: std::collections::BTreeMap<String, (Instant, String)>,
    /// Messages behind on partitions no live member consumes, and since when none moved.
    orphaned: Option<(i64, Instant)>,
}

/// The most notices kept; older ones are dropped first.
pub const MAX_NOTICES: usize = 16;

/// Shared between the batch loop, the monitor and `/healthz`.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
    /// How long a stall or an unreachable store is tolerated before `/healthz` says so.
    stall_after: Duration,
}

impl Health {
    pub fn new(stall_after: Duration) -> Self {
        let state = State { last_progress: Instant::now(), lag: 0, lag_since: None, redis_down_since: None, mongo_down_since: None, starting: Some("connecting to the stores".to_owned()), blocked: None, notices: Vec::new(), streams_down: Default::default(), orphaned: None };
        Self { state: Arc::new(Mutex::new(state)), stall_after }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch was written to both stores and committed.
    pub fn progressed(&self) {
        let mut state = self.state();
        state.last_progress = Instant::now();
        state.blocked = None;
    }

    /// Still starting (`Some(why)`), or started (`None`).
    pub fn starting(&self, why: Option<String>) {
        self.state().starting = why;
    }

    /// Batches cannot be written, and why (`None` once they can).
    pub fn blocked(&self, why: Option<String>) {
        self.state().blocked = why;
    }

    /// Records something an operator should know (kept until the process ends, bounded).
    pub fn notice(&self, notice: String) {
        let mut state = self.state();
        if state.notices.contains(&notice) {
            return;
        }
        if state.notices.len() >= MAX_NOTICES {
            state.notices.remove(0);
        }
        state.notices.push(notice);
    }

    /// The notices so far.
    pub fn notices(&self) -> Vec<String> {
        self.state().notices.clone()
    }

    /// The latest total lag over the assigned partitions.
    pub fn set_lag(&self, lag: i64) {
        let mut state = self.state();
        state.lag = lag;
        if lag <= 0 {
            state.lag_since = None;
        } else if state.lag_since.is_none() {
            state.lag_since = Some(Instant::now());
        }
    }

    /// How long a stall is tolerated before `/healthz` says so.
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    /// Messages behind on partitions of the group that this member does not own and whose
    /// committed offsets have not moved since `since` (`None`: there are none).
    pub fn set_orphaned(&self, orphaned: Option<(i64, Instant)>) {
        self.state().orphaned = orphaned;
    }

    /// Whether a store answered its last probe (or write).
    pub fn store_reachable(&self, store: Store, reachable: bool) {
        let mut state = self.state();
        let since = match store {
            Store::Redis => &mut state.redis_down_since,
            Store::MongoDb => &mut state.mongo_down_since,
        };
        match (reachable, since.is_some()) {
            (true, _) => *since = None,
            (false, false) => *since = Some(Instant::now()),
            (false, true) => {}
        }
    }

    /// Whether the RabbitMQ node of `stream` answers (`None`), or why not: a stream that cannot be
    /// read for the stall time makes the consumer unready.
    pub fn stream_reachable(&self, stream: &str, down: Option<String>) {
        let mut state = self.state();
        match down {
            None => {
                state.streams_down.remove(stream);
            }
            Some(why) => {
                let since = state.streams_down.get(stream).map_or_else(Instant::now, |(since, _)| *since);
                state.streams_down.insert(stream.to_owned(), (since, why));
            }
        }
    }

    /// `Ok` while healthy, else the reason.
    pub fn verdict(&self) -> Result<(), String> {
        let state = self.state();
        if let Some(why) = &state.starting {
            return Err(format!("starting: {why}"));
        }
        if let Some(why) = &state.blocked {
            return Err(format!("blocked: {why}"));
        }
        let now = Instant::now();
        for (store, since) in [(Store::Redis, state.redis_down_since), (Store::MongoDb, state.mongo_down_since)] {
            if let Some(since) = since.filter(|since| now - *since >= self.stall_after) {
                return Err(format!("cannot reach {} for {}s", store.label(), (now - since).as_secs()));
            }
        }
        if let Some((stream, (since, why))) = state.streams_down.iter().find(|(_, (since, _))| now - *since >= self.stall_after) {
            return Err(format!("cannot read rabbitmq stream {stream} for {}s: {why}", (now - *since).as_secs()));
        }
        if let Some((lag, since)) = state.orphaned.filter(|(_, since)| now - *since >= self.stall_after) {
            return Err(format!("{lag} messages behind on partitions no member has consumed for {}s (rejoining the group)", (now - since).as_secs()));
        }
        if let Some(lag_since) = state.lag_since {
            let stalled_for = now - state.last_progress.max(lag_since);
            if stalled_for >= self.stall_after {
                return Err(format!("{} messages behind and no batch written for {}s", state.lag, stalled_for.as_secs()));
            }
        }
        Ok(())
    }

    /// The `/readyz` (and `/healthz`) answer: `200 ok`, or `503` with the reason; then one line
    /// per notice.
    pub fn answer(&self) -> (StatusCode, String) {
        let (status, mut body) = match self.verdict() {
            Ok(()) => (StatusCode::OK, "ok".to_owned()),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {reason}")),
        };
        for notice in self.notices() {
            body.push_str("\nnotice: ");
            body.push_str(&notice);
        }
        (status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(stall_after: Duration) -> Health {
        let health = Health::new(stall_after);
        health.starting(None);
        health
    }

    #[test]
    fn not_ready_while_starting_or_blocked_and_notices_are_bounded() {
        let health = Health::new(Duration::from_secs(60));
        assert!(health.verdict().unwrap_err().contains("starting"));
        health.starting(None);
        health.blocked(Some("redis is full".into()));
        assert!(health.answer().1.contains("redis is full"));
        health.progressed();
        assert!(health.verdict().is_ok());
        for i in 0..40 {
            health.notice(format!("notice {i}"));
        }
        assert_eq!(health.notices().len(), MAX_NOTICES);
        assert!(health.answer().1.ends_with("notice: notice 39"));
    }

    #[test]
    fn lag_without_progress_turns_unhealthy_after_the_bound() {
        let health = started(Duration::from_millis(50));
        health.set_lag(10);
        assert!(health.verdict().is_ok(), "a fresh lag is not a stall");
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.verdict().unwrap_err().contains("10 messages behind"));
        health.progressed();
        assert!(health.verdict().is_ok());
        health.set_lag(0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.verdict().is_ok(), "idle without lag is healthy");
    }

    #[test]
    fn unconsumed_partitions_of_the_group_turn_unhealthy_after_the_bound() {
        let health = started(Duration::from_millis(50));
        health.set_orphaned(Some((500, Instant::now())));
        assert!(health.verdict().is_ok(), "a fresh standstill is not a stall");
        health.set_orphaned(Some((500, Instant::now() - Duration::from_millis(60))));
        assert!(health.verdict().unwrap_err().contains("500 messages behind on partitions no member has consumed"));
        health.set_orphaned(None);
        assert!(health.verdict().is_ok());
    }

    #[test]
    fn an_unreachable_store_turns_unhealthy_after_the_bound() {
        let health = started(Duration::from_millis(50));
        health.store_reachable(Store::MongoDb, false);
        assert!(health.verdict().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.verdict().unwrap_err().contains("mongodb"));
        health.store_reachable(Store::MongoDb, true);
        assert!(health.verdict().is_ok());
    }
}
