//! The vote rules: what a valid vote is, and how its fields are normalised.

use std::fmt;

use crate::input::{Scalar, VoteInput};

/// The longest band or album name accepted, in UTF-8 bytes after normalisation.
pub const MAX_TEXT_BYTES: usize = 128;
/// The earliest album year accepted.
pub const MIN_YEAR: i32 = 1900;
/// The highest rank accepted (ranks start at 1).
pub const MAX_RANK: u32 = 1000;

/// The part of a request a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    Album,
    Year,
    Rank,
    /// The request body as a whole (bad JSON, wrong shape, unknown keys).
    Body,
    /// The client's idempotency key (HTTP header or gRPC metadata `idempotency-key`).
    IdempotencyKey,
}

impl Field {
    /// The field's name as it appears in the JSON and in error replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Album => "album",
            Field::Year => "year",
            Field::Rank => "rank",
            Field::Body => "body",
            Field::IdempotencyKey => "idempotency-key",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a vote was refused: the field and the reason, in words a voter can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct VoteError {
    pub field: Field,
    pub reason: String,
}

impl VoteError {
    pub fn new(field: Field, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A vote that passed every rule, with its text normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidVote {
    pub name: String,
    pub album: String,
    pub year: i32,
    pub rank: u32,
}

/// Applies every rule to a received vote: the first failing field is reported.
pub fn validate(input: &VoteInput) -> Result<ValidVote, VoteError> {
    Ok(ValidVote {
        name: text(Field::Name, input.name.as_ref())?,
        album: text(Field::Album, input.album.as_ref())?,
        year: year(input.year.as_ref(), current_year())?,
        rank: rank(input.rank.as_ref())?,
    })
}

/// Trims, folds runs of white space into one space and puts the text in Unicode NFC, so that
/// "Malacates  Trébol Shop " and "Malacates Trébol Shop" count as the same band.
pub fn normalise_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        crate::unicode::push_nfc(word, &mut out);
    }
    out
}

fn text(field: Field, value: Option<&Scalar>) -> Result<String, VoteError> {
    let value = value.ok_or_else(|| VoteError::new(field, "is required"))?;
    text_value(value, MAX_TEXT_BYTES).map_err(|reason| VoteError::new(field, reason))
}

/// The rule for a text field, without the field (any producer's text fields share it): a
/// string without control or invisible format characters, [`normalise_text`]ed, not empty and
/// at most `max_bytes` long; else why not.
pub fn text_value(value: &Scalar, max_bytes: usize) -> Result<String, String> {
    let raw = match value {
        Scalar::Text(s) => s,
        Scalar::Number(_) => return Err("must be a string, not a number".into()),
        Scalar::Other(kind) => return Err(format!("must be a string, not {kind}")),
    };
    if raw.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err("must not contain control characters".into());
    }
    if let Some(c) = raw.chars().find(|&c| is_invisible_format(c)) {
        return Err(format!(
            "must not contain invisible format characters such as U+{:04X} (bidirectional overrides, zero-width characters)",
            c as u32
        ));
    }
    let normalised = normalise_text(raw);
    if normalised.is_empty() {
        return Err("must not be empty".into());
    }
    if normalised.len() > max_bytes {
        return Err(format!("is {} bytes long, more than the limit of {max_bytes}", normalised.len()));
    }
    Ok(normalised)
}

/// Whether `c` is an invisible format character (Unicode general category Cf: bidirectional
/// overrides and isolates, zero-width spaces and joiners, the byte-order mark, ...). Such names
/// are refused rather than stripped: they render like another band's name and would spoof the
/// results, and a voter who did not mean them is better told than silently changed.
pub fn is_invisible_format(c: char) -> bool {
    crate::unicode::is_format(c)
}

/// Reads an integer sent either as a JSON number or as a string of decimal digits.
fn integer(field: Field, value: Option<&Scalar>) -> Result<i64, VoteError> {
    let value = value.ok_or_else(|| VoteError::new(field, "is required"))?;
    integer_value(value).map_err(|reason| VoteError::new(field, reason))
}

/// The rule for an integer field, without the field: a JSON number or a string of decimal
/// digits (the seeds send strings), whole and within `i64`; else why not.
pub fn integer_value(value: &Scalar) -> Result<i64, String> {
    match value {
        Scalar::Number(n) => n.as_i64().ok_or_else(|| match n.as_u64() {
            Some(big) => format!("{big} is out of range"),
            None => format!("must be a whole number, not {}", shown_float(n.as_f64().unwrap_or(f64::NAN))),
        }),
        Scalar::Text(s) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                return Err("must not be empty".into());
            }
            let unsigned = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("must be a whole number, not {trimmed:?}"));
            }
            trimmed.strip_prefix('+').unwrap_or(trimmed).parse::<i64>().map_err(|_| format!("{trimmed} is out of range"))
        }
        Scalar::Other(kind) => Err(format!("must be a number or a string of digits, not {kind}")),
    }
}

/// A JSON number that is not whole, as an error shows it: with core's float formatting, not
/// serde_json's, whose 17 KiB of tables would sit in the memory of every guest instance.
fn shown_float(value: f64) -> String {
    if value.abs() < 1e16 {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

fn year(value: Option<&Scalar>, current_year: i32) -> Result<i32, VoteError> {
    let year = integer(Field::Year, value)?;
    let latest = i64::from(current_year) + 1;
    if !(i64::from(MIN_YEAR)..=latest).contains(&year) {
        return Err(VoteError::new(Field::Year, format!("{year} is not a plausible year ({MIN_YEAR} to {latest})")));
    }
    Ok(year as i32)
}

fn rank(value: Option<&Scalar>) -> Result<u32, VoteError> {
    let rank = integer(Field::Rank, value)?;
    if !(1..=i64::from(MAX_RANK)).contains(&rank) {
        return Err(VoteError::new(Field::Rank, format!("{rank} is not a rank from 1 to {MAX_RANK}")));
    }
    Ok(rank as u32)
}

/// The current calendar year (UTC), from the system clock.
fn current_year() -> i32 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 365.2425 days a year is exact enough for a bound that allows one year of slack.
    1970 + (seconds / 31_556_952) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_json_vote;

    fn check(json: &str) -> Result<ValidVote, VoteError> {
        validate(&parse_json_vote(json.as_bytes())?)
    }

    #[test]
    fn accepts_the_seeds_string_format() {
        let vote = check(r#"{"name":"Alux Nahual","album":"Alto al fuego","year":"1984","rank":"1"}"#).unwrap();
        assert_eq!(vote, ValidVote { name: "Alux Nahual".into(), album: "Alto al fuego".into(), year: 1984, rank: 1 });
    }

    #[test]
    fn accepts_numbers_for_year_and_rank() {
        let vote = check(r#"{"name":"Viernes Verde","album":"Viernes Verde","year":2004,"rank":3}"#).unwrap();
        assert_eq!((vote.year, vote.rank), (2004, 3));
    }

    #[test]
    fn keeps_accents_and_non_ascii_and_normalises_to_nfc() {
        // "Trébol" written with a combining acute accent becomes the precomposed form.
        let vote = check("{\"name\":\"  Malacates   Tre\u{301}bol Shop \",\"album\":\"Niño\",\"year\":\" 2008 \",\"rank\":\"+2\"}").unwrap();
        assert_eq!(vote.name, "Malacates Trébol Shop");
        assert_eq!(vote.album, "Niño");
        assert_eq!((vote.year, vote.rank), (2008, 2));
        let vote = check(r#"{"name":"Gaby Moreno 🎸","album":"Ilusión","year":2016,"rank":1}"#).unwrap();
        assert_eq!(vote.name, "Gaby Moreno 🎸");
    }

    #[test]
    fn names_the_missing_or_empty_field() {
        assert_eq!(check(r#"{"album":"a","year":2000,"rank":1}"#).unwrap_err().field, Field::Name);
        let err = check(r#"{"name":"  ","album":"a","year":2000,"rank":1}"#).unwrap_err();
        assert_eq!((err.field, err.reason.as_str()), (Field::Name, "must not be empty"));
        assert_eq!(check(r#"{"name":"b","album":"\t\n","year":2000,"rank":1}"#).unwrap_err().field, Field::Album);
        assert_eq!(check(r#"{"name":"b","album":"a","rank":1}"#).unwrap_err().field, Field::Year);
        assert_eq!(check(r#"{"name":"b","album":"a","year":"2000"}"#).unwrap_err().field, Field::Rank);
    }

    #[test]
    fn names_numbers_that_are_not_whole_or_too_large() {
        // A whole number over i64 was once called "not a whole number".
        let reason = |json: &str| check(json).unwrap_err().reason;
        assert_eq!(reason(r#"{"name":"b","album":"a","year":2000,"rank":1.5}"#), "must be a whole number, not 1.5");
        assert_eq!(reason(r#"{"name":"b","album":"a","year":2000,"rank":-2.25e300}"#), "must be a whole number, not -2.25e300");
        assert_eq!(reason(r#"{"name":"b","album":"a","year":2000,"rank":18446744073709551615}"#), "18446744073709551615 is out of range");
    }

    #[test]
    fn refuses_wrong_types() {
        assert_eq!(check(r#"{"name":5,"album":"a","year":2000,"rank":1}"#).unwrap_err().field, Field::Name);
        assert_eq!(check(r#"{"name":null,"album":"a","year":2000,"rank":1}"#).unwrap_err().field, Field::Name);
        assert_eq!(check(r#"{"name":"b","album":["a"],"year":2000,"rank":1}"#).unwrap_err().field, Field::Album);
        assert_eq!(check(r#"{"name":"b","album":"a","year":true,"rank":1}"#).unwrap_err().field, Field::Year);
        assert_eq!(check(r#"{"name":"b","album":"a","year":2000,"rank":1.5}"#).unwrap_err().field, Field::Rank);
        assert_eq!(check(r#"{"name":"b","album":"a","year":"20x0","rank":1}"#).unwrap_err().field, Field::Year);
        assert_eq!(check(r#"{"name":"b","album":"a","year":"2000","rank":"one"}"#).unwrap_err().field, Field::Rank);
    }

    #[test]
    fn enforces_limits() {
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        let err = check(&format!(r#"{{"name":"{long}","album":"a","year":2000,"rank":1}}"#)).unwrap_err();
        assert_eq!(err.field, Field::Name);
        assert!(err.reason.contains("limit of 128"), "{err}");
        // Exactly at the limit in bytes, with two-byte characters.
        let at_limit = "ñ".repeat(MAX_TEXT_BYTES / 2);
        assert!(check(&format!(r#"{{"name":"{at_limit}","album":"a","year":2000,"rank":1}}"#)).is_ok());
        let over = "ñ".repeat(MAX_TEXT_BYTES / 2 + 1);
        assert!(check(&format!(r#"{{"name":"{over}","album":"a","year":2000,"rank":1}}"#)).is_err());
        for bad_year in ["1899", "3000", "-1995", "99999999999999999999"] {
            let err = check(&format!(r#"{{"name":"b","album":"a","year":"{bad_year}","rank":1}}"#)).unwrap_err();
            assert_eq!(err.field, Field::Year, "{bad_year}: {err}");
        }
        for bad_rank in ["0", "-1", "1001"] {
            let err = check(&format!(r#"{{"name":"b","album":"a","year":2000,"rank":"{bad_rank}"}}"#)).unwrap_err();
            assert_eq!(err.field, Field::Rank, "{bad_rank}: {err}");
        }
        assert!(check(r#"{"name":"b","album":"a","year":1900,"rank":1000}"#).is_ok());
    }

    #[test]
    fn refuses_control_characters() {
        let err = check(r#"{"name":"a\u0000b","album":"a","year":2000,"rank":1}"#).unwrap_err();
        assert_eq!(err.field, Field::Name);
    }

    #[test]
    fn refuses_invisible_format_characters_by_field() {
        for c in ['\u{202E}', '\u{202A}', '\u{200B}', '\u{200D}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FEFF}', '\u{00AD}', '\u{E0001}'] {
            let name = format!("Alux{c}Nahual");
            let vote = VoteInput::from_strings(&name, "Conquista", "1986", "1");
            let err = validate(&vote).unwrap_err();
            assert_eq!(err.field, Field::Name, "{c:?}");
            assert!(err.reason.contains(&format!("U+{:04X}", c as u32)), "{err}");
            let vote = VoteInput::from_strings("Alux Nahual", &format!("{c}Conquista"), "1986", "1");
            assert_eq!(validate(&vote).unwrap_err().field, Field::Album, "{c:?}");
        }
    }

    proptest::proptest! {
        /// Whatever text is sent, no accepted name or album holds a format character, and any
        /// text holding one is refused naming that field.
        #[test]
        fn no_format_character_gets_through(prefix in "\\PC{0,10}", c in proptest::char::any(), suffix in "\\PC{0,10}") {
            let name = format!("{prefix}{c}{suffix}");
            match validate(&VoteInput::from_strings(&name, "album", "2000", "1")) {
                Ok(vote) => proptest::prop_assert!(!vote.name.chars().any(is_invisible_format)),
                Err(err) => proptest::prop_assert_eq!(err.field, Field::Name),
            }
            if is_invisible_format(c) {
                proptest::prop_assert!(validate(&VoteInput::from_strings("band", &name, "2000", "1")).is_err());
            }
        }
    }

    #[test]
    fn current_year_is_sane() {
        let year = current_year();
        assert!((2024..2200).contains(&year), "{year}");
    }
}
