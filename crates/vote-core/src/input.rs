//! Reading raw votes: JSON bodies in the seeds' format and gRPC messages, before any rule applies.

use serde_json::Value;

use crate::rules::{Field, VoteError};

/// A field's value as the voter sent it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A JSON string or a protobuf string field.
    Text(String),
    /// A JSON number (kept as written so that `3.5` or `1e3` can be refused by name).
    Number(serde_json::Number),
    /// Anything else (JSON `null`, boolean, array, object), named by its kind.
    Other(&'static str),
}

/// A vote as received: every field optional, nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoteInput {
    pub name: Option<Scalar>,
    pub album: Option<Scalar>,
    pub year: Option<Scalar>,
    pub rank: Option<Scalar>,
}

impl VoteInput {
    /// A vote from four strings, as the gRPC `Vote` message carries it.
    pub fn from_strings(name: &str, album: &str, year: &str, rank: &str) -> Self {
        let text = |s: &str| Some(Scalar::Text(s.to_owned()));
        Self { name: text(name), album: text(album), year: text(year), rank: text(rank) }
    }
}

impl From<&crate::proto::Vote> for VoteInput {
    fn from(vote: &crate::proto::Vote) -> Self {
        Self::from_strings(&vote.name, &vote.album, &vote.year, &vote.rank)
    }
}

/// A JSON value as a [`Scalar`].
pub fn scalar(value: Value) -> Scalar {
    match value {
        Value::String(s) => Scalar::Text(s),
        Value::Number(n) => Scalar::Number(n),
        Value::Null => Scalar::Other("null"),
        Value::Bool(_) => Scalar::Other("a boolean"),
        Value::Array(_) => Scalar::Other("an array"),
        Value::Object(_) => Scalar::Other("an object"),
    }
}

/// Reads the members of one JSON object in the seeds' shape, in the order sent: unknown keys and
/// keys sent twice are refused by name (a map would keep one of two values silently).
fn vote_from_entries(entries: Vec<(String, Value)>) -> Result<VoteInput, VoteError> {
    let mut input = VoteInput::default();
    for (key, value) in entries {
        let (field, slot) = match key.as_str() {
            "name" => (Field::Name, &mut input.name),
            "album" => (Field::Album, &mut input.album),
            "year" => (Field::Year, &mut input.year),
            "rank" => (Field::Rank, &mut input.rank),
            _ => return Err(VoteError::new(Field::Body, format!("unknown field `{key}`"))),
        };
        if slot.is_some() {
            return Err(VoteError::new(field, "is sent more than once; send each field once"));
        }
        *slot = Some(scalar(value));
    }
    Ok(input)
}

impl Document {
    /// What the document is, for an error that expected something else.
    fn kind(&self) -> &'static str {
        match self {
            Document::Object(_) => "an object",
            Document::Array(_) => "an array",
            Document::Other(kind) => kind,
        }
    }
}

/// A JSON document read with its objects' members kept as sent, duplicates included (only the
/// outer levels a vote body has: a top-level object, or an array of them).
enum Document {
    Object(Vec<(String, Value)>),
    Array(Vec<Document>),
    /// Anything else, named by its kind.
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(Document::Object(entries))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Document>()? {
            items.push(item);
        }
        Ok(Document::Array(items))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }
}

fn parse_document(body: &[u8]) -> Result<Document, VoteError> {
    serde_json::from_slice(body).map_err(|e| VoteError::new(Field::Body, format!("invalid JSON: {e}")))
}

/// Parses a body holding one JSON object; returns its members in the order sent, duplicates
/// included (so the caller can refuse them by name). `shape` says what the object should hold,
/// for the error about anything else.
pub fn parse_json_object(body: &[u8], shape: &str) -> Result<Vec<(String, Value)>, VoteError> {
    match parse_document(body)? {
        Document::Object(entries) => Ok(entries),
        other => Err(VoteError::new(Field::Body, format!("expected a JSON object with {shape}, not {}", other.kind()))),
    }
}

/// Parses a body holding one vote object.
pub fn parse_json_vote(body: &[u8]) -> Result<VoteInput, VoteError> {
    vote_from_entries(parse_json_object(body, "name, album, year and rank")?)
}

/// Parses a body holding a JSON array of votes, at most `max_items` of them. Each item is read
/// on its own, so one bad item does not spoil the others.
pub fn parse_json_votes(body: &[u8], max_items: usize) -> Result<Vec<Result<VoteInput, VoteError>>, VoteError> {
    let items = match parse_document(body)? {
        Document::Array(items) => items,
        other => return Err(VoteError::new(Field::Body, format!("expected a JSON array of votes, not {}", other.kind()))),
    };
    if items.is_empty() {
        return Err(VoteError::new(Field::Body, "the batch is empty"));
    }
    if items.len() > max_items {
        return Err(VoteError::new(
            Field::Body,
            format!("the batch has {} votes, more than the limit of {max_items}", items.len()),
        ));
    }
    Ok(items
        .into_iter()
        .map(|item| match item {
            Document::Object(entries) => vote_from_entries(entries),
            other => Err(VoteError::new(Field::Body, format!("each vote must be a JSON object, not {}", other.kind()))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_numbers() {
        let input = parse_json_vote(br#"{"name":"Bohemia Suburbana","album":"Maria","year":"1995","rank":2}"#).unwrap();
        assert_eq!(input.name, Some(Scalar::Text("Bohemia Suburbana".into())));
        assert_eq!(input.year, Some(Scalar::Text("1995".into())));
        assert_eq!(input.rank, Some(Scalar::Number(2.into())));
    }

    #[test]
    fn refuses_unknown_fields_and_non_objects() {
        let err = parse_json_vote(br#"{"name":"x","colour":"red"}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert_eq!(parse_json_vote(b"[1]").unwrap_err().field, Field::Body);
        assert!(parse_json_vote(b"{oops").unwrap_err().to_string().contains("invalid JSON"));
    }

    #[test]
    fn batches_are_bounded_and_read_per_item() {
        let items = parse_json_votes(br#"[{"name":"a"}, 7]"#, 10).unwrap();
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert!(parse_json_votes(b"[]", 10).is_err());
        assert!(parse_json_votes(b"[{},{},{}]", 2).unwrap_err().to_string().contains("limit of 2"));
    }

    #[test]
    fn refuses_a_field_sent_twice_by_name() {
        let err = parse_json_vote(br#"{"name":"A","name":"B","album":"x","year":2000,"rank":1}"#).unwrap_err();
        assert_eq!(err.field, Field::Name, "{err}");
        assert!(err.reason.contains("more than once"), "{err}");
        // The same value twice is still a duplicate; so is a duplicate after other fields.
        let err = parse_json_vote(br#"{"rank":1,"name":"A","album":"x","year":2000,"rank":1}"#).unwrap_err();
        assert_eq!(err.field, Field::Rank);
        // Per item in a batch: the duplicate spoils only its own item.
        let items = parse_json_votes(br#"[{"album":"a","album":"b"},{"name":"ok"}]"#, 10).unwrap();
        assert_eq!(items[0].as_ref().unwrap_err().field, Field::Album);
        assert!(items[1].is_ok());
        // Duplicates nested inside a value are the value's problem (an object is refused anyway).
        assert!(parse_json_vote(br#"{"name":{"a":1,"a":2}}"#).is_ok());
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_bad_json_or_bad_values_never_a_crash() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_json_vote(deep.as_bytes()).unwrap_err().field, Field::Body);
        assert_eq!(parse_json_votes(deep.as_bytes(), 10).unwrap_err().field, Field::Body);
        let deep_value = format!(r#"{{"name":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_json_vote(deep_value.as_bytes()).unwrap_err().field, Field::Body);
        assert!(parse_json_vote(br#"{"year":1e999}"#).is_err());
        let input = parse_json_vote(br#"{"year":123456789012345678901234567890}"#).unwrap();
        assert!(matches!(input.year, Some(Scalar::Number(_))));
        assert!(parse_json_vote(b"{\"name\":\"\xff\"}").is_err());
    }
}
