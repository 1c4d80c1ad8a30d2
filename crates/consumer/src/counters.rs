//! Redis live counters, idempotent per vote id: the contract with the Grafana dashboard.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use vote_core::proto::VoteEvent;

/// Hash band -> count.
pub const BANDS_KEY: &str = "votes:bands";
/// Hash `band|album` -> count.
pub const ALBUMS_KEY: &str = "votes:albums";
/// Hash path (`wasm`, `grpc`) -> count.
pub const PATHS_KEY: &str = "votes:paths";
/// Counter of all votes.
pub const TOTAL_KEY: &str = "votes:total";
/// List of the latest votes, newest first, as JSON.
pub const RECENT_KEY: &str = "votes:recent";
/// Prefix of the per-vote marker that makes counting idempotent.
pub const SEEN_PREFIX: &str = "votes:seen:";
/// How many votes `votes:recent` keeps.
pub const RECENT_LEN: usize = 100;
/// How long a vote id is remembered; redeliveries come far sooner (Kafka keeps 7 days by default).
pub const DEFAULT_SEEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Counts each vote whose id has not been seen; returns how many were new. Runs atomically in
/// Redis, so a crash leaves either the whole batch counted or none of it.
const COUNT_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[1])
local recent_len = tonumber(ARGV[2])
local counted = 0
for i = 3, #ARGV, 5 do
  if redis.call('SET', KEYS[6] .. ARGV[i], '1', 'NX', 'EX', ttl) then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    redis.call('HINCRBY', KEYS[3], ARGV[i + 3], 1)
    redis.call('INCR', KEYS[4])
    redis.call('LPUSH', KEYS[5], ARGV[i + 4])
    counted = counted + 1
  end
end
if counted > 0 then
  redis.call('LTRIM', KEYS[5], 0, recent_len - 1)
end
return counted
"#;

/// The `votes:albums` field for a band and album.
pub fn album_field(band: &str, album: &str) -> String {
    format!("{band}|{album}")
}

/// The JSON kept in `votes:recent` for one vote.
pub fn recent_entry(event: &VoteEvent) -> String {
    serde_json::json!({
        "vote_id": event.vote_id,
        "name": event.name,
        "album": event.album,
        "year": event.year,
        "rank": event.rank,
        "path": event.path,
        "received_at_ms": event.received_at_ms,
    })
    .to_string()
}

/// Writes batches of votes to the Redis counters.
#[derive(Clone)]
pub struct Counters {
    connection: MultiplexedConnection,
    script: redis::Script,
    seen_ttl: Duration,
}

impl Counters {
    pub async fn connect(url: &str, seen_ttl: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let connection = client.get_multiplexed_async_connection().await?;
        Ok(Self { connection, script: redis::Script::new(COUNT_SCRIPT), seen_ttl })
    }

    /// Counts the votes not counted before; returns how many were new.
    pub async fn count(&self, events: &[VoteEvent]) -> redis::RedisResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.key(BANDS_KEY).key(ALBUMS_KEY).key(PATHS_KEY).key(TOTAL_KEY).key(RECENT_KEY).key(SEEN_PREFIX);
        invocation.arg(self.seen_ttl.as_secs().max(1)).arg(RECENT_LEN);
        for event in events {
            invocation
                .arg(&event.vote_id)
                .arg(&event.name)
                .arg(album_field(&event.name, &event.album))
                .arg(&event.path)
                .arg(recent_entry(event));
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }
}
