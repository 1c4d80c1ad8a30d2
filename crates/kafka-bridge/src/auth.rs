//! The bearer token every produce request must carry (`Authorization: Bearer <token>`), compared
//! in constant time; a request without it, or with another, gets 401 before its body is read.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

/// Why no token could be had at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the bridge needs a bearer token: pass --token / VOTES_KAFKA_BRIDGE_TOKEN or --token-file / VOTES_KAFKA_BRIDGE_TOKEN_FILE (clients send it as `Authorization: Bearer <token>`; publisher-http reads VOTES_KAFKA_BRIDGE_TOKEN)")]
    Missing,
    #[error("the bridge's token ({0}) is empty: anyone could publish; write a random token there")]
    Empty(String),
    #[error("reading the bridge's token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// The token from the flag or the file (trimmed); an empty or missing one is an error.
pub fn load_token(token: Option<&str>, file: Option<&std::path::Path>) -> Result<String, TokenError> {
    let (token, from) = match (token, file) {
        (Some(token), _) => (token.trim().to_owned(), "--token".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
            (text.trim().to_owned(), path.display().to_string())
        }
        (None, None) => return Err(TokenError::Missing),
    };
    if token.is_empty() {
        return Err(TokenError::Empty(from));
    }
    Ok(token)
}

/// True when `presented` is the token (constant time in the token's contents).
fn matches(presented: &[u8], token: &[u8]) -> bool {
    presented.ct_eq(token).into()
}

/// The middleware: the request goes on only with the right bearer token.
pub async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if matches(presented.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => crate::produce::refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer <token>)".into(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_token_is_refused_at_start() {
        assert!(matches!(load_token(None, None), Err(TokenError::Missing)));
        assert!(matches!(load_token(Some("  "), None), Err(TokenError::Empty(_))));
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(load_token(None, Some(file.path())), Err(TokenError::Empty(_))));
        std::fs::write(file.path(), "s3cret\n").unwrap();
        assert_eq!(load_token(None, Some(file.path())).unwrap(), "s3cret");
    }

    #[test]
    fn only_the_same_bytes_match() {
        assert!(matches(b"abc", b"abc"));
        assert!(!matches(b"abd", b"abc"));
        assert!(!matches(b"ab", b"abc"));
        assert!(!matches(b"", b"abc"));
    }
}
