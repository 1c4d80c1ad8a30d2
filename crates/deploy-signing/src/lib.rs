//! Signed fleet deploys. Every host of a fleet applies the deploys and rollbacks it reads on one
//! Kafka topic; this crate makes sure it applies only those the holder of the fleet's private
//! key ordered, once, and in order.
//!
//! - [`keys`]: ed25519 key pairs and the files that hold them (base64 text, `0600` for the
//!   private key).
//! - [`order`]: what is signed: an [`Action`] (deploy a digest of a size and version, or roll
//!   back), a time and a nonce, in one canonical byte encoding.
//! - [`guard`]: what a host checks before applying an order (signature, nonce never seen, not
//!   older than the last applied one) and what the admin side checks before publishing one
//!   (its signer's clock within [`guard::MAX_CLOCK_SKEW`]).

pub mod guard;
pub mod keys;
pub mod order;

pub use guard::{Guard, Refusal, MAX_CLOCK_SKEW};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use order::{Action, Order, SignedOrder};
