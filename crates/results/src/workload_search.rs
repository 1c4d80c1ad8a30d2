//! The log search of a manifest workload over MongoDB `votes.<collection>`: equality on the
//! event fields its spec lets users search (`search = [...]`), newest first, one bounded page.
//!
//! A workload's log document holds the event's fields under `data`, its id as `_id`, and
//! `received_at` (a date) and `producer` beside them.

use mongodb::bson::{Bson, Document};
use mongodb::Collection;
use serde::Serialize;
use vote_platform::WorkloadSpec;

use crate::search::{self, bounded_text, invalid, page_size, QueryError, SearchError, DEFAULT_PAGE};

/// The longest value a field filter may hold (an event's text field is at most this long).
pub const MAX_VALUE_BYTES: usize = vote_platform::event::MAX_TEXT_BYTES;

/// A checked search: field filters (only the spec's searchable fields, each at most once) and a
/// bounded page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadQuery {
    pub fields: Vec<(String, String)>,
    pub limit: u32,
}

impl WorkloadQuery {
    /// Reads the query string's pairs against `spec`; empty values count as absent, unknown or
    /// repeated parameters are refused by name.
    pub fn parse(spec: &WorkloadSpec, pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut query = WorkloadQuery { fields: Vec::new(), limit: DEFAULT_PAGE };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let shown: String = name.chars().take(64).collect();
            if seen.contains(&name.as_str()) {
                return Err(invalid(&shown, "given more than once"));
            }
            seen.push(name);
            let value = value.trim();
            if name == "limit" {
                if !value.is_empty() {
                    query.limit = page_size(name, value)?;
                }
            } else if spec.search.iter().any(|field| field == name) {
                if !value.is_empty() {
                    query.fields.push((name.clone(), bounded_text(name, value, MAX_VALUE_BYTES)?));
                }
            } else {
                return Err(invalid(&shown, format!("unknown parameter (known: {}, limit)", spec.search.join(", "))));
            }
        }
        Ok(query)
    }

    /// The MongoDB filter: equality on each field of the event's `data`.
    pub fn filter(&self) -> Document {
        self.fields.iter().map(|(field, value)| (format!("data.{field}"), Bson::String(value.clone()))).collect()
    }
}

/// One event's log as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventEntry {
    pub id: String,
    pub producer: String,
    /// RFC 3339, milliseconds, UTC.
    pub received_at: String,
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// One page of events, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub items: Vec<EventEntry>,
    /// Whether more events match than the page holds.
    pub more: bool,
}

fn entry(document: &Document) -> EventEntry {
    let data = document.get_document("data").map(|data| data.iter().map(|(k, v)| (k.clone(), v.clone().into_relaxed_extjson())).collect()).unwrap_or_default();
    EventEntry {
        id: document.get_str("_id").unwrap_or_default().to_owned(),
        producer: document.get_str("producer").unwrap_or_default().to_owned(),
        received_at: document.get_datetime("received_at").map(|t| search::rfc3339(t.timestamp_millis())).unwrap_or_default(),
        data,
    }
}

/// Runs the query on the workload's collection.
pub async fn search(events: &Collection<Document>, query: &WorkloadQuery) -> Result<EventPage, SearchError> {
    let documents = search::find_newest(events, query.filter(), i64::from(query.limit) + 1).await?;
    let more = documents.len() > query.limit as usize;
    Ok(EventPage { items: documents.iter().take(query.limit as usize).map(entry).collect(), more })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        let mut spec: WorkloadSpec = serde_json::from_value(serde_json::json!({ "title": "W", "topic": "weather", "search": ["municipality", "weather"] })).unwrap();
        spec.name = "weather".into();
        spec
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_the_spec_fields_and_a_bounded_limit_are_taken() {
        let query = WorkloadQuery::parse(&spec(), &pairs(&[("municipality", " mixco "), ("weather", ""), ("limit", "5")])).unwrap();
        assert_eq!(query, WorkloadQuery { fields: vec![("municipality".into(), "mixco".into())], limit: 5 });
        assert_eq!(query.filter().get_str("data.municipality").unwrap(), "mixco");
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        for (query, field) in [
            (&[("temperature", "20")][..], "temperature"),
            (&[("limit", "0")], "limit"),
            (&[("limit", "1000")], "limit"),
            (&[("weather", "a"), ("weather", "b")], "weather"),
            (&[("weather", "a\u{7}")], "weather"),
            (&[("municipality", long.as_str())], "municipality"),
        ] {
            assert_eq!(WorkloadQuery::parse(&spec(), &pairs(query)).unwrap_err().field, field, "{query:?}");
        }
    }

    #[test]
    fn a_log_document_becomes_an_entry() {
        let document = mongodb::bson::doc! {
            "_id": "e1", "producer": "weather-rest@0.1.0",
            "received_at": mongodb::bson::DateTime::from_millis(1_767_225_600_000),
            "data": { "municipality": "mixco", "temperature": 21_i64 },
        };
        let entry = entry(&document);
        assert_eq!(entry.received_at, "2026-01-01T00:00:00Z");
        assert_eq!(serde_json::Value::Object(entry.data), serde_json::json!({ "municipality": "mixco", "temperature": 21 }));
    }
}
