//! Reading raw votes: JSON bodies in the seeds' format and gRPC messages, before any rule applies.

use serde_json::{Map, Value};

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

fn scalar(value: Value) -> Scalar {
    match value {
        Value::String(s) => Scalar::Text(s),
        Value::Number(n) => Scalar::Number(n),
        Value::Null => Scalar::Other("null"),
        Value::Bool(_) => Scalar::Other("a boolean"),
        Value::Array(_) => Scalar::Other("an array"),
        Value::Object(_) => Scalar::Other("an object"),
    }
}

/// Reads one JSON object in the seeds' shape; unknown keys are refused by name.
pub fn vote_from_object(object: Map<String, Value>) -> Result<VoteInput, VoteError> {
    let mut input = VoteInput::default();
    for (key, value) in object {
        let slot = match key.as_str() {
            "name" => &mut input.name,
            "album" => &mut input.album,
            "year" => &mut input.year,
            "rank" => &mut input.rank,
            _ => return Err(VoteError::new(Field::Body, format!("unknown field `{key}`"))),
        };
        *slot = Some(scalar(value));
    }
    Ok(input)
}

fn parse_value(body: &[u8]) -> Result<Value, VoteError> {
    serde_json::from_slice(body).map_err(|e| VoteError::new(Field::Body, format!("invalid JSON: {e}")))
}

/// Parses a body holding one vote object.
pub fn parse_json_vote(body: &[u8]) -> Result<VoteInput, VoteError> {
    match parse_value(body)? {
        Value::Object(object) => vote_from_object(object),
        _ => Err(VoteError::new(Field::Body, "expected a JSON object with name, album, year and rank")),
    }
}

/// Parses a body holding a JSON array of votes, at most `max_items` of them. Each item is read
/// on its own, so one bad item does not spoil the others.
pub fn parse_json_votes(body: &[u8], max_items: usize) -> Result<Vec<Result<VoteInput, VoteError>>, VoteError> {
    let Value::Array(items) = parse_value(body)? else {
        return Err(VoteError::new(Field::Body, "expected a JSON array of votes"));
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
            Value::Object(object) => vote_from_object(object),
            _ => Err(VoteError::new(Field::Body, "each vote must be a JSON object")),
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
}
