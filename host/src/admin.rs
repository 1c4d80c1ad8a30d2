//! The admin API (bearer token, loopback by default): deploy, list and roll back each component of
//! the application, and reload its manifest. Every `/components` route takes `?component=<id>`
//! (the id in the manifest); without it, it acts on the primary component (the one routed at
//! `/...`, or the only one).
//!
//! - `GET /app`: every component with its routes, topics, limits, load and versions.
//! - `POST /app/reload`: re-read the manifest; routes and components added or removed take effect
//!   at once (the same as `SIGHUP`).
//! - `GET /components`: the serving version and the previous one.
//! - `POST /components` with the component's bytes: compile, check, swap in (201), or refuse
//!   with the reason (422) while the old one keeps serving. One deploy at a time: another one
//!   meanwhile gets 409; a deploy that takes longer than the deploy timeout gets 503.
//! - `POST /components/rollback`: swap the previous one back in, at once, even while a deploy
//!   is compiling.
//! - `GET /components/history`: the fleet's deploys and rollbacks (with a fleet topic only).
//!
//! With a fleet topic ([`crate::fleet`]) a deploy or rollback is published for every host and
//! answered once this host applied it; without one it changes this host only. A fleet deploy is
//! signed ([`deploy_signing`]): `POST /components/stage` with the bytes publishes and checks them
//! and answers their digest, size and version; `POST /components` with the signed order (JSON)
//! naming them makes the fleet serve them; `POST /components/rollback` takes a signed rollback.
//! An unsigned or badly signed order, or one signed on a clock more than 5 minutes off, gets 403.

use std::sync::Arc;
use std::time::Duration;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use deploy_signing::{Action, Refusal, SignedOrder};

use crate::app::{Application, Hosted};
use crate::fleet::{Fleet, FleetError};
use crate::registry::{DeployError, Registry};
use crate::runtime::Runtime;

/// The largest component the admin API accepts.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Default: how long a deploy may take to compile and check a component.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Admin {
    runtime: Arc<Runtime>,
    app: Arc<Application>,
    metrics: crate::metrics::Metrics,
    token: Arc<String>,
    fleet: Option<Arc<Fleet>>,
    deploy_timeout: Duration,
    /// One deploy at a time: its permit is held until its compilation has really ended.
    deploying: Arc<Semaphore>,
}

/// The admin router; every route needs `Authorization: Bearer <token>`.
pub fn router(
    runtime: Arc<Runtime>,
    app: Arc<Application>,
    metrics: crate::metrics::Metrics,
    token: String,
    deploy_timeout: Duration,
    fleet: Option<Arc<Fleet>>,
) -> Router {
    let admin = Admin { runtime, app, metrics, token: Arc::new(token), fleet, deploy_timeout, deploying: Arc::new(Semaphore::new(1)) };
    Router::new()
        .route("/app", get(app_view))
        .route("/app/reload", post(reload))
        .route("/components", get(list).post(deploy))
        .route("/components/history", get(history))
        .route("/components/stage", post(stage))
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

/// `?component=<id>` on the `/components` routes.
#[derive(Debug, Default, serde::Deserialize)]
struct Which {
    component: Option<String>,
}

impl Admin {
    /// The component a request names, or a `404` listing the ones there are.
    fn hosted(&self, which: &Which) -> Result<Arc<Hosted>, Response> {
        let app = self.app.current();
        app.component(which.component.as_deref()).cloned().ok_or_else(|| {
            let known: Vec<&String> = app.components.keys().collect();
            let asked: String = which.component.as_deref().unwrap_or_default().chars().take(64).collect();
            error(StatusCode::NOT_FOUND, &format!("no component {asked:?} in the application; it has {known:?}"))
        })
    }

    fn registry(&self, which: &Which) -> Result<Arc<Registry>, Response> {
        self.hosted(which).map(|hosted| hosted.registry.clone())
    }
}

async fn app_view(State(admin): State<Admin>) -> Response {
    Json(serde_json::json!({ "primary": admin.app.current().primary, "components": admin.app.view() })).into_response()
}

async fn reload(State(admin): State<Admin>) -> Response {
    match admin.app.reload().await {
        Ok(reloaded) => Json(reloaded).into_response(),
        Err(refused) => {
            tracing::warn!(error = %refused, "manifest reload refused; the application is unchanged");
            error(StatusCode::UNPROCESSABLE_ENTITY, &format!("{refused}; the application is unchanged"))
        }
    }
}

async fn list(State(admin): State<Admin>, Query(which): Query<Which>) -> Response {
    match admin.registry(&which) {
        Ok(registry) => Json(registry.list()).into_response(),
        Err(missing) => missing,
    }
}

async fn deploy(State(admin): State<Admin>, Query(which): Query<Which>, body: Bytes) -> Response {
    let registry = match admin.registry(&which) {
        Ok(registry) => registry,
        Err(missing) => return missing,
    };
    let Ok(permit) = admin.deploying.clone().try_acquire_owned() else {
        admin.metrics.swaps.with_label_values(&["deploy", "busy"]).inc();
        return error(StatusCode::CONFLICT, "another deploy is in progress (or a timed-out one is still compiling); try again when it has finished");
    };
    let deploying = async {
        match &admin.fleet {
            Some(fleet) => {
                let _permit = permit;
                match order(fleet, &body, "deploy", &registry.component, &admin.app.current().primary) {
                    Ok(signed) => fleet.order(signed).await.map(|()| registry.list().swap_remove(0)),
                    Err(refused) => Err(refused),
                }
            }
            None => Registry::load(&admin.runtime, body.to_vec(), permit).await.map(|loaded| registry.deploy(loaded)).map_err(FleetError::Refused),
        }
    };
    let Ok(outcome) = tokio::time::timeout(admin.deploy_timeout, deploying).await else {
        admin.metrics.swaps.with_label_values(&["deploy", "timeout"]).inc();
        let reason = format!(
            "compiling and checking the component took longer than the deploy timeout ({} ms); the serving component is unchanged",
            admin.deploy_timeout.as_millis()
        );
        tracing::warn!(%reason, "deploy timed out");
        return error(StatusCode::SERVICE_UNAVAILABLE, &reason);
    };
    match outcome {
        Ok(info) => {
            admin.metrics.swaps.with_label_values(&["deploy", "ok"]).inc();
            (StatusCode::CREATED, Json(info)).into_response()
        }
        Err(FleetError::Refused(refused)) => {
            admin.metrics.swaps.with_label_values(&["deploy", "refused"]).inc();
            tracing::warn!(error = %refused, "deploy refused");
            error(StatusCode::UNPROCESSABLE_ENTITY, &refused.to_string())
        }
        Err(failed) => fleet_unavailable(&failed),
    }
}

/// `POST /components/stage`: publishes and checks a component's bytes for a signed deploy.
async fn stage(State(admin): State<Admin>, body: Bytes) -> Response {
    let Some(fleet) = &admin.fleet else {
        return error(StatusCode::NOT_FOUND, "this host follows no fleet topic: POST the component to /components to deploy it here");
    };
    let Ok(_permit) = admin.deploying.clone().try_acquire_owned() else {
        return error(StatusCode::CONFLICT, "another deploy is in progress; try again when it has finished");
    };
    match tokio::time::timeout(admin.deploy_timeout, fleet.stage(&admin.runtime, body.to_vec())).await {
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "compiling and checking the component took longer than the deploy timeout"),
        Ok(Ok(loaded)) => Json(serde_json::json!({ "digest": loaded.digest, "version": loaded.version, "size": loaded.size })).into_response(),
        Ok(Err(FleetError::Refused(refused))) => {
            admin.metrics.swaps.with_label_values(&["deploy", "refused"]).inc();
            error(StatusCode::UNPROCESSABLE_ENTITY, &refused.to_string())
        }
        Ok(Err(failed)) => fleet_unavailable(&failed),
    }
}

/// The signed order in a request body, for `action` (`deploy` or `rollback`) on `component`,
/// checked before anything else is looked at; anything else is an unsigned order, refused and
/// counted. An order without a component is for the primary one.
fn order(fleet: &Fleet, body: &[u8], action: &str, component: &str, primary: &str) -> Result<SignedOrder, FleetError> {
    let signed: SignedOrder = serde_json::from_slice(body).map_err(|_| fleet.refuse(Refusal::Unsigned))?;
    let matches = matches!((&signed.order.action, action), (Action::Deploy { .. }, "deploy") | (Action::Rollback, "rollback"));
    if !matches {
        return Err(fleet.refuse(Refusal::Malformed(format!("this endpoint takes a signed {action} order"))));
    }
    if signed.order.component.as_deref().unwrap_or(primary) != component {
        return Err(fleet.refuse(Refusal::Malformed(format!("the order is for component {:?}, not {component:?}", signed.order.component.as_deref().unwrap_or(primary)))));
    }
    fleet.authorize(&signed)?;
    Ok(signed)
}

async fn rollback(State(admin): State<Admin>, Query(which): Query<Which>, body: Bytes) -> Response {
    let registry = match admin.registry(&which) {
        Ok(registry) => registry,
        Err(missing) => return missing,
    };
    if let Some(fleet) = &admin.fleet {
        let signed = match order(fleet, &body, "rollback", &registry.component, &admin.app.current().primary) {
            Ok(signed) => signed,
            Err(refused) => return fleet_unavailable(&refused),
        };
        if registry.list().len() < 2 {
            return error(StatusCode::CONFLICT, "nothing to roll back to");
        }
        return match fleet.order(signed).await {
            Ok(()) => {
                admin.metrics.swaps.with_label_values(&["rollback", "ok"]).inc();
                Json(registry.list().swap_remove(0)).into_response()
            }
            Err(failed) => fleet_unavailable(&failed),
        };
    }
    match registry.rollback() {
        Ok(info) => {
            admin.metrics.swaps.with_label_values(&["rollback", "ok"]).inc();
            Json(info).into_response()
        }
        Err(DeployError::NoPrevious) => error(StatusCode::CONFLICT, "nothing to roll back to"),
        Err(other) => error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

async fn history(State(admin): State<Admin>) -> Response {
    match &admin.fleet {
        Some(fleet) => Json(fleet.history()).into_response(),
        None => error(StatusCode::NOT_FOUND, "this host follows no fleet topic (--fleet-topic); it keeps no history"),
    }
}

fn fleet_unavailable(failed: &FleetError) -> Response {
    match failed {
        FleetError::Unauthorized(_) => return error(StatusCode::FORBIDDEN, &failed.to_string()),
        FleetError::NotStaged(_) | FleetError::Mismatch { .. } => return error(StatusCode::UNPROCESSABLE_ENTITY, &failed.to_string()),
        _ => {}
    }
    tracing::warn!(error = %failed, "fleet deploy or rollback failed");
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, &failed.to_string());
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}
