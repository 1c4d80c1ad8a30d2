//! The Kafka Bridge's JSON (its OpenAPI `ProducerRecordList`, `OffsetRecordSentList` and `Error`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The content type of a record list whose keys, values and header values are base64.
pub const BINARY_RECORDS: &str = "application/vnd.kafka.binary.v2+json";
/// The content type of every reply of the produce endpoint.
pub const BRIDGE_REPLY: &str = "application/vnd.kafka.v2+json";

/// `ProducerRecordList`: the request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordList {
    pub records: Vec<ProducerRecord>,
}

/// `ProducerRecord`: one record to send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerRecord {
    pub value: serde_json::Value,
    #[serde(default)]
    pub key: Option<serde_json::Value>,
    #[serde(default)]
    pub partition: Option<i32>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub headers: Option<Vec<KafkaHeader>>,
}

/// `KafkaHeader`: a header whose value is base64.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaHeader {
    pub key: String,
    pub value: String,
}

/// A record decoded from base64, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One entry of `OffsetRecordSentList.offsets`: where the record landed, or why it did not.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RecordOutcome {
    /// `OffsetRecordSent`.
    Sent { partition: i32, offset: i64 },
    /// `Error`.
    Failed { error_code: i32, message: String },
}

/// `OffsetRecordSentList`: the reply to a produce request.
#[derive(Debug, Serialize)]
pub struct OffsetList {
    pub offsets: Vec<RecordOutcome>,
}

/// `Error`: the reply to a request that is refused as a whole.
#[derive(Debug, Serialize)]
pub struct BridgeError {
    pub error_code: u16,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
}

/// Decodes a record list (binary embedded format) or lists every problem, naming the record.
pub fn decode(list: RecordList) -> Result<Vec<DecodedRecord>, Vec<String>> {
    let mut problems = Vec::new();
    let mut decoded = Vec::with_capacity(list.records.len());
    for (index, record) in list.records.into_iter().enumerate() {
        let value = match &record.value {
            serde_json::Value::Null => {
                problems.push(format!("records[{index}].value: this bridge does not send tombstones (null values)"));
                None
            }
            other => base64_field(&format!("records[{index}].value"), Some(other), &mut problems),
        };
        let key = base64_field(&format!("records[{index}].key"), record.key.as_ref(), &mut problems);
        let mut headers = Vec::new();
        for (position, header) in record.headers.iter().flatten().enumerate() {
            let field = format!("records[{index}].headers[{position}].value");
            let text = serde_json::Value::String(header.value.clone());
            if let Some(bytes) = base64_field(&field, Some(&text), &mut problems) {
                headers.push((header.key.clone(), bytes));
            }
        }
        if record.partition.is_some() {
            problems.push(format!("records[{index}].partition: this bridge lets the producer choose the partition (by key)"));
        }
        if record.timestamp.is_some() {
            problems.push(format!("records[{index}].timestamp: this bridge stamps records with the producer's time"));
        }
        if let (Some(key), Some(value)) = (key, value) {
            decoded.push(DecodedRecord { key, value, headers });
        }
    }
    if problems.is_empty() {
        Ok(decoded)
    } else {
        Err(problems)
    }
}

/// The bytes of a base64 string field (absent or null: empty), or a problem naming the field.
fn base64_field(field: &str, value: Option<&serde_json::Value>, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    match value {
        None | Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(serde_json::Value::String(text)) => match BASE64.decode(text) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                problems.push(format!("{field}: not base64 ({error})"));
                None
            }
        },
        Some(_) => {
            problems.push(format!("{field}: the binary format takes a base64 string"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: serde_json::Value) -> RecordList {
        serde_json::from_value(json).expect("a record list")
    }

    #[test]
    fn decodes_keys_values_and_headers() {
        let decoded = decode(list(serde_json::json!({ "records": [
            { "key": "a2V5", "value": "dmFsdWU=", "headers": [{ "key": "h", "value": "eA==" }] },
            { "value": "" },
        ]})))
        .unwrap();
        assert_eq!(decoded[0], DecodedRecord { key: b"key".to_vec(), value: b"value".to_vec(), headers: vec![("h".into(), b"x".to_vec())] });
        assert_eq!(decoded[1], DecodedRecord { key: Vec::new(), value: Vec::new(), headers: Vec::new() });
    }

    #[test]
    fn names_every_bad_field() {
        let problems = decode(list(serde_json::json!({ "records": [
            { "key": "not base64!", "value": null },
            { "value": { "json": true }, "partition": 1 },
        ]})))
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("records[0].value"), "{problems:?}");
        assert!(problems[1].starts_with("records[0].key"), "{problems:?}");
        assert!(problems[2].starts_with("records[1].value"), "{problems:?}");
        assert!(problems[3].starts_with("records[1].partition"), "{problems:?}");
    }

    #[test]
    fn outcomes_serialize_as_offset_or_error() {
        let offsets = OffsetList { offsets: vec![RecordOutcome::Sent { partition: 2, offset: 7 }, RecordOutcome::Failed { error_code: 404, message: "no".into() }] };
        assert_eq!(
            serde_json::to_value(&offsets).unwrap(),
            serde_json::json!({ "offsets": [{ "partition": 2, "offset": 7 }, { "error_code": 404, "message": "no" }] })
        );
    }
}
