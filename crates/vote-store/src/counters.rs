//! Redis live counters, exact per Kafka offset and per idempotency key, written by one atomic
//! script (`count.lua`) over bounded aggregates: capped leaderboards, counters and capped lists.
//!
//! A batch names, for each partition it holds, the offsets it spans. The script refuses a batch
//! that starts past the applied offset (a gap: Redis lost writes, the caller re-reads from there)
//! and one that starts at or before it unless the caller verified the applied record is still in
//! the log (a replay of a recreated topic would otherwise be skipped in silence).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::keys;

/// How long an idempotency marker is kept: a retry under the same key within this long counts
/// once. Replays of the topic need no marker (the applied offsets make them exact at any age),
/// so only votes sent with a key have one.
pub const DEFAULT_SEEN_TTL: Duration = Duration::from_secs(3600);
/// The most members one leaderboard holds unless set otherwise.
pub const DEFAULT_RANK_CAP: u64 = 10_000;
/// How long every reader and writer of the counters waits for Redis to accept a connection.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long every reader and writer of the counters waits for one Redis reply: redis-rs's
/// default (500 ms) failed a bench on a busy two-core box.
pub const REDIS_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const COUNT_SCRIPT: &str = include_str!("count.lua");

/// Forgets the applied offset of one partition if it is still `ARGV[2]` (a recreated topic).
const RESYNC_SCRIPT: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

/// Turns counters written as hashes (before leaderboards) into sorted sets with the same counts.
const MIGRATE_SCRIPT: &str = r#"
local migrated = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'hash' then
    local fields = redis.call('HGETALL', key)
    local tmp = key .. ':migrating'
    redis.call('DEL', tmp)
    for i = 1, #fields, 2 do
      redis.call('ZADD', tmp, tonumber(fields[i + 1]) or 0, fields[i])
    end
    redis.call('DEL', key)
    if #fields > 0 then redis.call('RENAME', tmp, key) end
    migrated = migrated + 1
  end
end
return migrated
"#;

/// What an aggregate is, and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sorted set member -> count, with at most `cap` members; an event for a new member past
    /// the cap adds to the aggregate's overflow counter ([`keys::overflow`]) instead.
    Rank { cap: u64 },
    /// An integer counter.
    Add,
    /// A list of the latest entries, newest first, at most `len` long.
    List { len: u64 },
}

/// One aggregate of a workload: a key and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub key: String,
    pub kind: Kind,
}

/// One write an event makes to an aggregate: add `amount` to `member` (Rank), add `amount` (Add)
/// or push `member` (List).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Index into the workload's aggregates.
    pub aggregate: usize,
    pub member: String,
    pub amount: i64,
}

/// One event to count: where it was read, its idempotency marker (if it was sent with a key)
/// and its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub partition: i32,
    pub offset: i64,
    /// The marker key (for example [`keys::seen`]); an event with one counts once per marker.
    pub marker: Option<String>,
    pub ops: Vec<Op>,
}

/// What a batch holds of one partition: every record read, counted or not (dead letters too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub partition: i32,
    /// The first and last offset read.
    pub first: i64,
    pub last: i64,
    /// The [`fingerprint`] of the record at `last`.
    pub last_fingerprint: String,
    /// The batch may start past the applied offset if it starts past this (records between
    /// expired from the log); -1: no gap allowed.
    pub floor: i64,
    /// The applied offset the caller found still in the log (a redelivery, not a new topic).
    pub verified: Option<i64>,
}

impl Span {
    /// The span of records read from `partition` between `first` and `last`.
    pub fn new(partition: i32, first: i64, last: i64, last_fingerprint: String) -> Self {
        Self { partition, first, last, last_fingerprint, floor: -1, verified: None }
    }
}

/// What one [`Counters::count`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counted {
    /// Events counted for the first time.
    pub counted: u64,
    /// Events skipped: their offset was applied before, or their marker was set.
    pub skipped: u64,
    /// The indexes (into the batch) of the events counted now.
    pub newly_counted: Vec<usize>,
    /// Writes that went to an overflow counter because a leaderboard was full.
    pub overflowed: u64,
}

/// A partition whose batch does not follow what Redis applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub partition: i32,
    /// The applied offset (-1: none, and Redis never counted anything).
    pub applied: i64,
}

/// A partition whose batch starts at or before its applied offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub partition: i32,
    pub applied: i64,
    /// The fingerprint of the record at `applied`, when known.
    pub fingerprint: Option<String>,
}

/// Why a count did not happen; nothing of the batch was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// Redis could not be reached or answered in time: retry later.
    #[error("redis is unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// Redis is at its `maxmemory` and refuses writes (`noeviction`): retry once it has room.
    #[error("redis is full (maxmemory reached, noeviction): {0}")]
    Full(String),
    /// One event of the batch cannot be counted (index into the batch): it will never work.
    #[error("event {index} of the batch cannot be counted: {reason}")]
    Event { index: usize, reason: String },
    /// The counters are not in the shape the script expects (for example a key of the wrong
    /// type); an operator has to fix Redis, retrying waits for that.
    #[error("the redis counters are damaged: {0}")]
    Store(String),
    /// `votectl recount` is rebuilding the counters: retry once it is done.
    #[error("a recount is rebuilding the counters")]
    Recounting,
    /// Redis holds less than the batch follows: re-read these partitions from after their
    /// applied offset.
    #[error("redis is behind the batch on partitions {0:?}")]
    Gap(Vec<Behind>),
    /// The batch re-reads records at or before the applied offset: verify each partition's
    /// applied record against the log ([`Span::verified`]) or resynchronise it.
    #[error("the batch replays partitions {0:?}")]
    Replay(Vec<Replayed>),
}

impl CountError {
    fn from_redis(error: redis::RedisError, events: usize, spans: &[Span]) -> Self {
        let detail = error.detail().unwrap_or_default().to_owned();
        let partition = |index: &str| index.parse::<usize>().ok().and_then(|i| spans.get(i.checked_sub(1)?)).map(|s| s.partition);
        match error.code() {
            Some("STORE") | Some("WRONGTYPE") => Self::Store(if detail.is_empty() { error.to_string() } else { detail }),
            Some("RECOUNT") => Self::Recounting,
            Some("OOM") => Self::Full(error.to_string()),
            Some("EVENT") => {
                let (index, reason) = detail.split_once(' ').unwrap_or((&detail, ""));
                match index.parse::<usize>() {
                    Ok(index) if (1..=events).contains(&index) => Self::Event { index: index - 1, reason: reason.to_owned() },
                    _ => Self::Store(detail),
                }
            }
            Some("GAP") => Self::Gap(
                detail
                    .split(' ')
                    .filter_map(|item| {
                        let (index, applied) = item.split_once(':')?;
                        Some(Behind { partition: partition(index)?, applied: applied.parse().ok()? })
                    })
                    .collect(),
            ),
            Some("REPLAY") => Self::Replay(
                detail
                    .split(' ')
                    .filter_map(|item| {
                        let mut parts = item.splitn(3, ':');
                        let partition = partition(parts.next()?)?;
                        let applied = parts.next()?.parse().ok()?;
                        let fingerprint = parts.next().filter(|f| *f != "-").map(str::to_owned);
                        Some(Replayed { partition, applied, fingerprint })
                    })
                    .collect(),
            ),
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

/// What Redis keeps on disk and how much memory it may use, as read at connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// `appendonly yes`.
    pub append_only: bool,
    /// `appendfsync` (`always`, `everysec`, `no`).
    pub append_fsync: String,
    /// Whether RDB snapshots are configured (`save` not empty).
    pub snapshots: bool,
    /// `maxmemory` in bytes (0: no limit).
    pub max_memory: u64,
}

impl Durability {
    /// What an operator should know, one sentence each (shown in the consumer's health).
    pub fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        if !self.append_only && !self.snapshots {
            notices.push("redis keeps nothing on disk: after a restart the consumer recounts what Kafka still holds (votectl recount rebuilds from the logs)".to_owned());
        } else if !self.append_only {
            notices.push("redis only snapshots (no append-only file): a crash loses the counts since the last snapshot; the consumer re-reads them from Kafka".to_owned());
        } else if self.append_fsync != "always" {
            notices.push(format!("redis appendfsync is {}: a crash may lose the last writes; the consumer re-reads them from Kafka", self.append_fsync));
        }
        if self.max_memory == 0 {
            notices.push("redis has no maxmemory: it can grow until the kernel kills it; set maxmemory (noeviction) so it refuses writes instead".to_owned());
        }
        notices
    }
}

/// Writes batches of events to Redis aggregates over a connection that reconnects by itself.
#[derive(Clone)]
pub struct Counters {
    connection: ConnectionManager,
    script: redis::Script,
    seen_ttl: Duration,
}

/// The lowercase hex of a record key (at most 64 bytes of it): what identifies the record at
/// an applied offset.
pub fn fingerprint(key: Option<&[u8]>) -> String {
    match key {
        None => "-".to_owned(),
        Some(key) => key.iter().take(64).map(|b| format!("{b:02x}")).collect(),
    }
}

impl Counters {
    /// Connects, refuses a server whose eviction policy could drop counters, and turns counters
    /// written as hashes by earlier versions into leaderboards.
    pub async fn connect(url: &str, seen_ttl: Duration, aggregates: &[Aggregate]) -> Result<Self, ConnectError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_REPLY_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = ConnectionManager::new_with_config(client, config).await?;
        let policy = config_value(&mut connection, "maxmemory-policy", "maxmemory_policy").await?;
        if policy != "noeviction" {
            return Err(ConnectError::Eviction(policy));
        }
        let ranks: Vec<&str> = aggregates.iter().filter(|a| matches!(a.kind, Kind::Rank { .. })).map(|a| a.key.as_str()).collect();
        if !ranks.is_empty() {
            let migrated: u64 = redis::Script::new(MIGRATE_SCRIPT).key(&ranks).invoke_async(&mut connection).await?;
            if migrated > 0 {
                tracing::warn!(migrated, "turned counters kept as hashes into sorted sets (leaderboards)");
            }
        }
        Ok(Self { connection, script: redis::Script::new(COUNT_SCRIPT), seen_ttl })
    }

    /// What the server keeps on disk and its memory limit.
    pub async fn durability(&self) -> redis::RedisResult<Durability> {
        let mut connection = self.connection.clone();
        let append_only = config_value(&mut connection, "appendonly", "aof_enabled").await?;
        Ok(Durability {
            append_only: append_only == "yes" || append_only == "1",
            append_fsync: config_value(&mut connection, "appendfsync", "").await.unwrap_or_default(),
            snapshots: !config_value(&mut connection, "save", "").await.unwrap_or_default().trim().is_empty(),
            max_memory: config_value(&mut connection, "maxmemory", "maxmemory").await?.parse().unwrap_or(0),
        })
    }

    /// Whether Redis answers a `PING` now.
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }

    /// Whether a recount started and never finished (the counters are incomplete).
    pub async fn recount_incomplete(&self) -> redis::RedisResult<bool> {
        let mut connection = self.connection.clone();
        redis::cmd("EXISTS").arg(keys::RECOUNT_INCOMPLETE).query_async(&mut connection).await
    }

    /// Counts the events of `topic` not counted before into `aggregates`. `spans` covers every
    /// partition the events come from (events are in offset order per partition). Atomic: on any
    /// error nothing of the batch was written. `recount`: a rebuild from the logs, which is
    /// neither refused during a recount nor checked for gaps and replays.
    pub async fn count(&self, topic: &str, aggregates: &[Aggregate], spans: &[Span], events: &[Event], recount: bool) -> Result<Counted, CountError> {
        if events.is_empty() && spans.is_empty() {
            return Ok(Counted::default());
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.key(keys::APPLIED).key(keys::APPLIED_IDS).key(keys::EPOCH).key(keys::RECOUNTING);
        invocation.arg(self.seen_ttl.as_secs().max(1)).arg(if recount { "recount" } else { "consumer" }).arg(spans.len()).arg(aggregates.len());
        for aggregate in aggregates {
            invocation.key(&aggregate.key).key(keys::overflow(&aggregate.key));
            let (kind, cap) = match aggregate.kind {
                Kind::Rank { cap } => ("rank", cap),
                Kind::Add => ("add", 0),
                Kind::List { len } => ("list", len),
            };
            invocation.arg(kind).arg(cap);
        }
        for span in spans {
            invocation
                .arg(keys::applied_field(topic, span.partition))
                .arg(span.first)
                .arg(span.floor)
                .arg(span.verified.unwrap_or(-2))
                .arg(span.last)
                .arg(&span.last_fingerprint);
        }
        let mut markers = 0usize;
        for event in events {
            let span = spans.iter().position(|s| s.partition == event.partition).expect("every event's partition has a span") + 1;
            let marker = match &event.marker {
                Some(marker) => {
                    invocation.key(marker);
                    markers += 1;
                    markers
                }
                None => 0,
            };
            invocation.arg(span).arg(event.offset).arg(marker).arg(event.ops.len());
            for op in &event.ops {
                invocation.arg(op.aggregate + 1).arg(&op.member).arg(op.amount);
            }
        }
        let mut connection = self.connection.clone();
        let (counted, overflowed): (Vec<usize>, u64) =
            invocation.invoke_async(&mut connection).await.map_err(|e| CountError::from_redis(e, events.len(), spans))?;
        let newly_counted: Vec<usize> = counted.into_iter().filter_map(|v| v.checked_sub(1)).collect();
        let counted = newly_counted.len() as u64;
        Ok(Counted { counted, skipped: events.len() as u64 - counted, newly_counted, overflowed })
    }

    /// The applied offset of each of `partitions` of `topic` (-1: none), or `None` for all when
    /// Redis has no epoch (it lost its counts, or never counted).
    pub async fn applied(&self, topic: &str, partitions: &[i32]) -> redis::RedisResult<Option<Vec<i64>>> {
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(keys::EPOCH);
        for partition in partitions {
            pipe.cmd("HGET").arg(keys::APPLIED).arg(keys::applied_field(topic, *partition));
        }
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut connection).await?;
        let epoch: bool = redis::from_redis_value(replies.remove(0))?;
        if !epoch {
            return Ok(None);
        }
        replies.into_iter().map(|reply| Ok(redis::from_redis_value::<Option<i64>>(reply)?.unwrap_or(-1))).collect::<redis::RedisResult<Vec<i64>>>().map(Some)
    }

    /// Forgets the applied offset of a partition whose topic was recreated or reset, if it is
    /// still `applied`; returns whether it did.
    pub async fn resync(&self, topic: &str, partition: i32, applied: i64) -> redis::RedisResult<bool> {
        let mut connection = self.connection.clone();
        let done: i64 = redis::Script::new(RESYNC_SCRIPT)
            .key(keys::APPLIED)
            .key(keys::APPLIED_IDS)
            .arg(keys::applied_field(topic, partition))
            .arg(applied)
            .invoke_async(&mut connection)
            .await?;
        Ok(done == 1)
    }
}

/// A setting from `CONFIG GET`, or from `INFO` (field `info_field`) where CONFIG is renamed away.
async fn config_value(connection: &mut ConnectionManager, name: &str, info_field: &str) -> redis::RedisResult<String> {
    let config: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(connection).await;
    if let Ok(pair) = config {
        if let Some(value) = pair.get(1) {
            return Ok(value.clone());
        }
    }
    if info_field.is_empty() {
        return Ok(String::new());
    }
    let info: String = redis::cmd("INFO").query_async(connection).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{info_field}:")))
        .map_or_else(|| "unknown".to_owned(), |value| value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_the_key_in_hex() {
        assert_eq!(fingerprint(Some(b"ab")), "6162");
        assert_eq!(fingerprint(None), "-");
        assert_eq!(fingerprint(Some(&[7u8; 100])).len(), 128);
    }

    #[test]
    fn the_reasons_of_a_durability_risk_are_named() {
        let none = Durability { append_only: false, append_fsync: "everysec".into(), snapshots: false, max_memory: 0 };
        let notices = none.notices().join(" ");
        assert!(notices.contains("nothing on disk") && notices.contains("maxmemory"), "{notices}");
        let safe = Durability { append_only: true, append_fsync: "always".into(), snapshots: false, max_memory: 1 << 30 };
        assert!(safe.notices().is_empty());
        let everysec = Durability { append_fsync: "everysec".into(), ..safe };
        assert!(everysec.notices()[0].contains("everysec"));
    }
}
