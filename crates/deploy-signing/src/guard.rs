//! The checks before an order is applied (on every host, for every record of the fleet topic) or
//! published (on the admin side), and why an order was refused.

use std::collections::HashSet;
use std::time::Duration;

use crate::keys::PublicKey;
use crate::order::{now_unix_ms, SignedOrder};

/// The admin side refuses an order whose signer's clock is further than this from its own: the
/// hosts refuse orders older than the last applied one, so a signer far behind would be refused
/// by the fleet, and one far ahead would block every later order.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why an order was refused (the `refusal` label of `host_deploy_refusals_total`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the order is not signed: deploys to a fleet need the fleet's deploy key (votectl --deploy-key-file)")]
    Unsigned,
    #[error("the order's signature does not verify against this host's deploy public key")]
    BadSignature,
    #[error("the order's nonce {0} was applied before (a replay)")]
    Replayed(String),
    #[error("the order was signed at {at} ms, before the last applied one ({last} ms): a replay or an out-of-order record")]
    Stale { at: u64, last: u64 },
    #[error("the signer's clock is {skew_ms} ms away from this host's (at most {} s allowed): fix the clock", MAX_CLOCK_SKEW.as_secs())]
    ClockSkew { skew_ms: u64 },
    #[error("the record is not a deploy order: {0}")]
    Malformed(String),
}

impl Refusal {
    /// Every value of [`Refusal::label`].
    pub const LABELS: [&'static str; 6] = ["unsigned", "bad_signature", "replayed", "stale", "clock_skew", "malformed"];

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Replayed(_) => "replayed",
            Refusal::Stale { .. } => "stale",
            Refusal::ClockSkew { .. } => "clock_skew",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

/// What one host remembers of the orders it applied: their nonces and the latest time.
#[derive(Debug)]
pub struct Guard {
    key: PublicKey,
    nonces: HashSet<String>,
    last_at_unix_ms: u64,
}

impl Guard {
    pub fn new(key: PublicKey) -> Self {
        Self { key, nonces: HashSet::new(), last_at_unix_ms: 0 }
    }

    /// Checks the signature only (the admin side, before anything is published).
    pub fn verify(&self, signed: &SignedOrder) -> Result<(), Refusal> {
        if signed.signature.is_empty() {
            return Err(Refusal::Unsigned);
        }
        if !signed.signed_by(&self.key) {
            return Err(Refusal::BadSignature);
        }
        Ok(())
    }

    /// Checks everything and, when the order passes, remembers it as applied.
    pub fn admit(&mut self, signed: &SignedOrder) -> Result<(), Refusal> {
        self.check(signed)?;
        self.nonces.insert(signed.order.nonce.clone());
        self.last_at_unix_ms = signed.order.at_unix_ms;
        Ok(())
    }

    /// Checks the signature, the nonce and the order's time against the last applied order.
    pub fn check(&self, signed: &SignedOrder) -> Result<(), Refusal> {
        self.verify(signed)?;
        if self.nonces.contains(&signed.order.nonce) {
            return Err(Refusal::Replayed(signed.order.nonce.clone()));
        }
        if signed.order.at_unix_ms < self.last_at_unix_ms {
            return Err(Refusal::Stale { at: signed.order.at_unix_ms, last: self.last_at_unix_ms });
        }
        Ok(())
    }
}

/// The admin side's clock check: refuses an order signed further than [`MAX_CLOCK_SKEW`] from now.
pub fn check_clock(signed: &SignedOrder) -> Result<(), Refusal> {
    check_clock_at(signed, now_unix_ms())
}

fn check_clock_at(signed: &SignedOrder, now_unix_ms: u64) -> Result<(), Refusal> {
    let skew_ms = now_unix_ms.abs_diff(signed.order.at_unix_ms);
    if skew_ms > MAX_CLOCK_SKEW.as_millis() as u64 {
        return Err(Refusal::ClockSkew { skew_ms });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::order::{Action, Order};

    fn order(at: u64, nonce: &str) -> Order {
        Order { action: Action::Rollback, at_unix_ms: at, nonce: nonce.into(), component: None }
    }

    #[test]
    fn a_host_applies_each_signed_order_once_and_in_order() {
        let key = SecretKey::generate().unwrap();
        let mut guard = Guard::new(key.public());
        let first = order(1_000, "a").sign(&key);
        assert_eq!(guard.admit(&first), Ok(()));
        assert_eq!(guard.admit(&first), Err(Refusal::Replayed("a".into())));
        assert_eq!(guard.admit(&order(999, "b").sign(&key)), Err(Refusal::Stale { at: 999, last: 1_000 }));
        assert_eq!(guard.admit(&order(1_000, "c").sign(&key)), Ok(()), "the same millisecond, another nonce");
        let unsigned = SignedOrder { order: order(2_000, "d"), signature: String::new() };
        assert_eq!(guard.admit(&unsigned).map_err(|r| r.label()), Err("unsigned"));
        let foreign = order(2_000, "e").sign(&SecretKey::generate().unwrap());
        assert_eq!(guard.admit(&foreign).map_err(|r| r.label()), Err("bad_signature"));
        assert_eq!(guard.admit(&order(2_000, "f").sign(&key)), Ok(()), "refusals leave the guard as it was");
    }

    #[test]
    fn the_admin_side_refuses_a_clock_more_than_five_minutes_away() {
        let key = SecretKey::generate().unwrap();
        let now = 10_000_000;
        let five_min = MAX_CLOCK_SKEW.as_millis() as u64;
        assert!(check_clock_at(&order(now - five_min, "a").sign(&key), now).is_ok());
        assert!(check_clock_at(&order(now + five_min, "a").sign(&key), now).is_ok());
        assert_eq!(check_clock_at(&order(now - five_min - 1, "a").sign(&key), now), Err(Refusal::ClockSkew { skew_ms: five_min + 1 }));
        assert!(check_clock_at(&order(now + five_min + 1, "a").sign(&key), now).is_err());
    }
}
