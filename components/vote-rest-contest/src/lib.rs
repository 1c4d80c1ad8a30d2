//! A REST vote producer for a closed contest: votes for bands outside `contest.json` (compiled in,
//! since a component has no files) are refused with `400` on the `name` field.

use std::sync::OnceLock;

use rest_kit::votes::Policy;
use vote_core::rules::normalise_text;
use vote_core::{Field, ValidVote, VoteError};

/// The bands in the contest, normalised like incoming names.
fn contest() -> &'static Vec<String> {
    static BANDS: OnceLock<Vec<String>> = OnceLock::new();
    BANDS.get_or_init(|| {
        let names: Vec<String> = serde_json::from_str(include_str!("../contest.json")).expect("contest.json is a JSON array of names");
        names.iter().map(|n| normalise_text(n)).collect()
    })
}

struct ContestRest;

impl Policy for ContestRest {
    fn producer(&self) -> &str {
        concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"))
    }

    fn check(&self, vote: &ValidVote) -> Result<(), VoteError> {
        if contest().iter().any(|band| band == &vote.name) {
            Ok(())
        } else {
            Err(VoteError::new(Field::Name, format!("{} is not in this contest ({})", vote.name, contest().join(", "))))
        }
    }
}

rest_kit::export_votes!(ContestRest);
