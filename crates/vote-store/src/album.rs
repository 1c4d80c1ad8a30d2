//! The `{votes}:albums` field: `band|album`, with `\` and `|` inside either name escaped as `\\` and `\|`.

/// Appends `name` with `\` and `|` escaped.
fn push_escaped(out: &mut String, name: &str) {
    for c in name.chars() {
        if c == '\\' || c == '|' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The album field of a band and album; ordinary names read as `band|album`.
pub fn encode_album_field(band: &str, album: &str) -> String {
    let mut field = String::with_capacity(band.len() + album.len() + 1);
    push_escaped(&mut field, band);
    field.push('|');
    push_escaped(&mut field, album);
    field
}

/// The band and album of a field written by [`encode_album_field`]; `None` when the field has
/// no unescaped separator, more than one, or a dangling escape.
pub fn decode_album_field(field: &str) -> Option<(String, String)> {
    let mut parts = vec![String::new()];
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut()?.push(chars.next()?),
            '|' => parts.push(String::new()),
            c => parts.last_mut()?.push(c),
        }
    }
    let [band, album]: [String; 2] = parts.try_into().ok()?;
    Some((band, album))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_read_as_before() {
        assert_eq!(encode_album_field("Alux Nahual", "Conquista"), "Alux Nahual|Conquista");
        assert_eq!(decode_album_field("Malacates Trébol Shop|Niño"), Some(("Malacates Trébol Shop".into(), "Niño".into())));
    }

    #[test]
    fn separators_and_backslashes_inside_names_round_trip() {
        let cases = [("a|b", "c"), ("a", "b|c"), ("a\\", "|b"), ("\\|", "\\\\"), ("", ""), ("|||", "\\")];
        for (band, album) in cases {
            let field = encode_album_field(band, album);
            assert_eq!(decode_album_field(&field), Some((band.to_owned(), album.to_owned())), "{field}");
        }
        // The old encoding collided here; the escaped one does not.
        assert_ne!(encode_album_field("a|b", "c"), encode_album_field("a", "b|c"));
        assert_eq!(encode_album_field("a|b", "c"), "a\\|b|c");
        assert_eq!(encode_album_field("a\\", "b"), "a\\\\|b");
    }

    #[test]
    fn malformed_fields_are_refused() {
        assert_eq!(decode_album_field("no separator"), None);
        assert_eq!(decode_album_field("a|b|c"), None);
        assert_eq!(decode_album_field("a|b\\"), None);
    }
}
