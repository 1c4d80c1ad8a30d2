//! The HTTP routes: the page and its assets, the JSON API (`/api/results`, `/api/logs`), the
//! live stream (`/api/events`), `/healthz` and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Collection;
use redis::aio::ConnectionManager;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::WatchStream;
use vote_service::Shutdown;

use crate::live::{Live, STALE_AFTER};
use crate::metrics::Metrics;
use crate::search::{self, LogQuery};
use crate::snapshot;

/// How long a health check waits for each store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The page, its script and its style sheet, built into the binary.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
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
}

/// How many live event streams run at once unless set otherwise.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let registry = state.metrics.registry.clone();
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
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

/// `GET /api/logs?band=&album=&path=&producer=&vote_id=&from=&to=&limit=&cursor=`.
async fn logs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
        Ok(pairs) => pairs,
        Err(e) => {
            state.metrics.searches.with_label_values(&["invalid"]).inc();
            return error(StatusCode::BAD_REQUEST, format!("query: {e}"), Some("query"));
        }
    };
    let query = match LogQuery::parse(&pairs) {
        Ok(query) => query,
        Err(e) => {
            state.metrics.searches.with_label_values(&["invalid"]).inc();
            return error(StatusCode::BAD_REQUEST, &e, Some(&e.field));
        }
    };
    match search::search(&state.logs, &query).await {
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
    let Ok(permit) = state.sse_slots.clone().try_acquire_owned() else {
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "too many live pages open; retry shortly", None);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    state.metrics.sse_clients.inc();
    let guard = (ClientGuard(state.metrics.clone()), permit);
    let mut shutdown = state.shutdown.clone();
    let stream = WatchStream::new(state.live.subscribe())
        .filter_map(|published| async move { published })
        .map(move |published| {
            let _ = &guard;
            Ok::<_, Infallible>(Event::default().event("snapshot").data(escape_json_html(&published.json)))
        })
        .take_until(async move { shutdown.wait().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
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
