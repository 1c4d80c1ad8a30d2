//! The HTTP routes: the page and its assets, the JSON API (`/api/results`, `/api/logs`), the
//! live stream (`/api/events`), `/healthz` and `/metrics`; with a manifest, each workload's
//! (`/api/workloads`, `/api/workloads/<name>/{snapshot,events,logs}`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Collection;
use redis::aio::ConnectionManager;
use tokio::sync::{watch, Semaphore};
use tokio_stream::wrappers::WatchStream;
use vote_service::Shutdown;

use crate::live::{Live, Published, STALE_AFTER};
use crate::metrics::Metrics;
use crate::search::{self, LogQuery, QueryError};
use crate::snapshot;
use crate::workload_search::{self, WorkloadQuery};
use crate::workloads::Workloads;

/// How long a health check waits for each store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The page, its script and its style sheet, built into the binary.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const WORKLOADS_JS: &str = include_str!("assets/workloads.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// Only the page's own files may run or style it: even markup smuggled into the page could not
/// run a script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub redis: ConnectionManager,
    pub logs: Collection<Document>,
    pub live: Live,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
    /// One permit per live event stream: the bound on open pages.
    pub sse_slots: Arc<Semaphore>,
    /// The manifest's workloads (`--manifest`); without one, only the band contest is served.
    pub workloads: Option<Workloads>,
}

/// How many live event streams run at once unless set otherwise.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let registry = state.metrics.registry.clone();
    let mut router = Router::new();
    if state.workloads.is_some() {
        router = router
            .route("/api/workloads", get(list_workloads))
            .route("/api/workloads/{name}/snapshot", get(workload_snapshot))
            .route("/api/workloads/{name}/events", get(workload_events))
            .route("/api/workloads/{name}/logs", get(workload_logs));
    }
    router
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/workloads.js", get(|| async { asset("text/javascript; charset=utf-8", WORKLOADS_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/results", get(results))
        .route("/api/logs", get(logs))
        .route("/api/events", get(events))
        .route("/healthz", get(healthz))
        .route("/readyz", get(healthz))
        .route("/livez", get(|| async { "alive" }))
        .route("/metrics", get(move || async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], vote_service::render_metrics(&registry)) }))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// JSON with `<`, `>` and `&` written as `\u003c`, `\u003e`, `\u0026`: the same value to any
/// JSON reader, and inert if it ever ends up inside HTML.
pub fn safe_json<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("API values serialise");
    escape_json_html(&json)
}

/// Escapes the HTML-significant characters of a JSON text (they only occur inside strings).
fn escape_json_html(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `{"error", "field"}` with a status.
fn error(status: StatusCode, message: impl std::fmt::Display, field: Option<&str>) -> Response {
    json_response(status, safe_json(&serde_json::json!({ "error": message.to_string(), "field": field })))
}

/// `GET /api/results`: the counters, read from Redis now.
async fn results(State(state): State<AppState>) -> Response {
    let mut redis = state.redis.clone();
    match snapshot::read(&mut redis).await {
        Ok(snapshot) => json_response(StatusCode::OK, safe_json(&snapshot)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis did not answer: {e}"), None),
    }
}

/// A search's query string checked by `parse`; a 400 naming the parameter otherwise.
fn search_query<Q>(state: &AppState, raw: Option<&str>, parse: impl FnOnce(&[(String, String)]) -> Result<Q, QueryError>) -> Result<Q, Box<Response>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
        state.metrics.searches.with_label_values(&["invalid"]).inc();
        Box::new(error(StatusCode::BAD_REQUEST, format!("query: {e}"), Some("query")))
    })?;
    parse(&pairs).map_err(|e| {
        state.metrics.searches.with_label_values(&["invalid"]).inc();
        Box::new(error(StatusCode::BAD_REQUEST, &e, Some(&e.field)))
    })
}

/// A search's page, counted by outcome; a 503 when MongoDB did not answer in time.
fn search_answer<P: serde::Serialize>(state: &AppState, page: Result<P, search::SearchError>) -> Response {
    match page {
        Ok(page) => {
            state.metrics.searches.with_label_values(&["ok"]).inc();
            json_response(StatusCode::OK, safe_json(&page))
        }
        Err(e) => {
            state.metrics.searches.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, "log search failed");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("MongoDB did not answer: {e}"), None)
        }
    }
}

/// `GET /api/logs?band=&album=&path=&producer=&vote_id=&from=&to=&limit=&cursor=`.
async fn logs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match search_query(&state, raw.as_deref(), LogQuery::parse) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    search_answer(&state, search::search(&state.logs, &query).await)
}

/// Decrements the client gauge when a page's stream ends.
struct ClientGuard(Metrics);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.dec();
    }
}

/// `GET /api/events`: an `event: snapshot` with the counters now, then one on every change; a
/// fast 503 with Retry-After when [`AppState::sse_slots`] are all taken.
async fn events(State(state): State<AppState>) -> Response {
    let latest = state.live.subscribe();
    stream(&state, latest)
}

/// The server-sent events of one poller's snapshots, within [`AppState::sse_slots`].
fn stream<T: Send + Sync + 'static>(state: &AppState, latest: watch::Receiver<Option<Arc<Published<T>>>>) -> Response {
    let Ok(permit) = state.sse_slots.clone().try_acquire_owned() else {
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "too many live pages open; retry shortly", None);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    state.metrics.sse_clients.inc();
    let guard = (ClientGuard(state.metrics.clone()), permit);
    let mut shutdown = state.shutdown.clone();
    let stream = WatchStream::new(latest)
        .filter_map(|published| async move { published })
        .map(move |published| {
            let _ = &guard;
            Ok::<_, Infallible>(Event::default().event("snapshot").data(escape_json_html(&published.json)))
        })
        .take_until(async move { shutdown.wait().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// The workload called `name`, or a 404 naming the known ones.
fn workload<'a>(state: &'a AppState, name: &str) -> Result<(&'a Workloads, &'a vote_platform::WorkloadSpec), Box<Response>> {
    let workloads = state.workloads.as_ref().expect("workload routes exist only with a manifest");
    let shown: String = name.chars().take(64).collect();
    workloads
        .spec(name)
        .map(|spec| (workloads, spec))
        .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, format!("no workload {shown:?} (known: {})", workloads.names().join(", ")), Some("workload"))))
}

/// `GET /api/workloads`: every workload of the manifest, what its view shows and what its
/// search takes.
async fn list_workloads(State(state): State<AppState>) -> Response {
    let workloads = state.workloads.as_ref().expect("workload routes exist only with a manifest");
    json_response(StatusCode::OK, safe_json(&workloads.listing()))
}

/// `GET /api/workloads/<name>/snapshot`: the workload's view read from Redis now (the band
/// contest's is `/api/results`).
async fn workload_snapshot(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let (workloads, spec) = match workload(&state, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if workloads.counted(&name).is_none() {
        return results(State(state)).await;
    }
    let mut redis = state.redis.clone();
    match vote_store::workload_view::read(&mut redis, spec).await {
        Ok(view) => json_response(StatusCode::OK, safe_json(&view)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis did not answer: {e}"), None),
    }
}

/// `GET /api/workloads/<name>/events`: the workload's live view as server-sent events, within
/// the same bound of open streams as `/api/events`.
async fn workload_events(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let (workloads, _) = match workload(&state, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    match workloads.counted(&name) {
        Some(counted) => {
            let latest = counted.live.subscribe();
            stream(&state, latest)
        }
        None => events(State(state)).await,
    }
}

/// `GET /api/workloads/<name>/logs?<field>=&...&limit=`: the workload's logs, filtered on the
/// fields its spec makes searchable.
async fn workload_logs(State(state): State<AppState>, Path(name): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let (workloads, spec) = match workload(&state, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(counted) = workloads.counted(&name) else {
        return logs(State(state), RawQuery(raw)).await;
    };
    let query = match search_query(&state, raw.as_deref(), |pairs| WorkloadQuery::parse(spec, pairs)) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    search_answer(&state, workload_search::search(&counted.events, &query).await)
}

/// `GET /healthz`: 200 when Redis and MongoDB answer and the live poller keeps reading.
async fn healthz(State(state): State<AppState>) -> Response {
    let mut redis = state.redis.clone();
    let redis_check = match tokio::time::timeout(HEALTH_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut redis)).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: no answer within 2 s".to_owned(),
    };
    let database = state.logs.client().database("admin");
    let mongo_check = match tokio::time::timeout(HEALTH_TIMEOUT, database.run_command(doc! { "ping": 1 })).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: no answer within 2 s".to_owned(),
    };
    let poller_check = match state.live.since_last_read() {
        Some(age) if age <= STALE_AFTER => "ok".to_owned(),
        Some(age) => format!("error: no Redis read for {} s", age.as_secs()),
        None => "starting".to_owned(),
    };
    let healthy = redis_check == "ok" && mongo_check == "ok" && poller_check == "ok";
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, safe_json(&serde_json::json!({ "redis": redis_check, "mongodb": mongo_check, "poller": poller_check })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_inert_in_html_and_reads_back_the_same() {
        let band = "<script>alert(1)</script> & co";
        let json = safe_json(&serde_json::json!({ "name": band }));
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], band);
    }
}
