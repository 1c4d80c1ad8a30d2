//! The manifest's JSON workloads in the stores: a [`WorkloadSpec`]'s aggregates as the counters
//! count them, one envelope read from the workload's topic as a counted [`Event`], and its log
//! document in `votes.<WorkloadSpec::collection()>`.

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::{Client, Collection};
use vote_platform::event::{Envelope, Value};
use vote_platform::workload::{AggregateKind, WorkloadSpec, WriteError};

use crate::counters::{Aggregate, Event, Kind, Op};
use crate::logs::{self, Inserted, Origin};

/// The most `search` fields of one workload that get an index in its log collection (MongoDB
/// allows 64 per collection); fields past it are searched without one.
pub const MAX_SEARCH_INDEXES: usize = 16;

/// Why an envelope read from a workload's topic cannot be counted by the workload's spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncountable {
    /// The envelope names another workload than the one its topic carries.
    #[error("the event is for workload {found:?}, but topic {topic:?} carries workload {expected:?}")]
    Workload { found: String, expected: String, topic: String },
    /// A field the spec counts is missing or of the wrong kind.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The counters' aggregates of `spec`, in the order [`WorkloadSpec::writes`] indexes them.
pub fn aggregates(spec: &WorkloadSpec) -> Vec<Aggregate> {
    spec.aggregates()
        .into_iter()
        .map(|aggregate| Aggregate {
            key: aggregate.key,
            kind: match aggregate.kind {
                AggregateKind::Rank { cap } => Kind::Rank { cap },
                AggregateKind::Add => Kind::Add,
                AggregateKind::List { len } => Kind::List { len },
            },
        })
        .collect()
}

/// The idempotency marker of event `id` of `spec`'s workload: `{votes}:w:<workload>:seen:<id>`
/// (never a vote's `{votes}:seen:<id>`, nor one of the workload's aggregates).
pub fn marker_key(spec: &WorkloadSpec, id: &str) -> String {
    format!("{}:seen:{id}", spec.key_prefix())
}

/// One envelope read from `partition` at `offset` of `spec`'s topic, as the counters count it:
/// its writes (the envelope's JSON goes to the list of latest events) and, for an event sent
/// with an idempotency key, its marker.
pub fn event(spec: &WorkloadSpec, partition: i32, offset: i64, envelope: &Envelope) -> Result<Event, Uncountable> {
    if envelope.workload != spec.name {
        return Err(Uncountable::Workload { found: envelope.workload.chars().take(64).collect(), expected: spec.name.clone(), topic: spec.topic.clone() });
    }
    let recent = serde_json::to_string(envelope).expect("an envelope always encodes");
    let ops = spec.writes(&envelope.data, recent)?.into_iter().map(|w| Op { aggregate: w.aggregate, member: w.member, amount: w.amount }).collect();
    let marker = envelope.is_keyed().then(|| marker_key(spec, &envelope.id));
    Ok(Event { partition, offset, marker, ops })
}

/// A field value as BSON: text, a 64-bit integer or a boolean.
fn bson(value: &Value) -> Bson {
    match value {
        Value::Integer(n) => Bson::Int64(*n),
        Value::Flag(b) => Bson::Boolean(*b),
        Value::Text(text) => Bson::String(text.clone()),
    }
}

/// The log document of one event: its id, workload, producer, fields under `data`, when it was
/// received and consumed, and where it was read.
pub fn log_document(envelope: &Envelope, origin: &Origin, consumed_at: DateTime) -> Document {
    let data: Document = envelope.data.iter().map(|(name, value)| (name.clone(), bson(value))).collect();
    doc! {
        "_id": &envelope.id,
        "workload": &envelope.workload,
        "producer": &envelope.producer,
        "data": data,
        "received_at": DateTime::from_millis(envelope.received_at_ms),
        "consumed_at": consumed_at,
        "topic": &origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
    }
}

/// Writes one workload's event logs to `votes.<collection>`, one document per event id.
#[derive(Clone)]
pub struct EventLogs {
    collection: Collection<Document>,
}

impl EventLogs {
    /// The log collection of `spec` through `client`, with its indexes made sure of: by time,
    /// by where each record was read, and by each `search` field (the first
    /// [`MAX_SEARCH_INDEXES`]) then time.
    pub async fn open(client: &Client, spec: &WorkloadSpec) -> mongodb::error::Result<Self> {
        let collection = client.database(logs::DATABASE).collection::<Document>(&spec.collection());
        let mut indexes = vec![logs::index(doc! { "received_at": -1 }, "received_at_desc"), logs::by_offset()];
        if spec.search.len() > MAX_SEARCH_INDEXES {
            tracing::warn!(workload = %spec.name, fields = spec.search.len(), "only the first {MAX_SEARCH_INDEXES} search fields get an index");
        }
        for field in spec.search.iter().take(MAX_SEARCH_INDEXES) {
            indexes.push(logs::index(doc! { format!("data.{field}"): 1, "received_at": -1 }, &format!("data_{field}_received_at")));
        }
        collection.create_indexes(indexes).await?;
        Ok(Self { collection })
    }

    /// Inserts the events; one whose id is logged already (a redelivery) is skipped. An `Err` is
    /// worth retrying: the insert is idempotent.
    pub async fn insert<'a>(&self, events: impl IntoIterator<Item = (&'a Envelope, Origin)>) -> mongodb::error::Result<Inserted> {
        let consumed_at = DateTime::now();
        logs::insert_documents(&self.collection, events.into_iter().map(|(envelope, origin)| log_document(envelope, &origin, consumed_at)).collect()).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vote_platform::event::Data;
    use vote_platform::Manifest;

    use super::*;
    use crate::keys;

    fn shipped(name: &str) -> WorkloadSpec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml");
        Manifest::load(&path).unwrap().workloads.remove(name).unwrap()
    }

    fn report(municipality: &str, temperature: i64, key: Option<&str>) -> Envelope {
        let data = Data::from([
            ("municipality".into(), Value::Text(municipality.into())),
            ("weather".into(), Value::Text("rainy".into())),
            ("temperature".into(), Value::Integer(temperature)),
            ("humidity".into(), Value::Integer(80)),
        ]);
        Envelope::new("weather", "weather-rest@0.1.0", 1_764_000_000_000, key, data)
    }

    #[test]
    fn the_aggregates_are_the_specs_in_its_order() {
        let spec = shipped("weather");
        let aggregates = aggregates(&spec);
        assert_eq!(aggregates.len(), spec.aggregates().len());
        assert_eq!(aggregates[0], Aggregate { key: "{votes}:w:weather:total".into(), kind: Kind::Add });
        assert_eq!(aggregates[1], Aggregate { key: "{votes}:w:weather:recent".into(), kind: Kind::List { len: 10 } });
        assert_eq!(aggregates[2].key, "{votes}:w:weather:count:municipality");
        assert!(matches!(aggregates[2].kind, Kind::Rank { .. }));
        assert!(aggregates.iter().any(|a| a.key == "{votes}:w:weather:mean:temperature:sum"));
    }

    #[test]
    fn an_envelope_counts_into_every_aggregate_with_its_json_as_the_recent_entry() {
        let spec = shipped("weather");
        let envelope = report("mixco", -3, None);
        let event = event(&spec, 4, 17, &envelope).unwrap();
        assert_eq!((event.partition, event.offset, event.marker.as_deref()), (4, 17, None));
        let aggregates = aggregates(&spec);
        let member_of = |key: &str| event.ops.iter().find(|op| aggregates[op.aggregate].key == key).map(|op| (op.member.clone(), op.amount));
        assert_eq!(member_of("{votes}:w:weather:total"), Some((String::new(), 1)));
        let recent = member_of("{votes}:w:weather:recent").unwrap().0;
        assert_eq!(Envelope::decode(recent.as_bytes()).unwrap(), envelope);
        assert_eq!(member_of("{votes}:w:weather:count:municipality_weather"), Some(("mixco|rainy".into(), 1)));
        assert_eq!(member_of("{votes}:w:weather:mean:temperature:sum"), Some(("mixco".into(), -3)));
        assert_eq!(member_of("{votes}:w:weather:mean:temperature:n"), Some(("mixco".into(), 1)));
    }

    #[test]
    fn only_an_event_sent_with_a_key_has_a_marker_and_it_is_the_workloads_own() {
        let spec = shipped("weather");
        let keyed = report("mixco", 20, Some("retry-1"));
        let marker = event(&spec, 0, 0, &keyed).unwrap().marker.unwrap();
        assert_eq!(marker, format!("{{votes}}:w:weather:seen:{}", keyed.id));
        assert_ne!(marker, keys::seen(&keyed.id));
        assert!(spec.aggregates().iter().all(|a| !marker.starts_with(&a.key)));
    }

    #[test]
    fn an_event_of_another_workload_or_missing_a_counted_field_is_refused_naming_why() {
        let spec = shipped("weather");
        let mut other = report("mixco", 20, None);
        other.workload = "ballots".into();
        let error = event(&spec, 0, 0, &other).unwrap_err();
        assert!(matches!(error, Uncountable::Workload { .. }), "{error}");
        assert!(error.to_string().contains("\"ballots\""), "{error}");
        let mut missing = report("mixco", 20, None);
        missing.data.remove("temperature");
        match event(&spec, 0, 0, &missing).unwrap_err() {
            Uncountable::Write(error) => assert_eq!(error.field, "temperature"),
            error => panic!("{error}"),
        }
    }

    #[test]
    fn the_log_document_keeps_the_fields_under_data_and_where_the_event_was_read() {
        let envelope = report("guatemala", 25, None);
        let origin = Origin { topic: "weather".into(), partition: 2, offset: 9 };
        let document = log_document(&envelope, &origin, DateTime::from_millis(1_764_000_000_500));
        assert_eq!(document.get_str("_id").unwrap(), envelope.id);
        assert_eq!(document.get_str("workload").unwrap(), "weather");
        let data = document.get_document("data").unwrap();
        assert_eq!((data.get_str("municipality").unwrap(), data.get_i64("temperature").unwrap()), ("guatemala", 25));
        assert_eq!(document.get_datetime("received_at").unwrap().timestamp_millis(), 1_764_000_000_000);
        assert_eq!((document.get_str("topic").unwrap(), document.get_i32("partition").unwrap(), document.get_i64("offset").unwrap()), ("weather", 2, 9));
    }
}
