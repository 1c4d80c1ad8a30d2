//! The two Unicode facts the text rules need, with only the tables they need: NFC and the
//! invisible format characters (general category Cf).
//!
//! Every instance of a guest component maps its data (the tables included) into its own linear
//! memory, and the kernel maps a whole 64 KiB window of it on the first read, so each table a
//! guest links shows up in every instance slot's resident memory. unicode-normalization's
//! `nfc()` iterator decides between canonical and compatibility decomposition at run time, so it
//! links the compatibility (NFKD) tables too, and unicode-general-category links a 50 KiB table of
//! every character's category: together 160 of the vote component's 196 KiB of data. Here NFC is
//! built from the same crate's per-character functions (canonical tables only, 49 KiB) and the
//! Cf set is its 21 ranges; tests check both against the crates for every character.

use unicode_normalization::char::{canonical_combining_class, compose, decompose_canonical, is_combining_mark};

/// Appends `text` in Unicode Normalization Form C to `out` (UAX #15: canonical decomposition,
/// canonical ordering, canonical composition).
pub fn push_nfc(text: &str, out: &mut String) {
    if text.is_ascii() {
        out.push_str(text);
        return;
    }
    let decomposed = canonical_decomposition(text);
    // The composed text so far, the place of its last starter (a character of combining class
    // 0) and the class of the last character kept after that starter, if any.
    let mut composed: Vec<char> = Vec::with_capacity(decomposed.len());
    let mut starter: Option<usize> = None;
    let mut last_class: Option<u8> = None;
    for (c, class) in decomposed {
        if let Some(at) = starter {
            // `c` is blocked from the starter by a character between them of the same or a
            // higher class (the decomposition is in canonical order, so the last one decides).
            let blocked = last_class.is_some_and(|last| last >= class);
            if !blocked {
                if let Some(primary) = compose(composed[at], c) {
                    composed[at] = primary;
                    continue;
                }
            }
        }
        if class == 0 {
            starter = Some(composed.len());
            last_class = None;
        } else {
            last_class = Some(class);
        }
        composed.push(c);
    }
    out.extend(composed);
}

/// Appends `text` without its accents and other combining marks (its canonical decomposition,
/// marks left out), so that a choice matches however its accents were typed.
pub fn push_without_marks(text: &str, out: &mut String) {
    for c in text.chars() {
        decompose_canonical(c, |d| {
            if !is_combining_mark(d) {
                out.push(d);
            }
        });
    }
}

/// `text` fully decomposed by the canonical mappings and put in canonical order (each run of
/// non-starters sorted stably by combining class), with each character's class.
fn canonical_decomposition(text: &str) -> Vec<(char, u8)> {
    let mut decomposed: Vec<(char, u8)> = Vec::with_capacity(text.len());
    // Where the current run of non-starters begins.
    let mut run = 0;
    for c in text.chars() {
        decompose_canonical(c, |d| {
            let class = canonical_combining_class(d);
            if class == 0 {
                decomposed[run..].sort_by_key(|&(_, class)| class);
                run = decomposed.len() + 1;
            }
            decomposed.push((d, class));
        });
    }
    if run < decomposed.len() {
        decomposed[run..].sort_by_key(|&(_, class)| class);
    }
    decomposed
}

/// The characters of general category Cf (format), Unicode 16.0, as inclusive ranges in order.
const FORMAT_RANGES: [(char, char); 21] = [
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is of general category Cf (format): bidirectional overrides and isolates,
/// zero-width spaces and joiners, the byte-order mark, tag characters, ...
pub fn is_format(c: char) -> bool {
    FORMAT_RANGES
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_general_category::{get_general_category, GeneralCategory};
    use unicode_normalization::UnicodeNormalization;

    fn nfc(text: &str) -> String {
        let mut out = String::new();
        push_nfc(text, &mut out);
        out
    }

    fn all_chars() -> impl Iterator<Item = char> {
        (0..=u32::from(char::MAX)).filter_map(char::from_u32)
    }

    #[test]
    fn format_ranges_are_unicode_general_category_cf_for_every_character() {
        for c in all_chars() {
            assert_eq!(is_format(c), get_general_category(c) == GeneralCategory::Format, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn nfc_matches_unicode_normalization_for_every_character_alone_and_with_marks() {
        for c in all_chars() {
            for text in [c.to_string(), format!("{c}\u{301}"), format!("e{c}\u{327}"), format!("\u{1100}{c}")] {
                assert_eq!(nfc(&text), text.nfc().collect::<String>(), "{:?}", text.escape_unicode().to_string());
            }
        }
    }

    #[test]
    fn nfc_matches_unicode_normalization_on_mixed_marks_jamo_and_composites() {
        // Characters that decompose, that combine (of several classes) or that compose
        // algorithmically (Hangul jamo and syllables), mixed in random strings.
        let mut pool: Vec<char> = all_chars()
            .filter(|&c| canonical_combining_class(c) != 0 || c.nfd().ne(std::iter::once(c)) || ('\u{1100}'..='\u{11FF}').contains(&c))
            .step_by(3)
            .collect();
        pool.extend(['a', 'e', 'o', 'A', 'Å', ' ', '\u{AC00}', '\u{0F71}', '\u{0F72}', '\u{0F74}', '\u{0F80}']);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = 1 + next() % 7;
            let text: String = (0..len).map(|_| pool[(next() % pool.len() as u64) as usize]).collect();
            assert_eq!(nfc(&text), text.nfc().collect::<String>(), "{:?}", text.escape_unicode().to_string());
        }
    }

    #[test]
    fn without_marks_matches_nfd_without_combining_marks_for_every_character() {
        let reference = |text: &str| text.nfd().filter(|&c| !is_combining_mark(c)).collect::<String>();
        for c in all_chars() {
            for text in [c.to_string(), format!("{c}\u{301}\u{327}x")] {
                let mut out = String::new();
                push_without_marks(&text, &mut out);
                assert_eq!(out, reference(&text), "{:?}", text.escape_unicode().to_string());
            }
        }
        let mut out = String::new();
        push_without_marks("Sacatepe\u{301}quez Pete\u{301}n", &mut out);
        assert_eq!(out, "Sacatepequez Peten");
    }

    #[test]
    fn nfc_composes_decomposed_accents_and_orders_marks() {
        assert_eq!(nfc("Tre\u{301}bol"), "Trébol");
        assert_eq!(nfc("Nin\u{303}o"), "Niño");
        // A cedilla (class 202) sorts before an acute (230); both still compose where they can.
        assert_eq!(nfc("c\u{301}\u{327}"), "\u{1E09}");
        assert_eq!(nfc("\u{1100}\u{1161}\u{11A8}"), "\u{AC01}");
        assert_eq!(nfc("plain ascii"), "plain ascii");
    }
}
