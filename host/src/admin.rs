//! The admin API (bearer token, loopback by default): deploy, list and roll back components.
//!
//! - `GET /components`: the serving component and the previous one.
//! - `POST /components` with the component's bytes: compile, check, swap in (201), or refuse
//!   with the reason (422) while the old one keeps serving.
//! - `POST /components/rollback`: swap the previous one back in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Mutex;

use crate::registry::{DeployError, Registry};
use crate::runtime::Runtime;

/// The largest component the admin API accepts.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Admin {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    metrics: crate::metrics::Metrics,
    token: Arc<String>,
    /// One deploy or rollback at a time.
    swapping: Arc<Mutex<()>>,
}

/// The admin router; every route needs `Authorization: Bearer <token>`.
pub fn router(runtime: Arc<Runtime>, registry: Arc<Registry>, metrics: crate::metrics::Metrics, token: String) -> Router {
    let admin = Admin { runtime, registry, metrics, token: Arc::new(token), swapping: Arc::default() };
    Router::new()
        .route("/components", get(list).post(deploy))
        .route("/components/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), admin.token.as_bytes()) => next.run(request).await,
        _ => error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

async fn list(State(admin): State<Admin>) -> Response {
    Json(admin.registry.list()).into_response()
}

async fn deploy(State(admin): State<Admin>, body: Bytes) -> Response {
    let _one_at_a_time = admin.swapping.lock().await;
    match Registry::load(&admin.runtime, body.to_vec()).await {
        Ok(loaded) => {
            admin.metrics.swaps.with_label_values(&["deploy", "ok"]).inc();
            (StatusCode::CREATED, Json(admin.registry.deploy(loaded))).into_response()
        }
        Err(refused) => {
            admin.metrics.swaps.with_label_values(&["deploy", "refused"]).inc();
            tracing::warn!(error = %refused, "deploy refused");
            error(StatusCode::UNPROCESSABLE_ENTITY, &refused.to_string())
        }
    }
}

async fn rollback(State(admin): State<Admin>) -> Response {
    let _one_at_a_time = admin.swapping.lock().await;
    match admin.registry.rollback() {
        Ok(info) => {
            admin.metrics.swaps.with_label_values(&["rollback", "ok"]).inc();
            Json(info).into_response()
        }
        Err(DeployError::NoPrevious) => error(StatusCode::CONFLICT, "nothing to roll back to"),
        Err(other) => error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}
