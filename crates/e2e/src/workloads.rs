//! Manifest workloads in the tests: the shipped manifest, events of the weather and ballots
//! workloads, and those events written straight into a test stack's stores with the keys and
//! writes of their specs (what the consumer does), so the readers are tested on known numbers.

use mongodb::bson::{doc, Bson, DateTime, Document};
use vote_platform::event::{Data, Envelope, Value};
use vote_platform::workload::AggregateKind;
use vote_platform::{Manifest, WorkloadSpec};

/// 2026-01-01T00:00:00Z: events are one second apart from here.
pub const BASE_MS: i64 = 1_767_225_600_000;

/// The repository's `spin.toml`.
pub fn manifest_path() -> std::path::PathBuf {
    vote_stack::config::repo_root().join("spin.toml")
}

/// The shipped manifest.
pub fn manifest() -> Manifest {
    Manifest::load(&manifest_path()).expect("the shipped manifest loads")
}

/// A workload of the shipped manifest.
pub fn spec(name: &str) -> WorkloadSpec {
    manifest().workloads.get(name).cloned().unwrap_or_else(|| panic!("no workload {name} in spin.toml"))
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// A weather report's fields.
pub fn weather(municipality: &str, condition: &str, temperature: i64, humidity: i64) -> Data {
    Data::from([
        ("municipality".into(), text(municipality)),
        ("weather".into(), text(condition)),
        ("temperature".into(), Value::Integer(temperature)),
        ("humidity".into(), Value::Integer(humidity)),
    ])
}

/// A ballot's fields.
pub fn ballot(sede: &str, municipio: &str, departamento: &str, papeleta: &str, partido: &str) -> Data {
    Data::from([
        ("sede".into(), text(sede)),
        ("municipio".into(), text(municipio)),
        ("departamento".into(), text(departamento)),
        ("papeleta".into(), text(papeleta)),
        ("partido".into(), text(partido)),
    ])
}

/// Eight weather reports: guatemala 4 (18.5 °C, 77.5 %), mixco 3 (21.7 °C, 70 %), amatitlan 1;
/// the first six: guatemala 3 (18 °C), mixco 2 (21 °C), amatitlan 1.
pub fn sample_reports() -> Vec<Data> {
    vec![
        weather("guatemala", "cloudy", 18, 65),
        weather("mixco", "sunny", 20, 60),
        weather("guatemala", "cloudy", 17, 70),
        weather("mixco", "sunny", 22, 70),
        weather("guatemala", "foggy", 19, 90),
        weather("amatitlan", "sunny", 30, 40),
        weather("mixco", "rainy", 23, 80),
        weather("guatemala", "rainy", 20, 85),
    ]
}

/// A polling place named like markup.
pub const XSS_SEDE: &str = "<img src=x onerror=alert(1)>";

/// Nine ballots: presidential ballots Guatemala 3, Quetzaltenango 2, Sololá 1, Petén 1; a party
/// named with a `|`; one polling place named like markup ([`XSS_SEDE`]).
pub fn sample_ballots() -> Vec<Data> {
    vec![
        ballot("EORM 1", "Guatemala", "Guatemala", "presidente", "UNE"),
        ballot("EORM 1", "Guatemala", "Guatemala", "presidente", "VAMOS"),
        ballot(XSS_SEDE, "Mixco", "Guatemala", "presidente", "UNE"),
        ballot("Escuela Central", "Sololá", "Sololá", "presidente", "Semilla"),
        ballot("Escuela Central", "Sololá", "Sololá", "diputados", "UNE"),
        ballot("EORM 1", "Guatemala", "Guatemala", "alcalde", "A|B"),
        ballot("Instituto Quetzal", "Quetzaltenango", "Quetzaltenango", "presidente", "Semilla"),
        ballot("Instituto Quetzal", "Quetzaltenango", "Quetzaltenango", "presidente", "Semilla"),
        ballot("Escuela Petén", "Flores", "Petén", "presidente", "VAMOS"),
    ]
}

/// Envelopes of `spec`'s workload for `datas`, the `i`-th received at `BASE_MS + (first + i) s`.
pub fn envelopes(spec: &WorkloadSpec, first: usize, datas: Vec<Data>) -> Vec<Envelope> {
    let producer = format!("{}-rest@0.1.0", spec.name);
    datas.into_iter().enumerate().map(|(i, data)| Envelope::new(&spec.name, &producer, BASE_MS + (first + i) as i64 * 1000, None, data)).collect()
}

/// Counts `events` into Redis with the writes `spec` makes for each (oldest first).
pub async fn count(redis: &mut redis::aio::MultiplexedConnection, spec: &WorkloadSpec, events: &[Envelope]) {
    let aggregates = spec.aggregates();
    let mut pipe = redis::pipe();
    for event in events {
        let json = String::from_utf8(event.encode()).unwrap();
        for write in spec.writes(&event.data, json).expect("the event fits its spec") {
            let aggregate = &aggregates[write.aggregate];
            match aggregate.kind {
                AggregateKind::Add => pipe.cmd("INCRBY").arg(&aggregate.key).arg(write.amount).ignore(),
                AggregateKind::Rank { .. } => pipe.cmd("ZINCRBY").arg(&aggregate.key).arg(write.amount).arg(&write.member).ignore(),
                AggregateKind::List { len } => {
                    pipe.cmd("LPUSH").arg(&aggregate.key).arg(&write.member).ignore();
                    pipe.cmd("LTRIM").arg(&aggregate.key).arg(0).arg(len as i64 - 1).ignore()
                }
            };
        }
    }
    let () = pipe.query_async(redis).await.expect("counting into Redis");
}

fn bson(value: &Value) -> Bson {
    match value {
        Value::Integer(n) => Bson::Int64(*n),
        Value::Flag(b) => Bson::Boolean(*b),
        Value::Text(t) => Bson::String(t.clone()),
    }
}

/// The log document of one event in `votes.<collection>`.
pub fn log_document(event: &Envelope) -> Document {
    let data: Document = event.data.iter().map(|(k, v)| (k.clone(), bson(v))).collect();
    doc! {
        "_id": &event.id,
        "workload": &event.workload,
        "producer": &event.producer,
        "received_at": DateTime::from_millis(event.received_at_ms),
        "data": data,
    }
}

/// Logs `events` into `votes.<spec's collection>`.
pub async fn log(mongo_url: &str, spec: &WorkloadSpec, events: &[Envelope]) {
    let client = mongodb::Client::with_uri_str(mongo_url).await.expect("mongo client");
    let collection = client.database("votes").collection::<Document>(&spec.collection());
    collection.insert_many(events.iter().map(log_document)).await.expect("logging the events");
}
