//! Loaded components: compiling and checking a new one off the request path, swapping it in
//! atomically, and keeping the previous one for rollback.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::metrics::Metrics;
use crate::reuse::IdleInstances;
use crate::runtime::{Policy, Runtime};
use crate::entry::Entry;
use crate::serve::call_component;

/// A compiled, checked component ready to serve.
pub struct Loaded {
    /// `name@version` as the component reports it, or its digest when it does not.
    pub version: String,
    /// `sha256:` of the component's bytes.
    pub digest: String,
    pub size: usize,
    pub loaded_at: SystemTime,
    /// How requests enter it: its one-call handler, or `wasi:http`.
    pub entry: Entry,
    /// Its idle instances, when its component reuses instances.
    pub idle: Arc<IdleInstances>,
}

/// What `list` shows of a loaded component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    pub version: String,
    pub digest: String,
    pub size: usize,
    /// `serving` or `previous`.
    pub role: &'static str,
    pub loaded_at_unix: u64,
}

/// Why a component was refused; the serving one is untouched.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component does not fit the votes:platform/producer world: {0}")]
    WrongWorld(String),
    #[error("the component failed its start-up check: {0}")]
    Check(String),
    #[error("nothing to roll back to")]
    NoPrevious,
}

/// The serving version of one component of the application and the one before it.
pub struct Registry {
    /// The component's id in the application.
    pub component: String,
    /// The version it was started with (what a fleet serves before any deploy).
    pub initial: Arc<Loaded>,
    current: ArcSwap<Loaded>,
    previous: Mutex<Option<Arc<Loaded>>>,
    metrics: Metrics,
}

/// `sha256:<hex>` of a component's bytes.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Registry {
    pub fn new(component: &str, first: Arc<Loaded>, metrics: Metrics) -> Self {
        metrics.serve(component, None, &first.version);
        Self { component: component.to_owned(), initial: first.clone(), current: ArcSwap::new(first), previous: Mutex::new(None), metrics }
    }

    /// The component new requests run on. Requests keep the `Arc` they took, so a swap never
    /// changes the version of a request already running.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Compiles `bytes` (on a blocking thread, off the async runtime), checks that it imports
    /// only what a producer gets and exports a way in (the one-call handler or
    /// `wasi:http/incoming-handler`), then asks it who it is. `hold` is dropped only when the compilation has really ended, even if the caller
    /// stopped waiting for it (a compile cannot be interrupted). No lock is held meanwhile.
    pub async fn load(runtime: &Arc<Runtime>, bytes: Vec<u8>, hold: impl Send + 'static) -> Result<Loaded, DeployError> {
        let size = bytes.len();
        let digest = digest(&bytes);
        let compile_runtime = runtime.clone();
        let entry = tokio::task::spawn_blocking(move || -> Result<Entry, DeployError> {
            let _hold = hold;
            if !is_component_binary(&bytes) {
                return Err(DeployError::NotAComponent("the bytes are not a component binary (a core module or something else)".into()));
            }
            let component = Component::new(&compile_runtime.engine, &bytes).map_err(|e| DeployError::NotAComponent(format!("{e:#}")))?;
            let instance_pre = compile_runtime.linker.instantiate_pre(&component).map_err(|e| DeployError::WrongWorld(format!("{e:#}")))?;
            Entry::new(instance_pre, compile_runtime.wasi_http_only).map_err(|e| DeployError::WrongWorld(format!("{e:#}")))
        })
        .await
        .map_err(|e| DeployError::Check(e.to_string()))??;
        let version = identify(runtime, &entry).await?.unwrap_or_else(|| digest[..19].to_owned());
        Ok(Loaded { version, digest, size, loaded_at: SystemTime::now(), entry, idle: Arc::default() })
    }

    /// Makes `loaded` the serving component; the old one becomes the rollback target.
    pub fn deploy(&self, loaded: Loaded) -> ComponentInfo {
        let new = Arc::new(loaded);
        // Held across the swap so a rollback at the same moment sees both changes or neither.
        let mut previous = self.previous.lock().expect("registry lock");
        let old = self.current.swap(new.clone());
        old.idle.retire();
        self.metrics.serve(&self.component, Some(&old.version), &new.version);
        tracing::info!(component = %self.component, from = %old.version, to = %new.version, "component deployed");
        *previous = Some(old);
        info(&new, "serving")
    }

    /// Swaps the previous component back in (and keeps the one it replaces as previous).
    pub fn rollback(&self) -> Result<ComponentInfo, DeployError> {
        let mut previous = self.previous.lock().expect("registry lock");
        let back = previous.take().ok_or(DeployError::NoPrevious)?;
        back.idle.serve();
        let replaced = self.current.swap(back.clone());
        replaced.idle.retire();
        self.metrics.serve(&self.component, Some(&replaced.version), &back.version);
        tracing::info!(component = %self.component, from = %replaced.version, to = %back.version, "component rolled back");
        *previous = Some(replaced);
        Ok(info(&back, "serving"))
    }

    /// Makes `serving` the serving component and `previous` the rollback target, as a fleet
    /// follower decided from the fleet topic.
    pub fn set(&self, serving: Arc<Loaded>, previous: Option<Arc<Loaded>>) {
        serving.idle.serve();
        let replaced = self.current.swap(serving.clone());
        if !Arc::ptr_eq(&replaced, &serving) {
            replaced.idle.retire();
            self.metrics.serve(&self.component, Some(&replaced.version), &serving.version);
            tracing::info!(component = %self.component, from = %replaced.version, to = %serving.version, "component swapped by the fleet");
        }
        *self.previous.lock().expect("registry lock") = previous;
    }

    pub fn list(&self) -> Vec<ComponentInfo> {
        let previous = self.previous.lock().expect("registry lock");
        let mut list = vec![info(&self.current(), "serving")];
        if let Some(previous) = previous.as_ref() {
            list.push(info(previous, "previous"));
        }
        list
    }
}

fn info(loaded: &Loaded, role: &'static str) -> ComponentInfo {
    ComponentInfo {
        version: loaded.version.clone(),
        digest: loaded.digest.clone(),
        size: loaded.size,
        role,
        loaded_at_unix: loaded.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// A component binary starts with the wasm magic and the component layer's version word.
fn is_component_binary(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// Asks the component `GET /.well-known/component`; a producer answers `{"producer": "name@version"}`.
/// A component that traps on it is refused; one that answers something else keeps its digest.
async fn identify(runtime: &Runtime, entry: &Entry) -> Result<Option<String>, DeployError> {
    let request = hyper::Request::get("http://localhost/.well-known/component").body(Bytes::new()).expect("a valid request");
    let response = call_component(runtime, &Policy::check(&runtime.limits), entry, None, request, None, ()).await.map_err(|e| DeployError::Check(e.to_string()))?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let body = response.into_body().collect().await.map_err(|e| DeployError::Check(format!("reading its answer: {e}")))?.to_bytes();
    Ok(serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["producer"].as_str().map(str::to_owned)))
}
