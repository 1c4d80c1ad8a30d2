//! A deploy order and its signature: what is signed, in one canonical byte encoding, and the JSON
//! shape it travels in (the admin API's request body and the fleet topic's event record).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{random_bytes, KeyError, PublicKey, SecretKey};

/// Tells signatures of this scheme apart from any other use of the key.
const DOMAIN: &[u8] = b"votes-deploy-order/v1";

/// What an order asks of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Serve the component with this digest; the serving one becomes the rollback target.
    Deploy { digest: String, version: String, size: usize },
    /// Swap the previous component back in.
    Rollback,
}

/// An action, when it was ordered and a nonce that makes it unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    #[serde(flatten)]
    pub action: Action,
    /// The signer's clock when it signed, in Unix milliseconds.
    pub at_unix_ms: u64,
    /// 16 random bytes, hex: an order is applied once.
    pub nonce: String,
    /// The component of the application it is for (its id in the manifest); none: the host's
    /// primary component (the one serving `/...`, or the only one), as orders before the
    /// platform had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// An order with the signature of the fleet's private key over [`Order::message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrder {
    #[serde(flatten)]
    pub order: Order,
    /// Standard base64 of the 64-byte ed25519 signature; absent on an unsigned record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

/// Now, in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Order {
    /// A new order for `action`, at this machine's time, with a fresh nonce.
    pub fn new(action: Action) -> Result<Self, KeyError> {
        let nonce = random_bytes::<16>()?.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { action, at_unix_ms: now_unix_ms(), nonce, component: None })
    }

    /// A new order for `action` on component `component` (its manifest id; `None`: the primary).
    pub fn for_component(component: Option<&str>, action: Action) -> Result<Self, KeyError> {
        Ok(Self { component: component.map(str::to_owned), ..Self::new(action)? })
    }

    /// The bytes signed: a domain tag, then each field as its length (8 bytes, little endian)
    /// and its UTF-8 text, so no two orders encode alike.
    pub fn message(&self) -> Vec<u8> {
        let (kind, digest, version, size) = match &self.action {
            Action::Deploy { digest, version, size } => ("deploy", digest.as_str(), version.as_str(), size.to_string()),
            Action::Rollback => ("rollback", "", "", String::new()),
        };
        let at = self.at_unix_ms.to_string();
        let fields: [&str; 6] = [kind, digest, &size, version, &at, &self.nonce];
        let mut message = DOMAIN.to_vec();
        // An order for a named component signs its id too; one without signs what orders before
        // the platform signed, so their signatures stay valid.
        for field in fields.into_iter().chain(self.component.as_deref()) {
            message.extend_from_slice(&(field.len() as u64).to_le_bytes());
            message.extend_from_slice(field.as_bytes());
        }
        message
    }

    pub fn sign(self, key: &SecretKey) -> SignedOrder {
        let signature = STANDARD.encode(key.sign(&self.message()));
        SignedOrder { order: self, signature }
    }
}

impl SignedOrder {
    /// True when the signature is present and made by `key` over this very order.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        let Ok(bytes) = STANDARD.decode(&self.signature) else { return false };
        let Ok(signature) = <[u8; 64]>::try_from(bytes) else { return false };
        key.verify(&self.order.message(), &signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Action {
        Action::Deploy { digest: "sha256:ab".into(), version: "vote-rest@0.1.0".into(), size: 10 }
    }

    #[test]
    fn a_signed_order_verifies_and_any_changed_field_does_not() {
        let key = SecretKey::generate().unwrap();
        let signed = Order::new(deploy()).unwrap().sign(&key);
        assert!(signed.signed_by(&key.public()));
        assert!(!signed.signed_by(&SecretKey::generate().unwrap().public()), "another key");
        let changes: [fn(&mut Order); 7] = [
            |o| o.component = Some("weather-rest".into()),
            |o| o.action = Action::Rollback,
            |o| o.action = Action::Deploy { digest: "sha256:cd".into(), version: "vote-rest@0.1.0".into(), size: 10 },
            |o| o.action = Action::Deploy { digest: "sha256:ab".into(), version: "vote-rest@0.1.1".into(), size: 10 },
            |o| o.action = Action::Deploy { digest: "sha256:ab".into(), version: "vote-rest@0.1.0".into(), size: 11 },
            |o| o.at_unix_ms += 1,
            |o| o.nonce.push('0'),
        ];
        for change in changes {
            let mut tampered = signed.clone();
            change(&mut tampered.order);
            assert!(!tampered.signed_by(&key.public()), "{tampered:?}");
        }
        let unsigned = SignedOrder { signature: String::new(), ..signed };
        assert!(!unsigned.signed_by(&key.public()));
    }

    #[test]
    fn the_json_shape_is_flat_and_reads_back() {
        let key = SecretKey::generate().unwrap();
        let signed = Order::new(deploy()).unwrap().sign(&key);
        let json = serde_json::to_value(&signed).unwrap();
        assert_eq!((json["action"].as_str(), json["digest"].as_str(), json["size"].as_u64()), (Some("deploy"), Some("sha256:ab"), Some(10)));
        assert_eq!(json["nonce"].as_str().unwrap().len(), 32);
        let back: SignedOrder = serde_json::from_value(json).unwrap();
        assert!(back.signed_by(&key.public()));
        let other = Order::for_component(Some("weather-rest"), Action::Rollback).unwrap().sign(&key);
        let json = serde_json::to_value(&other).unwrap();
        assert_eq!(json["component"].as_str(), Some("weather-rest"));
        let mut moved: SignedOrder = serde_json::from_value(json).unwrap();
        assert!(moved.signed_by(&key.public()));
        moved.order.component = Some("vote-rest".into());
        assert!(!moved.signed_by(&key.public()), "an order cannot be moved to another component");
        let legacy: SignedOrder = serde_json::from_str(r#"{"action":"rollback","at_unix_ms":1,"nonce":"n"}"#).unwrap();
        assert!(legacy.signature.is_empty());
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        let a = Order { action: Action::Deploy { digest: "ab".into(), version: "c".into(), size: 1 }, at_unix_ms: 1, nonce: "n".into(), component: None };
        let b = Order { action: Action::Deploy { digest: "a".into(), version: "bc".into(), size: 1 }, at_unix_ms: 1, nonce: "n".into(), component: None };
        assert_ne!(a.message(), b.message());
    }
}
