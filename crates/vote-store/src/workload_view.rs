//! One workload's live view, read from the Redis keys its [`WorkloadSpec`] names in one pipelined
//! round trip: the total, each count aggregate's top members (split into their `by` values, with
//! their share of their group when the spec asks for it), each mean per member, each
//! leaderboard's overflow, and the latest events. The results app and `votectl results
//! --workload` both show exactly this.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use serde::Serialize;
use vote_platform::workload::{split_member, CountSpec, MeanSpec, WorkloadSpec};

use crate::keys;
use crate::leaderboard::{queue_top, top_from, Top};

/// How many members a count aggregate shows when its spec names no `top`.
pub const DEFAULT_TOP: u32 = 20;
/// The most members any aggregate shows.
pub const MAX_TOP: u32 = 100;
/// How many members of a `share` leaderboard are read to sum their groups: the shares are exact
/// while the leaderboard has at most this many members (its `size` tells).
pub const SHARE_READ: usize = 2_000;

/// The top `limit` members of the samples leaderboard `KEYS[1]`, each with its samples and its
/// sum from `KEYS[2]`: `[member, samples, sum, ...]`.
const MEANS_SCRIPT: &str = r"
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'REV', 'WITHSCORES')
local out = {}
for i = 1, #top, 2 do
  out[#out + 1] = top[i]
  out[#out + 1] = top[i + 1]
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], top[i]) or '0'
end
return out
";

/// One member of a count aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberCount {
    /// The member's value of each `by` field, in order.
    pub values: Vec<String>,
    pub count: u64,
    /// Percent of its group (the members with the same values but the last), to 0.1; only when
    /// the spec asks for shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

/// One count aggregate's top members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountView {
    pub name: String,
    pub title: String,
    pub by: Vec<String>,
    pub share: bool,
    /// The most counted members, most first (ties by member), at most the spec's `top`.
    pub members: Vec<MemberCount>,
    /// How many members the leaderboard has.
    pub size: u64,
    /// Events counted for members beyond the leaderboard's cap.
    pub overflow: u64,
}

/// One member of a mean aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberMean {
    pub values: Vec<String>,
    /// The sum divided by the samples, to 0.1.
    pub mean: f64,
    pub samples: u64,
}

/// One mean aggregate per member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanView {
    pub name: String,
    pub title: String,
    pub field: String,
    pub by: Vec<String>,
    /// The members with the most samples, most first.
    pub members: Vec<MemberMean>,
    pub size: u64,
    pub overflow: u64,
}

/// A workload's live view at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadView {
    pub workload: String,
    pub title: String,
    /// Every event counted.
    pub total: u64,
    pub counts: Vec<CountView>,
    pub means: Vec<MeanView>,
    /// The latest events (their envelopes), newest first.
    pub recent: Vec<serde_json::Value>,
    /// When this view was read (unix milliseconds).
    pub read_at_ms: i64,
}

impl WorkloadView {
    /// Whether two views show the same thing (the read time aside).
    pub fn same_as(&self, other: &WorkloadView) -> bool {
        self.total == other.total && self.counts == other.counts && self.means == other.means && self.recent == other.recent
    }
}

/// How many members `count` shows.
pub fn top_of(count: &CountSpec) -> usize {
    count.top.unwrap_or(DEFAULT_TOP).clamp(1, MAX_TOP) as usize
}

/// Rounds to one decimal.
fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A member's `by` values; a member that does not split (a dangling escape) is one value.
fn values_of(member: &str) -> Vec<String> {
    split_member(member).unwrap_or_else(|| vec![member.to_owned()])
}

/// Shapes a count aggregate's leaderboard top (read with [`SHARE_READ`] members when the spec
/// asks for shares, so the groups are summed over more than the members shown).
pub fn count_view(spec: &CountSpec, top: Top) -> CountView {
    let members: Vec<(Vec<String>, u64)> = top.members.into_iter().map(|(member, count)| (values_of(&member), count)).collect();
    let group = |values: &[String]| values[..values.len().saturating_sub(1)].to_vec();
    let mut groups: HashMap<Vec<String>, u64> = HashMap::new();
    if spec.share {
        for (values, count) in &members {
            *groups.entry(group(values)).or_default() += count;
        }
    }
    let members = members
        .into_iter()
        .take(top_of(spec))
        .map(|(values, count)| {
            let share = spec.share.then(|| {
                let sum = groups.get(&group(&values)).copied().unwrap_or(0);
                if sum == 0 { 0.0 } else { tenths(100.0 * count as f64 / sum as f64) }
            });
            MemberCount { values, count, share }
        })
        .collect();
    CountView {
        name: spec.name.clone(),
        title: spec.title.clone().unwrap_or_else(|| spec.name.clone()),
        by: spec.by.clone(),
        share: spec.share,
        members,
        size: top.size,
        overflow: top.overflow,
    }
}

/// Shapes a mean aggregate from `(member, samples, sum)` rows, most samples first.
pub fn mean_view(spec: &MeanSpec, rows: Vec<(String, f64, f64)>, size: u64, overflow: u64) -> MeanView {
    let mut members: Vec<MemberMean> = rows
        .into_iter()
        .filter(|(_, samples, _)| *samples >= 1.0)
        .map(|(member, samples, sum)| MemberMean { values: values_of(&member), mean: tenths(sum / samples), samples: samples as u64 })
        .collect();
    members.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.values.cmp(&b.values)));
    MeanView {
        name: spec.name.clone(),
        title: spec.title.clone().unwrap_or_else(|| spec.name.clone()),
        field: spec.field.clone(),
        by: spec.by.clone(),
        members,
        size,
        overflow,
    }
}

/// The `[member, samples, sum, ...]` reply of [`MEANS_SCRIPT`] as rows.
fn mean_rows(flat: Vec<String>) -> Vec<(String, f64, f64)> {
    flat.chunks_exact(3).map(|row| (row[0].clone(), row[1].parse().unwrap_or(0.0), row[2].parse().unwrap_or(0.0))).collect()
}

/// Takes the next reply of a pipeline as `T`.
fn next<T: redis::FromRedisValue>(replies: &mut impl Iterator<Item = redis::Value>) -> redis::RedisResult<T> {
    let value = replies.next().unwrap_or(redis::Value::Nil);
    Ok(redis::from_redis_value(value)?)
}

/// Reads `spec`'s view in one pipelined round trip whose size is bounded by the spec (at most
/// [`SHARE_READ`] or [`MAX_TOP`] members per aggregate, at most the spec's `recent` events).
pub async fn read<C: ConnectionLike>(connection: &mut C, spec: &WorkloadSpec) -> redis::RedisResult<WorkloadView> {
    let mut pipe = redis::pipe();
    pipe.get(spec.total_key());
    for count in &spec.count {
        let limit = if count.share { SHARE_READ.max(top_of(count)) } else { top_of(count) };
        queue_top(&mut pipe, &spec.count_key(&count.name), limit);
    }
    for mean in &spec.mean {
        let samples = spec.samples_key(&mean.name);
        pipe.cmd("EVAL").arg(MEANS_SCRIPT).arg(2).arg(&samples).arg(spec.sum_key(&mean.name)).arg(MAX_TOP);
        pipe.cmd("ZCARD").arg(&samples);
        pipe.cmd("GET").arg(keys::overflow(&samples));
    }
    let recent = spec.recent.clamp(1, vote_platform::workload::MAX_RECENT);
    pipe.lrange(spec.recent_key(), 0, recent as isize - 1);
    let replies: Vec<redis::Value> = pipe.query_async(connection).await?;
    let mut replies = replies.into_iter();
    let total: Option<u64> = next(&mut replies)?;
    let mut counts = Vec::with_capacity(spec.count.len());
    for count in &spec.count {
        let top = top_from(next(&mut replies)?, next(&mut replies)?, next(&mut replies)?);
        counts.push(count_view(count, top));
    }
    let mut means = Vec::with_capacity(spec.mean.len());
    for mean in &spec.mean {
        let rows = mean_rows(next(&mut replies)?);
        let (size, overflow): (u64, Option<u64>) = (next(&mut replies)?, next(&mut replies)?);
        means.push(mean_view(mean, rows, size, overflow.unwrap_or(0)));
    }
    let recent: Vec<String> = next(&mut replies)?;
    Ok(WorkloadView {
        workload: spec.name.clone(),
        title: spec.title.clone(),
        total: total.unwrap_or(0),
        counts,
        means,
        recent: recent.iter().filter_map(|entry| serde_json::from_str(entry).ok()).collect(),
        read_at_ms: vote_core::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vote_platform::workload::join_member;

    fn count(by: &[&str], share: bool, top: Option<u32>) -> CountSpec {
        CountSpec { name: "c".into(), title: None, by: by.iter().map(|s| s.to_string()).collect(), filter: Default::default(), top, share }
    }

    fn leaderboard(members: &[(&[&str], u64)]) -> Top {
        let members = members.iter().map(|(values, n)| (join_member(values), *n as f64)).collect();
        top_from(members, 99, Some(3))
    }

    #[test]
    fn shares_are_percent_of_the_group_of_all_values_but_the_last() {
        let top = leaderboard(&[
            (&["Guatemala", "A"], 6),
            (&["Guatemala", "B"], 3),
            (&["Guatemala", "C|D"], 1),
            (&["Sololá", "A"], 1),
            (&["Sololá", "B"], 2),
        ]);
        let view = count_view(&count(&["departamento", "partido"], true, Some(4)), top);
        let shown: Vec<(Vec<&str>, u64, Option<f64>)> =
            view.members.iter().map(|m| (m.values.iter().map(String::as_str).collect(), m.count, m.share)).collect();
        assert_eq!(
            shown,
            vec![
                (vec!["Guatemala", "A"], 6, Some(60.0)),
                (vec!["Guatemala", "B"], 3, Some(30.0)),
                (vec!["Sololá", "B"], 2, Some(66.7)),
                (vec!["Guatemala", "C|D"], 1, Some(10.0)),
            ],
            "the top 4, each a share of every member read of its group (Sololá|A is summed, not shown)"
        );
        assert_eq!((view.size, view.overflow, view.title.as_str()), (99, 3, "c"));
    }

    #[test]
    fn a_one_field_share_is_of_the_whole_and_no_share_is_left_out() {
        let top = leaderboard(&[(&["sunny"], 1), (&["rainy"], 2)]);
        let view = count_view(&count(&["weather"], true, None), top.clone());
        assert_eq!(view.members.iter().map(|m| m.share.unwrap()).collect::<Vec<_>>(), [66.7, 33.3]);
        let plain = count_view(&count(&["weather"], false, None), top);
        assert!(plain.members.iter().all(|m| m.share.is_none()));
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json["members"][0].get("share").is_none(), "{json}");
        assert_eq!(json["members"][0]["values"], serde_json::json!(["rainy"]));
    }

    #[test]
    fn tops_default_and_are_bounded() {
        assert_eq!(top_of(&count(&["a"], false, None)), DEFAULT_TOP as usize);
        assert_eq!(top_of(&count(&["a"], false, Some(3))), 3);
        assert_eq!(top_of(&count(&["a"], false, Some(100_000))), MAX_TOP as usize);
        assert_eq!(top_of(&count(&["a"], false, Some(0))), 1);
    }

    #[test]
    fn means_are_sum_over_samples_to_a_tenth_most_samples_first() {
        let spec = MeanSpec { name: "temperature".into(), title: Some("Mean".into()), field: "temperature".into(), by: vec!["municipality".into()] };
        let rows = mean_rows(
            ["mixco", "3", "65", "guatemala", "4", "-7", "ghost", "0", "0", "amatitlan", "3", "70"].iter().map(|s| s.to_string()).collect(),
        );
        let view = mean_view(&spec, rows, 4, 0);
        let shown: Vec<(&str, f64, u64)> = view.members.iter().map(|m| (m.values[0].as_str(), m.mean, m.samples)).collect();
        assert_eq!(shown, [("guatemala", -1.8, 4), ("amatitlan", 23.3, 3), ("mixco", 21.7, 3)]);
        assert_eq!(view.title, "Mean");
    }

    #[test]
    fn a_member_that_does_not_split_is_one_value() {
        assert_eq!(values_of("a|b"), ["a", "b"]);
        assert_eq!(values_of("dangling\\"), ["dangling\\"]);
    }
}
