//! A workload's JSON body read into checked event fields: one JSON object holding only known
//! members, each sent once, each read by a rule that names its field when it fails. The text and
//! integer rules are vote-core's (the seeds send numbers as strings too).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use vote_core::{integer_value, parse_json_object, scalar, text_value, Scalar};

use crate::http::Reply;

/// The longest member name an error echoes back.
const MAX_ECHOED_NAME: usize = 64;

/// Why a body is refused: the field (or `body`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self { field: field.to_owned(), reason: reason.into() }
    }

    /// The `400` naming the field.
    pub fn reply(&self) -> Reply {
        Reply::error(400, &self.field, &self.reason)
    }
}

/// The members of one JSON object, checked to be known and sent once.
#[derive(Debug)]
pub struct Fields {
    members: BTreeMap<String, Scalar>,
}

impl Fields {
    /// Reads `body`: one JSON object whose members are all among `names`, each sent at most once.
    /// An unknown member is refused under its own name.
    pub fn parse(body: &[u8], names: &[&str]) -> Result<Self, FieldError> {
        let shape = names.join(", ");
        let entries = parse_json_object(body, &shape).map_err(|error| FieldError::new(error.field.as_str(), error.reason))?;
        let mut members = BTreeMap::new();
        for (name, value) in entries {
            if !names.contains(&name.as_str()) {
                let echoed: String = name.chars().take(MAX_ECHOED_NAME).collect();
                return Err(FieldError::new(&echoed, format!("is not a known field; send only {shape}")));
            }
            if members.insert(name.clone(), scalar(value)).is_some() {
                return Err(FieldError::new(&name, "is sent more than once; send each field once"));
            }
        }
        Ok(Self { members })
    }

    fn value(&self, name: &str) -> Result<&Scalar, FieldError> {
        self.members.get(name).ok_or_else(|| FieldError::new(name, "is required"))
    }

    /// A text field: trimmed, white space folded, NFC, no control or invisible characters, not
    /// empty, at most `max_bytes`.
    pub fn text(&self, name: &str, max_bytes: usize) -> Result<String, FieldError> {
        text_value(self.value(name)?, max_bytes).map_err(|reason| FieldError::new(name, reason))
    }

    /// An integer field (a JSON number or a string of digits) within `range`.
    pub fn integer(&self, name: &str, range: RangeInclusive<i64>) -> Result<i64, FieldError> {
        let value = integer_value(self.value(name)?).map_err(|reason| FieldError::new(name, reason))?;
        if !range.contains(&value) {
            return Err(FieldError::new(name, format!("{value} is out of range ({} to {})", range.start(), range.end())));
        }
        Ok(value)
    }

    /// A field that is one of `options`, matched without regard to case, accents or extra white
    /// space ([`fold`]); returns the option as written there.
    pub fn choice(&self, name: &str, options: &[&'static str]) -> Result<&'static str, FieldError> {
        let given = self.text(name, MAX_CHOICE_BYTES)?;
        pick(name, &given, options)
    }
}

/// The longest text a choice field reads.
const MAX_CHOICE_BYTES: usize = 64;

/// The option of `options` that `given` names once [`fold`]ed, or the error listing them.
pub fn pick(name: &str, given: &str, options: &[&'static str]) -> Result<&'static str, FieldError> {
    let folded = fold(given);
    options
        .iter()
        .find(|option| fold(option) == folded)
        .copied()
        .ok_or_else(|| FieldError::new(name, format!("{given:?} is not one of {}", options.join(", "))))
}

/// Lower case, accents dropped, white space trimmed and folded: "  Sacatepéquez " and
/// "sacatepequez" fold alike.
pub fn fold(text: &str) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            let mut bare = String::with_capacity(word.len());
            vote_core::unicode::push_without_marks(word, &mut bare);
            bare.to_lowercase()
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["city", "degrees", "sky"];

    fn parse(body: &str) -> Result<Fields, FieldError> {
        Fields::parse(body.as_bytes(), &NAMES)
    }

    #[test]
    fn unknown_and_repeated_members_are_refused_by_name() {
        assert_eq!(parse(r#"{"city":"a","colour":"red"}"#).unwrap_err().field, "colour");
        assert_eq!(parse(r#"{"city":"a","city":"b"}"#).unwrap_err().field, "city");
        assert_eq!(parse("[]").unwrap_err().field, "body");
        assert_eq!(parse("{oops").unwrap_err().field, "body");
        let long = format!(r#"{{"{}":1}}"#, "x".repeat(500));
        assert_eq!(parse(&long).unwrap_err().field.len(), MAX_ECHOED_NAME);
    }

    #[test]
    fn integers_come_as_numbers_or_digit_strings_within_range() {
        let fields = parse(r#"{"degrees":"-7","sky":31}"#).unwrap();
        assert_eq!(fields.integer("degrees", -10..=50), Ok(-7));
        assert_eq!(fields.integer("sky", -10..=50), Ok(31));
        assert_eq!(fields.integer("city", 0..=1).unwrap_err().reason, "is required");
        for bad in [r#"{"degrees":1.5}"#, r#"{"degrees":true}"#, r#"{"degrees":"1.5"}"#, r#"{"degrees":51}"#, r#"{"degrees":null}"#, r#"{"degrees":"  "}"#] {
            assert_eq!(parse(bad).unwrap().integer("degrees", -10..=50).unwrap_err().field, "degrees", "{bad}");
        }
    }

    #[test]
    fn choices_ignore_case_accents_and_spaces() {
        let fields = parse(r#"{"city":"  AMATITLÁN ","sky":"Petén"}"#).unwrap();
        assert_eq!(fields.choice("city", &["mixco", "amatitlan"]), Ok("amatitlan"));
        assert_eq!(fields.choice("sky", &["Petén", "Izabal"]), Ok("Petén"));
        assert_eq!(pick("sky", "san  marcos", &["San Marcos"]), Ok("San Marcos"));
        let error = pick("sky", "Narnia", &["Petén", "Izabal"]).unwrap_err();
        assert_eq!(error.field, "sky");
        assert!(error.reason.contains("Petén, Izabal"), "{error:?}");
    }

    #[test]
    fn text_is_bounded_and_clean() {
        let fields = parse(&format!(r#"{{"city":"{}","sky":"a\u0007b","degrees":"  Escuela  Oficial "}}"#, "x".repeat(65))).unwrap();
        assert!(fields.text("city", 64).is_err());
        assert!(fields.text("sky", 64).is_err());
        assert_eq!(fields.text("degrees", 64), Ok("Escuela Oficial".into()));
        assert_eq!(parse(r#"{"city":12}"#).unwrap().text("city", 64).unwrap_err().field, "city");
    }
}
