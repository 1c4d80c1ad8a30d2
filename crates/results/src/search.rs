//! The log search over MongoDB `votes.logs`: query parameters checked and turned into a filter,
//! newest first, one bounded page at a time with a cursor.

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::Collection;
use serde::Serialize;

/// Page size when the query names none.
pub const DEFAULT_PAGE: u32 = 25;
/// The largest page a query may ask for.
pub const MAX_PAGE: u32 = 100;
/// The longest text a filter may hold (a vote's field is at most this long too).
pub const MAX_FILTER_BYTES: usize = vote_core::MAX_TEXT_BYTES;

/// A query parameter that is wrong, named.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct QueryError {
    pub field: String,
    pub reason: String,
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> QueryError {
    QueryError { field: field.to_owned(), reason: reason.into() }
}

/// Where the previous page ended: the last document's received time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub received_at_ms: i64,
    pub vote_id: String,
}

impl Cursor {
    /// `<received_at_ms>:<vote_id>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.received_at_ms, self.vote_id)
    }

    fn parse(raw: &str) -> Result<Self, QueryError> {
        let (ms, id) = raw.split_once(':').ok_or_else(|| invalid("cursor", "not a cursor from a previous page"))?;
        let received_at_ms = ms.parse().map_err(|_| invalid("cursor", "not a cursor from a previous page"))?;
        if id.is_empty() || id.len() > MAX_FILTER_BYTES {
            return Err(invalid("cursor", "not a cursor from a previous page"));
        }
        Ok(Self { received_at_ms, vote_id: id.to_owned() })
    }
}

/// A checked search: every filter is optional, the page size bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub band: Option<String>,
    pub album: Option<String>,
    pub path: Option<String>,
    pub producer: Option<String>,
    pub vote_id: Option<String>,
    /// Received at or after (unix milliseconds).
    pub from_ms: Option<i64>,
    /// Received before (unix milliseconds).
    pub to_ms: Option<i64>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// A time given as RFC 3339 (`2026-11-24T16:30:00Z`) or unix milliseconds.
fn parse_time(field: &str, raw: &str) -> Result<i64, QueryError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_rfc3339_str(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid(field, "expected an RFC 3339 time (2026-11-24T16:30:00Z) or unix milliseconds"))
}

fn text(field: &str, raw: &str) -> Result<String, QueryError> {
    bounded_text(field, raw, MAX_FILTER_BYTES)
}

/// A filter value of at most `max` bytes without control characters.
pub(crate) fn bounded_text(field: &str, raw: &str, max: usize) -> Result<String, QueryError> {
    if raw.len() > max {
        return Err(invalid(field, format!("at most {max} bytes")));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(raw.to_owned())
}

/// A page size from 1 to [`MAX_PAGE`].
pub(crate) fn page_size(field: &str, raw: &str) -> Result<u32, QueryError> {
    raw.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| invalid(field, format!("expected a whole number from 1 to {MAX_PAGE}")))
}

impl LogQuery {
    /// Reads the query string's pairs; empty values count as absent, unknown or repeated
    /// parameters are refused by name.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut query = LogQuery { band: None, album: None, path: None, producer: None, vote_id: None, from_ms: None, to_ms: None, limit: DEFAULT_PAGE, cursor: None };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(invalid(name, "given more than once"));
            }
            seen.push(name);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "band" => query.band = Some(text(name, value)?),
                "album" => query.album = Some(text(name, value)?),
                "path" => query.path = Some(text(name, value)?),
                "producer" => query.producer = Some(text(name, value)?),
                "vote_id" => query.vote_id = Some(text(name, value)?),
                "from" => query.from_ms = Some(parse_time(name, value)?),
                "to" => query.to_ms = Some(parse_time(name, value)?),
                "limit" => query.limit = page_size(name, value)?,
                "cursor" => query.cursor = Some(Cursor::parse(value)?),
                _ => return Err(invalid(name, "unknown parameter (known: band, album, path, producer, vote_id, from, to, limit, cursor)")),
            }
        }
        if let (Some(from), Some(to)) = (query.from_ms, query.to_ms) {
            if from > to {
                return Err(invalid("to", "is before from"));
            }
        }
        Ok(query)
    }

    /// The MongoDB filter: equality on the text fields, a range on `received_at`, and the
    /// cursor's "older than the last one shown".
    pub fn filter(&self) -> Document {
        let mut filter = Document::new();
        for (key, value) in [("name", &self.band), ("album", &self.album), ("path", &self.path), ("producer", &self.producer), ("_id", &self.vote_id)] {
            if let Some(value) = value {
                filter.insert(key, value.as_str());
            }
        }
        let mut range = Document::new();
        if let Some(from) = self.from_ms {
            range.insert("$gte", DateTime::from_millis(from));
        }
        if let Some(to) = self.to_ms {
            range.insert("$lt", DateTime::from_millis(to));
        }
        if !range.is_empty() {
            filter.insert("received_at", range);
        }
        match &self.cursor {
            // NX-27017 ignores a top-level `received_at` range next to an `$or` on the same
            // field, so the cursor's condition is joined with `$and` (which it honours).
            Some(cursor) => {
                let at = DateTime::from_millis(cursor.received_at_ms);
                let after_cursor = doc! { "$or": [
                    { "received_at": { "$lt": at } },
                    { "received_at": at, "_id": { "$lt": cursor.vote_id.as_str() } },
                ] };
                doc! { "$and": [filter, after_cursor] }
            }
            None => filter,
        }
    }
}

/// One vote's log as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    pub vote_id: String,
    pub name: String,
    pub album: String,
    pub year: i64,
    pub rank: i64,
    pub path: String,
    pub producer: String,
    /// RFC 3339, milliseconds, UTC.
    pub received_at: String,
    pub consumed_at: String,
    #[serde(skip)]
    pub received_at_ms: i64,
}

/// One page of results and the cursor of the next page, if there is one.
#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    pub next_cursor: Option<String>,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    DateTime::from_millis(ms).try_to_rfc3339_string().unwrap_or_default()
}

fn integer(document: &Document, key: &str) -> i64 {
    match document.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

fn entry(document: &Document) -> LogEntry {
    let string = |key: &str| document.get_str(key).unwrap_or_default().to_owned();
    let time = |key: &str| document.get_datetime(key).map(|t| t.timestamp_millis()).unwrap_or(0);
    LogEntry {
        vote_id: string("_id"),
        name: string("name"),
        album: string("album"),
        year: integer(document, "year"),
        rank: integer(document, "rank"),
        path: string("path"),
        producer: string("producer"),
        received_at: rfc3339(time("received_at")),
        consumed_at: rfc3339(time("consumed_at")),
        received_at_ms: time("received_at"),
    }
}

/// Why a search has no page.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("the search took longer than {0} s")]
    TooSlow(u64),
}

/// The longest one search may run (on the server, `maxTimeMS`, and here): past it the page gets
/// a 503 instead of holding a connection and the database.
pub const SEARCH_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The first `limit` documents matching `filter`, newest first (`received_at`, then `_id`,
/// descending), within [`SEARCH_TIME_LIMIT`] on the server and here.
pub(crate) async fn find_newest(logs: &Collection<Document>, filter: Document, limit: i64) -> Result<Vec<Document>, SearchError> {
    let find = async {
        logs.find(filter).sort(doc! { "received_at": -1, "_id": -1 }).limit(limit).max_time(SEARCH_TIME_LIMIT).await?.try_collect::<Vec<Document>>().await
    };
    Ok(tokio::time::timeout(SEARCH_TIME_LIMIT, find).await.map_err(|_| SearchError::TooSlow(SEARCH_TIME_LIMIT.as_secs()))??)
}

/// Runs the query: newest first (`received_at`, then `_id`, descending), one page, within
/// [`SEARCH_TIME_LIMIT`].
pub async fn search(logs: &Collection<Document>, query: &LogQuery) -> Result<LogPage, SearchError> {
    let documents = find_newest(logs, query.filter(), i64::from(query.limit) + 1).await?;
    let mut items: Vec<LogEntry> = documents.iter().map(entry).collect();
    let next_cursor = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|last| Cursor { received_at_ms: last.received_at_ms, vote_id: last.vote_id.clone() }.encode())
    } else {
        None
    };
    Ok(LogPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, field) in [
            (&[("limit", "0")][..], "limit"),
            (&[("limit", "101")], "limit"),
            (&[("limit", "ten")], "limit"),
            (&[("from", "yesterday")], "from"),
            (&[("from", "2026-01-02T00:00:00Z"), ("to", "2026-01-01T00:00:00Z")], "to"),
            (&[("cursor", "nope")], "cursor"),
            (&[("bnad", "x")], "bnad"),
            (&[("band", "a"), ("band", "b")], "band"),
        ] {
            assert_eq!(LogQuery::parse(&pairs(query)).unwrap_err().field, field, "{query:?}");
        }
        let long = "x".repeat(MAX_FILTER_BYTES + 1);
        assert_eq!(LogQuery::parse(&pairs(&[("album", &long)])).unwrap_err().field, "album");
    }

    #[test]
    fn empty_values_are_absent_and_times_take_both_forms() {
        let query = LogQuery::parse(&pairs(&[("band", ""), ("from", "1700000000000"), ("to", "2023-11-14T22:13:21Z")])).unwrap();
        assert_eq!(query.band, None);
        assert_eq!(query.from_ms, Some(1_700_000_000_000));
        assert_eq!(query.to_ms, Some(1_700_000_001_000));
        assert_eq!(query.limit, DEFAULT_PAGE);
    }

    #[test]
    fn cursor_round_trips_into_the_filter() {
        let cursor = Cursor { received_at_ms: 42, vote_id: "abc".into() };
        let query = LogQuery::parse(&pairs(&[("cursor", &cursor.encode()), ("band", "Alux Nahual")])).unwrap();
        assert_eq!(query.cursor, Some(cursor));
        let filter = query.filter();
        let parts = filter.get_array("$and").unwrap();
        assert_eq!(parts[0].as_document().unwrap().get_str("name").unwrap(), "Alux Nahual");
        assert_eq!(parts[1].as_document().unwrap().get_array("$or").unwrap().len(), 2);
    }
}
