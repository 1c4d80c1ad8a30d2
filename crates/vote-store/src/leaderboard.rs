//! Bounded reads of a leaderboard: its top members with their counts, how many members it has,
//! and the count of votes for names beyond its cap, in one round trip however many names exist.

use redis::aio::ConnectionLike;

use crate::keys;

/// The top of one leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Top {
    /// The `limit` members with the most votes, most first (ties by name).
    pub members: Vec<(String, u64)>,
    /// How many members the leaderboard has.
    pub size: u64,
    /// Votes counted for names beyond the leaderboard's cap.
    pub overflow: u64,
}

/// Adds the commands reading the top `limit` members of `key` to `pipe` (three replies).
pub fn queue_top(pipe: &mut redis::Pipeline, key: &str, limit: usize) {
    pipe.cmd("ZRANGE").arg(key).arg(0).arg(limit.saturating_sub(1)).arg("REV").arg("WITHSCORES");
    pipe.cmd("ZCARD").arg(key);
    pipe.cmd("GET").arg(keys::overflow(key));
}

/// The three replies of [`queue_top`] as a [`Top`].
pub fn top_from(members: Vec<(String, f64)>, size: u64, overflow: Option<u64>) -> Top {
    let mut members: Vec<(String, u64)> = members.into_iter().map(|(name, score)| (name, score.max(0.0) as u64)).collect();
    members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Top { members, size, overflow: overflow.unwrap_or(0) }
}

/// Reads the top `limit` members of the leaderboard `key`.
pub async fn top<C: ConnectionLike>(connection: &mut C, key: &str, limit: usize) -> redis::RedisResult<Top> {
    let mut pipe = redis::pipe();
    queue_top(&mut pipe, key, limit);
    let (members, size, overflow): (Vec<(String, f64)>, u64, Option<u64>) = pipe.query_async(connection).await?;
    Ok(top_from(members, size, overflow))
}
