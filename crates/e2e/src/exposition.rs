//! The Prometheus text format as the tests read it: every sample with its name, labels and value.

use std::collections::BTreeMap;

/// One sample line of a `/metrics` page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a page; comment lines are skipped. Panics on a line it cannot read, naming it.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a Prometheus sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (read, after) = parse_labels(inner)?;
        labels = read;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: name.to_owned(), labels, value })
}

/// Reads `key="value",...}` (the text after `{`); returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, quoted) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &quoted[end + 1..];
    }
}

/// The samples of `url` (a `/metrics` page).
pub async fn scrape(url: &str) -> Vec<Sample> {
    let text = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}")).text().await.unwrap();
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_values_and_escapes_are_read() {
        let samples = parse("# HELP x y\nx_total{a=\"1\",b=\"q\\\"u,o}te\"} 3\nplain 1.5e-3\nh_bucket{le=\"+Inf\"} 7\n");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].labels["b"], "q\"u,o}te");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].value, 0.0015);
        assert_eq!(samples[2].labels["le"], "+Inf");
    }
}
