//! The votes `cast` sends: the shipped data set of Guatemalan bands, or a traffic file.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use vote_core::proto::Vote;

/// The shipped data set (`data/bands.json`), in the seeds' traffic format.
pub const BANDS_JSON: &str = include_str!("../../../data/bands.json");

/// A year or rank as the traffic files write it: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose {
    Text(String),
    Number(serde_json::Number),
}

impl Loose {
    fn into_string(self) -> String {
        match self {
            Loose::Text(s) => s,
            Loose::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct TrafficVote {
    name: String,
    album: String,
    year: Loose,
    rank: Loose,
}

/// Reads a traffic file, or the shipped data set when `file` is `None`.
pub fn load(file: Option<&Path>) -> anyhow::Result<Vec<Vote>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => BANDS_JSON.to_owned(),
    };
    let votes: Vec<TrafficVote> = serde_json::from_str(&text).context("a traffic file is a JSON array of {name, album, year, rank}")?;
    anyhow::ensure!(!votes.is_empty(), "the traffic file has no votes");
    Ok(votes
        .into_iter()
        .map(|v| Vote { name: v.name, album: v.album, year: v.year.into_string(), rank: v.rank.into_string() })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_data_set_is_all_valid() {
        let votes = load(None).unwrap();
        assert!(votes.len() >= 10);
        for vote in &votes {
            vote_core::validate(&vote_core::VoteInput::from(vote)).unwrap();
        }
    }
}
