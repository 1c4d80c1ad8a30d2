//! Redis live counters, exact per Kafka offset and per vote id, written by one atomic script.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use vote_core::proto::VoteEvent;

use crate::album::encode_album_field;
use crate::keys;

/// How long a vote id is remembered. The applied offsets already make a replay of any age exact;
/// the markers catch a client retry under one idempotency key, which reaches another offset.
pub const DEFAULT_SEEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Counts a batch atomically. All keys come in KEYS (Redis Cluster: one `{votes}` slot):
/// KEYS 1..6 = bands, albums, paths, total, recent, applied; KEYS[6 + v] = the seen marker of
/// vote v. ARGV 1 = marker ttl, 2 = recent length, then 6 per vote: applied field, offset, band,
/// album field, path, recent entry. Phase 1 validates and decides without writing, so an error
/// can never leave a vote marked seen but not counted; phase 2 writes.
const COUNT_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[1])
local recent_len = tonumber(ARGV[2])
local expected = {'hash', 'hash', 'hash', 'string', 'list', 'hash'}
for k = 1, 6 do
  local found = redis.call('TYPE', KEYS[k]).ok
  if found ~= 'none' and found ~= expected[k] then
    return redis.error_reply('STORE key ' .. KEYS[k] .. ' holds a ' .. found .. ', expected a ' .. expected[k])
  end
end
local total = redis.call('GET', KEYS[4])
if total and not tonumber(total) then
  return redis.error_reply('STORE key ' .. KEYS[4] .. ' does not hold an integer')
end
local function is_count(hash, field)
  local value = redis.call('HGET', hash, field)
  return (not value) or (tonumber(value) ~= nil and math.floor(tonumber(value)) == tonumber(value))
end
local applied, touched, marked, apply = {}, {}, {}, {}
local votes = (#ARGV - 2) / 6
for v = 1, votes do
  local a = 2 + (v - 1) * 6
  local field, offset = ARGV[a + 1], tonumber(ARGV[a + 2])
  if applied[field] == nil then
    local stored = redis.call('HGET', KEYS[6], field)
    if stored and not tonumber(stored) then
      return redis.error_reply('STORE field ' .. field .. ' of ' .. KEYS[6] .. ' is not an offset')
    end
    applied[field] = tonumber(stored or '-1')
  end
  if offset > applied[field] then
    applied[field] = offset
    touched[field] = true
    local marker = KEYS[6 + v]
    if not marked[marker] and redis.call('EXISTS', marker) == 0 then
      for i, hash in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
        if not is_count(hash, ARGV[a + 2 + i]) then
          return redis.error_reply('VOTE ' .. v .. ' field ' .. ARGV[a + 2 + i] .. ' of ' .. hash .. ' is not a count')
        end
      end
      marked[marker] = true
      apply[#apply + 1] = v
    end
  end
end
for _, v in ipairs(apply) do
  local a = 2 + (v - 1) * 6
  redis.call('HINCRBY', KEYS[1], ARGV[a + 3], 1)
  redis.call('HINCRBY', KEYS[2], ARGV[a + 4], 1)
  redis.call('HINCRBY', KEYS[3], ARGV[a + 5], 1)
  redis.call('INCR', KEYS[4])
  redis.call('LPUSH', KEYS[5], ARGV[a + 6])
  redis.call('SET', KEYS[6 + v], '1', 'EX', ttl)
end
for field in pairs(touched) do
  redis.call('HSET', KEYS[6], field, applied[field])
end
if #apply > 0 then
  redis.call('LTRIM', KEYS[5], 0, recent_len - 1)
end
return apply
"#;

/// One vote with the Kafka position it was read from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
    pub event: VoteEvent,
}

/// What one [`Counters::count`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counted {
    /// Votes counted for the first time.
    pub counted: u64,
    /// Votes skipped: their offset was applied before, or their id was seen.
    pub skipped: u64,
    /// The indexes (into the batch) of the votes counted now.
    pub newly_counted: Vec<usize>,
}

/// Why a count did not happen; nothing of the batch was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// Redis could not be reached or answered in time: retry later.
    #[error("redis is unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// One vote of the batch cannot be counted (index into the batch): it will never work.
    #[error("vote {index} of the batch cannot be counted: {reason}")]
    Vote { index: usize, reason: String },
    /// The counters are not in the shape the script expects (for example a key of the wrong
    /// type); an operator has to fix Redis, retrying waits for that.
    #[error("the redis counters are damaged: {0}")]
    Store(String),
}

impl CountError {
    fn from_redis(error: redis::RedisError, votes: usize) -> Self {
        let detail = error.detail().unwrap_or_default().to_owned();
        match error.code() {
            Some("STORE") => Self::Store(detail),
            Some("VOTE") => {
                let (index, reason) = detail.split_once(' ').unwrap_or((&detail, ""));
                match index.parse::<usize>() {
                    Ok(index) if (1..=votes).contains(&index) => Self::Vote { index: index - 1, reason: reason.to_owned() },
                    _ => Self::Store(detail),
                }
            }
            Some("WRONGTYPE") => Self::Store(error.to_string()),
            _ => Self::Unavailable(error),
        }
    }
}

/// Why [`Counters::connect`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The server may evict keys, which would silently drop counts.
    #[error("redis maxmemory-policy is `{0}`, which may evict the vote counters; set `maxmemory-policy noeviction` (redis.conf or CONFIG SET)")]
    Eviction(String),
}

/// Writes batches of votes to the Redis counters over a connection that reconnects by itself.
#[derive(Clone)]
pub struct Counters {
    connection: ConnectionManager,
    script: redis::Script,
    seen_ttl: Duration,
}

impl Counters {
    /// Connects, and refuses a server whose eviction policy could drop counters.
    pub async fn connect(url: &str, seen_ttl: Duration) -> Result<Self, ConnectError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = ConnectionManager::new_with_config(client, config).await?;
        let policy = eviction_policy(&mut connection).await?;
        if policy != "noeviction" {
            return Err(ConnectError::Eviction(policy));
        }
        Ok(Self { connection, script: redis::Script::new(COUNT_SCRIPT), seen_ttl })
    }

    /// Whether Redis answers a `PING` now.
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }

    /// Counts the votes not counted before from `topic`; `votes` are in offset order per
    /// partition. Atomic: on any error nothing of the batch was written.
    pub async fn count(&self, topic: &str, votes: &[Delivery]) -> Result<Counted, CountError> {
        if votes.is_empty() {
            return Ok(Counted::default());
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(keys::BANDS)
            .key(keys::ALBUMS)
            .key(keys::PATHS)
            .key(keys::TOTAL)
            .key(keys::RECENT)
            .key(keys::APPLIED);
        invocation.arg(self.seen_ttl.as_secs().max(1)).arg(keys::RECENT_LEN);
        for vote in votes {
            let event = &vote.event;
            invocation.key(keys::seen(&event.vote_id));
            invocation
                .arg(keys::applied_field(topic, vote.partition))
                .arg(vote.offset)
                .arg(&event.name)
                .arg(encode_album_field(&event.name, &event.album))
                .arg(&event.path)
                .arg(recent_entry(event));
        }
        let mut connection = self.connection.clone();
        let applied: Vec<usize> =
            invocation.invoke_async(&mut connection).await.map_err(|e| CountError::from_redis(e, votes.len()))?;
        let newly_counted: Vec<usize> = applied.into_iter().filter_map(|v| v.checked_sub(1)).collect();
        let counted = newly_counted.len() as u64;
        Ok(Counted { counted, skipped: votes.len() as u64 - counted, newly_counted })
    }
}

/// `maxmemory-policy` from `CONFIG GET`, or from `INFO memory` where CONFIG is renamed away.
async fn eviction_policy(connection: &mut ConnectionManager) -> redis::RedisResult<String> {
    let config: redis::RedisResult<Vec<String>> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(connection).await;
    if let Ok(pair) = config {
        if let Some(policy) = pair.get(1) {
            return Ok(policy.clone());
        }
    }
    let info: String = redis::cmd("INFO").arg("memory").query_async(connection).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("maxmemory_policy:"))
        .map_or_else(|| "unknown".to_owned(), |policy| policy.trim().to_owned()))
}

/// The JSON kept in `{votes}:recent` for one vote.
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
