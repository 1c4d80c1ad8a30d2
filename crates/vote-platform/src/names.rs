//! The names the platform builds keys, labels, routes and collections from: short, lower-case
//! ASCII, so a hostile manifest cannot grow a key space or break a query with its names.

/// The longest name.
pub const MAX_NAME_BYTES: usize = 48;

/// `None` if `name` is 1 to [`MAX_NAME_BYTES`] of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter; else why not (for an error that names the field).
pub fn check(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Some(format!("{name:?} must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_is_letter || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Some(format!("{name:?} must start with a-z and hold only a-z, 0-9, '-' and '_'"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lower_case_ascii() {
        for good in ["votes", "weather-rest", "by_department2"] {
            assert_eq!(check(good), None, "{good}");
        }
        for bad in ["", "Votes", "1st", "a b", "a:b", "{votes}", "ü", &"a".repeat(49)] {
            assert!(check(bad).is_some(), "{bad:?}");
        }
    }
}
