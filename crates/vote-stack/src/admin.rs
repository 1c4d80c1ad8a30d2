//! A client of the wasm host's admin API: list, history, and deploys and rollbacks signed with the
//! fleet's deploy key when one is given (stage the bytes, sign the order naming them, send it),
//! for one component of the application (or its primary one); the application's view and its
//! manifest reload.

use std::path::Path;

use anyhow::Context;
use deploy_signing::{Action, Order, SecretKey};

/// The admin API of one host, with its bearer token and, for a fleet, the deploy key.
pub struct AdminClient {
    http: reqwest::Client,
    /// `http://host:port/components`.
    base: String,
    /// The admin API's root.
    root: String,
    token: String,
    key: Option<SecretKey>,
    /// The component deploys, rollbacks and lists are for (`None`: the primary one).
    component: Option<String>,
}

/// A status and the JSON answer.
pub type Answer = (reqwest::StatusCode, serde_json::Value);

impl AdminClient {
    /// `admin_url` is the admin API's root (`http://127.0.0.1:8081`).
    pub fn new(http: reqwest::Client, admin_url: &str, token: String, key: Option<SecretKey>) -> Self {
        Self { http, base: format!("{admin_url}/components"), root: admin_url.to_owned(), token, key, component: None }
    }

    /// The same client, for component `id` of the application.
    pub fn for_component(mut self, id: Option<String>) -> Self {
        self.component = id;
        self
    }

    /// `base` + `tail`, with `?component=` when a component is named.
    fn url(&self, tail: &str) -> String {
        match &self.component {
            Some(id) => format!("{}{tail}?component={id}", self.base),
            None => format!("{}{tail}", self.base),
        }
    }

    /// Every component with its routes, topics, limits, load and versions.
    pub async fn app(&self) -> anyhow::Result<Answer> {
        self.send(self.http.get(format!("{}/app", self.root))).await
    }

    /// Makes the host re-read its manifest.
    pub async fn reload(&self) -> anyhow::Result<Answer> {
        self.send(self.http.post(format!("{}/app/reload", self.root))).await
    }

    /// Reads the deploy key at `path`, with what to do when it is missing.
    pub fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
        SecretKey::read(path).with_context(|| format!("reading the deploy key (make one with `votectl component keygen --out {}`)", path.display()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request.bearer_auth(&self.token).send().await.with_context(|| format!("reaching the host's admin API at {}", self.base))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or_default()))
    }

    pub async fn list(&self) -> anyhow::Result<Answer> {
        self.send(self.http.get(self.url(""))).await
    }

    pub async fn history(&self) -> anyhow::Result<Answer> {
        self.send(self.http.get(format!("{}/history", self.base))).await
    }

    /// Deploys `bytes`. With a deploy key: stages them, then sends the signed order naming the
    /// digest, size and version the host answered (a host with no fleet topic answers the stage
    /// with 404 and takes the bytes directly). Without one: sends the bytes (one host only).
    pub async fn deploy(&self, bytes: Vec<u8>) -> anyhow::Result<Answer> {
        let Some(key) = &self.key else {
            return self.send(self.http.post(self.url("")).header("content-type", "application/wasm").body(bytes)).await;
        };
        let (status, staged) = self.send(self.http.post(format!("{}/stage", self.base)).header("content-type", "application/wasm").body(bytes.clone())).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return self.send(self.http.post(self.url("")).header("content-type", "application/wasm").body(bytes)).await;
        }
        if !status.is_success() {
            return Ok((status, staged));
        }
        let action = Action::Deploy {
            digest: staged["digest"].as_str().unwrap_or_default().to_owned(),
            version: staged["version"].as_str().unwrap_or_default().to_owned(),
            size: staged["size"].as_u64().unwrap_or_default() as usize,
        };
        let signed = Order::for_component(self.component.as_deref(), action)?.sign(key);
        self.send(self.http.post(self.url("")).json(&signed)).await
    }

    /// Rolls back; signed when there is a deploy key (a host with no fleet topic ignores it).
    pub async fn rollback(&self) -> anyhow::Result<Answer> {
        let request = self.http.post(self.url("/rollback"));
        match &self.key {
            Some(key) => self.send(request.json(&Order::for_component(self.component.as_deref(), Action::Rollback)?.sign(key))).await,
            None => self.send(request).await,
        }
    }
}
