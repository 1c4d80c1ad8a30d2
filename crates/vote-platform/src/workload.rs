//! A workload's aggregation spec (`[application.tool.votes.workloads.<name>]`): what the consumer
//! counts for each event on the workload's topic, the Redis keys it counts into (the contract
//! with the results page, `votectl results` and the dashboards), and the writes one event makes.
//!
//! Every key is under the `{votes}` hash tag (one counting script touches them all) and named
//! `{votes}:w:<workload>:...`; leaderboard members of several fields are joined by `|` with `\`
//! and `|` inside a value escaped.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::event::{Data, Value};
use crate::names;

/// The most count and mean aggregates one workload has (each).
pub const MAX_AGGREGATES: usize = 16;
/// The most fields an aggregate groups by, or filters on.
pub const MAX_BY: usize = 3;
/// The most entries the list of latest events keeps.
pub const MAX_RECENT: u32 = 100;
/// The most members a leaderboard names unless the spec says fewer.
pub const DEFAULT_CAP: u64 = 10_000;

/// How the events of a workload's topic are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The JSON envelope of [`crate::event`], counted by this spec.
    #[default]
    Json,
    /// The band votes' protobuf `VoteEvent`, counted by the built-in vote rules (`{votes}:*`
    /// keys); such a workload declares no aggregates of its own.
    VoteEvent,
}

/// The broker a workload's topic lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Broker {
    /// A Kafka topic (Tansu locally, Strimzi on a cluster).
    #[default]
    Kafka,
    /// A RabbitMQ stream of the topic's name (the `rabbitmq_stream` plugin).
    Rabbitmq,
}

impl Broker {
    /// The `broker` label of metrics.
    pub fn label(self) -> &'static str {
        match self {
            Broker::Kafka => "kafka",
            Broker::Rabbitmq => "rabbitmq",
        }
    }
}

/// One leaderboard: events counted per distinct value of `by` (among those matching `where`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountSpec {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    pub by: Vec<String>,
    /// Only events whose fields have these values are counted.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, String>,
    /// How many members a view shows (the leaderboard keeps up to the workload's cap).
    #[serde(default)]
    pub top: Option<u32>,
    /// Views show each member's share of its group (the values of every `by` field but the
    /// last) in percent.
    #[serde(default)]
    pub share: bool,
}

/// The mean of an integer field per distinct value of `by`: a sum and a count leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanSpec {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    pub field: String,
    pub by: Vec<String>,
}

/// What the consumer counts for one workload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Filled in from the table's name.
    #[serde(skip)]
    pub name: String,
    pub title: String,
    /// The Kafka topic its events are on (one workload per topic).
    pub topic: String,
    #[serde(default)]
    pub format: Format,
    /// Where the topic lives: `kafka` (the default) or `rabbitmq` (a stream).
    #[serde(default)]
    pub broker: Broker,
    /// How many of the latest events the results page shows.
    #[serde(default = "default_recent")]
    pub recent: u32,
    /// The most members each leaderboard names; events for members past it go to the
    /// leaderboard's overflow counter.
    #[serde(default = "default_cap")]
    pub cap: u64,
    /// The fields the log search offers.
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub count: Vec<CountSpec>,
    #[serde(default)]
    pub mean: Vec<MeanSpec>,
}

fn default_recent() -> u32 {
    10
}

fn default_cap() -> u64 {
    DEFAULT_CAP
}

/// What kind of Redis value an aggregate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    /// A sorted set member -> count, at most `cap` members.
    Rank { cap: u64 },
    /// An integer counter.
    Add,
    /// The latest entries, newest first, at most `len`.
    List { len: u64 },
}

/// One Redis aggregate of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub key: String,
    pub kind: AggregateKind,
}

/// One write an event makes: to aggregate `aggregate` (an index into [`WorkloadSpec::aggregates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub aggregate: usize,
    pub member: String,
    pub amount: i64,
}

/// Why an event cannot be counted by its workload's spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {reason}")]
pub struct WriteError {
    pub field: String,
    pub reason: String,
}

/// Joins values into one leaderboard member: `|` between them, `\` and `|` inside escaped.
pub fn join_member(values: &[&str]) -> String {
    let mut member = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            member.push('|');
        }
        for c in value.chars() {
            if c == '\\' || c == '|' {
                member.push('\\');
            }
            member.push(c);
        }
    }
    member
}

/// The values of a member written by [`join_member`]; `None` on a dangling escape.
pub fn split_member(member: &str) -> Option<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut chars = member.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut()?.push(chars.next()?),
            '|' => parts.push(String::new()),
            other => parts.last_mut()?.push(other),
        }
    }
    Some(parts)
}

impl WorkloadSpec {
    /// The prefix of every key of this workload.
    pub fn key_prefix(&self) -> String {
        format!("{{votes}}:w:{}", self.name)
    }
    /// Counter of every event counted.
    pub fn total_key(&self) -> String {
        format!("{}:total", self.key_prefix())
    }
    /// List of the latest events (their envelopes, JSON), newest first.
    pub fn recent_key(&self) -> String {
        format!("{}:recent", self.key_prefix())
    }
    /// Leaderboard of count aggregate `name`.
    pub fn count_key(&self, name: &str) -> String {
        format!("{}:count:{name}", self.key_prefix())
    }
    /// Leaderboard of the sums of mean aggregate `name`.
    pub fn sum_key(&self, name: &str) -> String {
        format!("{}:mean:{name}:sum", self.key_prefix())
    }
    /// Leaderboard of the event counts of mean aggregate `name`.
    pub fn samples_key(&self, name: &str) -> String {
        format!("{}:mean:{name}:n", self.key_prefix())
    }
    /// The MongoDB collection (in database `votes`) of this workload's event logs.
    pub fn collection(&self) -> String {
        format!("events_{}", self.name.replace('-', "_"))
    }

    /// Every aggregate, in the order [`Self::writes`] indexes them: total, recent, each count,
    /// then each mean's sum and samples.
    pub fn aggregates(&self) -> Vec<Aggregate> {
        let rank = AggregateKind::Rank { cap: self.cap };
        let mut aggregates = vec![
            Aggregate { key: self.total_key(), kind: AggregateKind::Add },
            Aggregate { key: self.recent_key(), kind: AggregateKind::List { len: u64::from(self.recent.max(1)) } },
        ];
        aggregates.extend(self.count.iter().map(|c| Aggregate { key: self.count_key(&c.name), kind: rank }));
        for mean in &self.mean {
            aggregates.push(Aggregate { key: self.sum_key(&mean.name), kind: rank });
            aggregates.push(Aggregate { key: self.samples_key(&mean.name), kind: rank });
        }
        aggregates
    }

    /// What counting one event writes (`recent_entry` goes to the list of latest events).
    pub fn writes(&self, data: &Data, recent_entry: String) -> Result<Vec<Write>, WriteError> {
        let mut writes = vec![Write { aggregate: 0, member: String::new(), amount: 1 }, Write { aggregate: 1, member: recent_entry, amount: 1 }];
        let mut at = 2;
        for count in &self.count {
            let matches = count.filter.iter().all(|(field, wanted)| data.get(field).is_some_and(|v| v.as_member() == *wanted));
            if matches {
                writes.push(Write { aggregate: at, member: member_of(data, &count.by)?, amount: 1 });
            }
            at += 1;
        }
        for mean in &self.mean {
            let value = match data.get(&mean.field) {
                Some(Value::Integer(n)) if n.unsigned_abs() < 1 << 40 => *n,
                Some(_) => return Err(WriteError { field: mean.field.clone(), reason: "must be an integer below 2^40 in size".into() }),
                None => return Err(WriteError { field: mean.field.clone(), reason: "is missing".into() }),
            };
            let member = member_of(data, &mean.by)?;
            writes.push(Write { aggregate: at, member: member.clone(), amount: value });
            writes.push(Write { aggregate: at + 1, member, amount: 1 });
            at += 2;
        }
        Ok(writes)
    }

    /// Checks names, bounds and references; `topics` are the topics already taken.
    pub(crate) fn check(&self) -> Vec<String> {
        let at = |what: &str| format!("workloads.{}.{what}", self.name);
        let mut problems = Vec::new();
        if let Some(reason) = names::check(&self.name) {
            problems.push(format!("workloads: name {reason}"));
        }
        if let Some(reason) = crate::manifest::check_topic(&self.topic) {
            problems.push(format!("{}: {reason}", at("topic")));
        }
        if self.title.is_empty() || self.title.len() > 128 {
            problems.push(format!("{}: must be 1 to 128 bytes", at("title")));
        }
        if self.recent > MAX_RECENT {
            problems.push(format!("{}: at most {MAX_RECENT}", at("recent")));
        }
        if self.cap == 0 || self.cap > 1_000_000 {
            problems.push(format!("{}: must be 1 to 1000000", at("cap")));
        }
        if self.format == Format::VoteEvent && self.broker != Broker::Kafka {
            problems.push(format!("{}: the band votes live on kafka (the gRPC producer, recount and the fleet read them there)", at("broker")));
        }
        if self.format == Format::VoteEvent && !(self.count.is_empty() && self.mean.is_empty()) {
            problems.push(format!("{}: a vote-event workload is counted by the built-in vote rules and declares no count or mean", at("format")));
        }
        if self.count.len() > MAX_AGGREGATES || self.mean.len() > MAX_AGGREGATES {
            problems.push(format!("{}: at most {MAX_AGGREGATES} count and {MAX_AGGREGATES} mean aggregates", at("count")));
        }
        let mut seen = std::collections::BTreeSet::new();
        let groups = self.count.iter().map(|c| (&c.name, &c.by, c.filter.keys().collect::<Vec<_>>())).chain(self.mean.iter().map(|m| (&m.name, &m.by, vec![&m.field])));
        for (name, by, other) in groups {
            if let Some(reason) = names::check(name) {
                problems.push(format!("{}: aggregate name {reason}", at("count")));
            }
            if !seen.insert(name.clone()) {
                problems.push(format!("{}: aggregate {name:?} is declared twice", at("count")));
            }
            if by.is_empty() || by.len() > MAX_BY || other.len() > MAX_BY {
                problems.push(format!("{}: aggregate {name:?} groups by 1 to {MAX_BY} fields and filters on at most {MAX_BY}", at("count")));
            }
            for field in by.iter().chain(other) {
                if let Some(reason) = names::check(field) {
                    problems.push(format!("{}: aggregate {name:?} field {reason}", at("count")));
                }
            }
        }
        for field in &self.search {
            if let Some(reason) = names::check(field) {
                problems.push(format!("{}: {reason}", at("search")));
            }
        }
        problems
    }
}

/// The member for the values of `by` in `data`.
fn member_of(data: &Data, by: &[String]) -> Result<String, WriteError> {
    let values: Vec<String> = by
        .iter()
        .map(|field| data.get(field).map(Value::as_member).ok_or_else(|| WriteError { field: field.clone(), reason: "is missing".into() }))
        .collect::<Result<_, _>>()?;
    Ok(join_member(&values.iter().map(String::as_str).collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        let mut spec: WorkloadSpec = toml::from_str(
            r#"
            title = "Ballots"
            topic = "ballots"
            recent = 5
            [[count]]
            name = "presidential"
            by = ["departamento"]
            where = { papeleta = "presidente" }
            top = 3
            [[count]]
            name = "party"
            by = ["departamento", "partido"]
            share = true
            [[mean]]
            name = "age"
            field = "age"
            by = ["departamento"]
            "#,
        )
        .unwrap();
        spec.name = "ballots".into();
        spec
    }

    fn data(papeleta: &str) -> Data {
        Data::from([
            ("departamento".into(), Value::Text("Sololá".into())),
            ("partido".into(), Value::Text("A|B".into())),
            ("papeleta".into(), Value::Text(papeleta.into())),
            ("age".into(), Value::Integer(40)),
        ])
    }

    #[test]
    fn an_event_writes_the_total_the_list_and_each_matching_aggregate() {
        let spec = spec();
        assert!(spec.check().is_empty(), "{:?}", spec.check());
        let aggregates = spec.aggregates();
        assert_eq!(aggregates.len(), 6);
        assert_eq!(aggregates[2].key, "{votes}:w:ballots:count:presidential");
        let writes = spec.writes(&data("presidente"), "{}".into()).unwrap();
        assert_eq!(writes.iter().map(|w| w.aggregate).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(writes[3].member, "Sololá|A\\|B");
        assert_eq!(split_member(&writes[3].member).unwrap(), vec!["Sololá", "A|B"]);
        assert_eq!((writes[4].amount, writes[5].amount), (40, 1));
        let writes = spec.writes(&data("alcalde"), "{}".into()).unwrap();
        assert!(writes.iter().all(|w| w.aggregate != 2), "the filter leaves out other ballots");
    }

    #[test]
    fn a_missing_or_wrong_field_is_named() {
        let spec = spec();
        let mut bad = data("presidente");
        bad.remove("partido");
        assert_eq!(spec.writes(&bad, String::new()).unwrap_err().field, "partido");
        let mut bad = data("presidente");
        bad.insert("age".into(), Value::Text("old".into()));
        assert_eq!(spec.writes(&bad, String::new()).unwrap_err().field, "age");
    }
}
