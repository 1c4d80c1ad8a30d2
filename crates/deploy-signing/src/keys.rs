//! ed25519 key pairs and their files: one line of standard base64 each (32 bytes), the private
//! key readable by its owner only.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer;

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("{what} is not a base64 ed25519 key of 32 bytes: {reason}")]
    Malformed { what: String, reason: String },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The private half: signs deploy orders. Held by whoever deploys (votectl), never by a host.
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

/// The public half: every host of the fleet holds it and checks each order against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

/// Fresh random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

fn decode32(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty { what: what.to_owned() });
    }
    let bytes = STANDARD.decode(text).map_err(|e| KeyError::Malformed { what: what.to_owned(), reason: e.to_string() })?;
    bytes.try_into().map_err(|b: Vec<u8>| KeyError::Malformed { what: what.to_owned(), reason: format!("{} bytes", b.len()) })
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>()?)))
    }

    /// Reads a key file written by [`SecretKey::write`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&decode32(&text, &path.display().to_string())?)))
    }

    /// Writes the key to `path` (mode `0600`, created new) and its public half to `path.pub`.
    pub fn write(&self, path: &Path) -> Result<PathBuf, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyError::Io { path: path.to_owned(), source };
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        writeln!(file, "{}", STANDARD.encode(self.0.to_bytes())).map_err(io)?;
        let public = public_path(path);
        std::fs::write(&public, format!("{}\n", self.public())).map_err(|source| KeyError::Io { path: public.clone(), source })?;
        Ok(public)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    /// Parses the base64 text of a `.pub` file (or of `VOTES_DEPLOY_PUBLIC_KEY`).
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let bytes = decode32(text, what)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| KeyError::Malformed { what: what.to_owned(), reason: e.to_string() })
    }

    /// Reads a `.pub` file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read(path)?, &path.display().to_string())
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&STANDARD.encode(self.0.to_bytes()))
    }
}

/// Where the public half of the key at `path` is written: `path` with `.pub` appended.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_pair_reads_back_as_written_and_the_private_half_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy-key");
        let key = SecretKey::generate().unwrap();
        let public = key.write(&path).unwrap();
        assert_eq!(public, dir.path().join("deploy-key.pub"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SecretKey::read(&path).unwrap().public(), key.public());
        assert_eq!(PublicKey::read(&public).unwrap(), key.public());
        assert!(key.write(&path).is_err(), "an existing key is never overwritten");
    }

    #[test]
    fn empty_and_malformed_keys_are_refused_with_what_they_are() {
        assert!(matches!(PublicKey::parse(" \n", "the key"), Err(KeyError::Empty { .. })));
        let short = PublicKey::parse(&STANDARD.encode([1u8; 16]), "VOTES_DEPLOY_PUBLIC_KEY").unwrap_err();
        assert!(short.to_string().contains("VOTES_DEPLOY_PUBLIC_KEY") && short.to_string().contains("16 bytes"), "{short}");
        assert!(matches!(PublicKey::parse("not base64!", "k"), Err(KeyError::Malformed { .. })));
    }
}
