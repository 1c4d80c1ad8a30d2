//! The topics one consumer reads and what their records are: band votes (protobuf `VoteEvent`,
//! the built-in rules) on the votes topic, and on each JSON workload's topic of the manifest the
//! workload's envelopes, counted by its spec and logged in its own collection.

use mongodb::Client;
use vote_core::proto::VoteEvent;
use vote_platform::event::Envelope;
use vote_platform::WorkloadSpec;
use vote_store::counters::{Aggregate, Event};
use vote_store::logs::{Inserted, Origin};
use vote_store::workloads::{self, EventLogs};
use vote_store::{votes, Logs};

use crate::dlq::Reason;

/// A manifest workload the consumer counts.
pub struct Workload {
    pub spec: WorkloadSpec,
    pub logs: EventLogs,
}

/// One topic the consumer reads: its records' aggregates, and the workload they belong to
/// (`None`: the band votes).
pub struct Route {
    pub topic: String,
    pub aggregates: Vec<Aggregate>,
    pub workload: Option<Workload>,
}

/// A record that decoded: a vote or a workload event.
pub enum Item {
    Vote(VoteEvent),
    Event(Envelope),
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Item::Vote(vote) => &vote.vote_id,
            Item::Event(envelope) => &envelope.id,
        }
    }

    pub fn received_at_ms(&self) -> i64 {
        match self {
            Item::Vote(vote) => vote.received_at_ms,
            Item::Event(envelope) => envelope.received_at_ms,
        }
    }
}

impl Route {
    /// The votes topic, counted into leaderboards of at most `name_cap` bands and albums.
    pub fn votes(topic: &str, name_cap: u64) -> Self {
        Self { topic: topic.to_owned(), aggregates: votes::aggregates(name_cap), workload: None }
    }

    /// `spec`'s topic, logged through `client`; makes sure its log collection's indexes exist.
    pub async fn workload(spec: &WorkloadSpec, client: &Client) -> mongodb::error::Result<Self> {
        let logs = EventLogs::open(client, spec).await?;
        Ok(Self { topic: spec.topic.clone(), aggregates: workloads::aggregates(spec), workload: Some(Workload { spec: spec.clone(), logs }) })
    }

    /// The workload's name, the `workload` label of its metrics (`None` for the votes).
    pub fn workload_name(&self) -> Option<&str> {
        self.workload.as_ref().map(|w| w.spec.name.as_str())
    }

    /// What a record's payload writes, or why it cannot be counted (the dead-letter reason and
    /// the error in words).
    pub fn decode(&self, partition: i32, offset: i64, payload: Option<&[u8]>) -> Result<(Event, Item), (Reason, String)> {
        let Some(payload) = payload else { return Err((Reason::Undecodable, "the record has no payload".to_owned())) };
        match &self.workload {
            None => {
                let vote = vote_core::decode_event(payload).map_err(|e| (Reason::of_event_error(&e), e.to_string()))?;
                Ok((votes::event(partition, offset, &vote), Item::Vote(vote)))
            }
            Some(workload) => {
                let envelope = Envelope::decode(payload).map_err(|e| (Reason::of_envelope_error(&e), e.to_string()))?;
                let event = workloads::event(&workload.spec, partition, offset, &envelope).map_err(|e| (Reason::InvalidEvent, e.to_string()))?;
                Ok((event, Item::Event(envelope)))
            }
        }
    }

    /// Logs the items (each with where it was read): votes in `votes.logs`, a workload's events
    /// in its own collection. Idempotent.
    pub async fn log(&self, votes_logs: &Logs, items: impl Iterator<Item = (&Item, Origin)>) -> mongodb::error::Result<Inserted> {
        match &self.workload {
            None => votes_logs.insert(items.filter_map(|(item, origin)| if let Item::Vote(vote) = item { Some((vote, origin)) } else { None })).await,
            Some(workload) => {
                workload.logs.insert(items.filter_map(|(item, origin)| if let Item::Event(envelope) = item { Some((envelope, origin)) } else { None })).await
            }
        }
    }
}
