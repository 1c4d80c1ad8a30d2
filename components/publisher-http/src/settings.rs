//! The bridge's address and the request timeouts, from the component's environment (set by
//! `spin.toml`, `spin up --env` or `wasmtime serve --env`).

use crate::wasi::cli::environment::get_environment;
use crate::wasi::http::types::Scheme;

/// The bridge's base URL, e.g. `http://127.0.0.1:8085` (required).
pub const BRIDGE_URL_VAR: &str = "VOTES_KAFKA_BRIDGE_URL";
/// The bearer token our `kafka-bridge` requires (optional: Strimzi's bridge takes none).
pub const TOKEN_VAR: &str = "VOTES_KAFKA_BRIDGE_TOKEN";
/// How long to wait for the bridge's answer once the request is sent, in ms (optional).
pub const TIMEOUT_VAR: &str = "VOTES_KAFKA_BRIDGE_TIMEOUT_MS";
/// The default wait for an answer: longer than the bridge's own publish timeout (5 s), so a
/// broker outage comes back as the bridge's per-record errors rather than as silence.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// How long connecting to the bridge may take before it counts as unreachable.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Where and how to reach the bridge.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: String,
    /// A path prefix the bridge is served under (empty, or starting with `/`).
    pub base_path: String,
    pub connect_timeout_ms: u64,
    pub answer_timeout_ms: u64,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Settings {
    /// Reads the settings, or says which variable is missing or wrong.
    pub fn from_environment() -> Result<Self, String> {
        let environment = get_environment();
        let var = |name: &str| environment.iter().find(|(key, _)| key == name).map(|(_, value)| value.trim().to_owned());
        let url = var(BRIDGE_URL_VAR)
            .filter(|url| !url.is_empty())
            .ok_or_else(|| format!("{BRIDGE_URL_VAR} is not set: give the component the Kafka Bridge's URL, e.g. http://127.0.0.1:8085"))?;
        let answer_timeout_ms = match var(TIMEOUT_VAR) {
            None => DEFAULT_TIMEOUT_MS,
            Some(text) => text.parse().map_err(|_| format!("{TIMEOUT_VAR} must be a number of milliseconds, not {text:?}"))?,
        };
        let (scheme, authority, base_path) = parse_url(&url)?;
        let token = var(TOKEN_VAR).filter(|token| !token.is_empty());
        Ok(Self { scheme, authority, base_path, connect_timeout_ms: CONNECT_TIMEOUT_MS, answer_timeout_ms, token })
    }
}

/// Splits `http[s]://host[:port][/prefix]` into its parts.
fn parse_url(url: &str) -> Result<(Scheme, String, String), String> {
    let bad = || format!("{BRIDGE_URL_VAR} must look like http://host:port, not {url:?}");
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || path.contains(['?', '#']) {
        return Err(bad());
    }
    Ok((scheme, authority.to_owned(), path.to_owned()))
}
