//! The HTTP API under `/api/v1`, described by `openapi.json`. Every
//! request passes the [`Guard`](super::auth::Guard) first: health,
//! readiness, the API description and the dashboard's assets are public,
//! everything else needs the token. Reads are in [`read`], the operator's
//! decisions in [`decide`].

mod decide;
mod plugins;
mod read;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::auth::{Guard, Refusal};
use super::webhook::{self, Started};
use crate::runtime::Runtime;
use crate::workspace::Workspace;

/// What every handler shares.
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub workspace: Arc<Workspace>,
    pub guard: Guard,
    /// Runs started by webhooks, driven in the background; awaited (for a
    /// while) at shutdown.
    pub drives: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    /// What `/metrics` folded in so far, and its last answer.
    pub metrics: Arc<tokio::sync::Mutex<super::metrics::Scraper>>,
}

pub type Shared = Arc<AppState>;

/// A JSON error with a message that says what to do.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A failed request: its status and a message that says what to do.
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<crate::memory::StoreError> for ApiError {
    fn from(e: crate::memory::StoreError) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// A JSON body: 400 with the parse error when it is not the expected shape.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &str) -> Result<T, ApiError> {
    match body.trim() {
        "" => Ok(T::default()),
        text => serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("the body is not the expected JSON ({e}); see /api/v1/openapi.json"))
        }),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Paths served without the token: health checks, the API description and
/// the dashboard's static assets (none of them holds workspace data).
fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/api/v1/health" | "/api/v1/ready" | "/api/v1/openapi.json") || path.starts_with("/dashboard/")
}

async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let checked = state
        .guard
        .check_origin(header_str(headers, header::HOST), header_str(headers, header::ORIGIN))
        .and_then(|()| match is_public(request.uri().path()) {
            true => Ok(()),
            false => state.guard.check_token(header_str(headers, header::AUTHORIZATION)),
        });
    match checked {
        Ok(()) => next.run(request).await,
        Err(refusal @ Refusal::Token) => error(StatusCode::UNAUTHORIZED, refusal.message()),
        Err(refusal) => error(StatusCode::FORBIDDEN, refusal.message()),
    }
}

/// The router, with the guard in front of every route.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/status", get(status))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/hooks/{*path}", post(hook))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/plugins", get(read::plugins).post(plugins::install))
        .route("/api/v1/plugins/{name}/accept", post(plugins::accept))
        .route("/api/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/api/v1/approvals", get(read::approvals))
        .route("/api/v1/approvals/{id}/approve", post(decide::approve))
        .route("/api/v1/approvals/{id}/reject", post(decide::reject))
        .route("/api/v1/intents", get(read::intents))
        .route("/api/v1/audit", get(read::audit))
        .route("/api/v1/audit/verify", get(read::audit_verify))
        .route("/api/v1/costs", get(read::costs))
        .route("/api/v1/memory", get(read::memory))
        .route("/api/v1/kill-switch", get(read::kill_switch).post(decide::kill_switch))
        .route("/metrics", get(super::metrics::metrics))
        .merge(super::dashboard::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The API's description, checked against the router by the tests.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<Shared>) -> Response {
    match state.runtime.store().schema_version() {
        Ok(version) => axum::Json(json!({"status": "ready", "schema": version})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the workspace database is not readable: {e}")),
    }
}

async fn status(State(state): State<Shared>) -> Response {
    let store = state.runtime.store();
    let result = (|| {
        let switch = store.kill_switch()?;
        let intents: serde_json::Map<String, Value> =
            store.intent_counts()?.into_iter().map(|(s, n)| (s.as_str().to_owned(), Value::from(n))).collect();
        let pending = store.approvals(Some(crate::kernel::approvals::ApprovalStatus::Pending))?.len();
        anyhow::Ok(json!({"kill_switch": switch, "intents": intents, "pending_approvals": pending}))
    })();
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn runs(State(state): State<Shared>) -> Response {
    match state.runtime.store().recent_runs(100) {
        Ok(runs) => axum::Json(runs).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn run(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match state.runtime.store().run(&id) {
        Ok(Some(run)) => axum::Json(run).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn hook(State(state): State<Shared>, Path(path): Path<String>, headers: HeaderMap, body: String) -> Response {
    let input: Value = match body.trim() {
        "" => json!({}),
        text => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, format!("the body is not JSON ({e}): send a JSON document"));
            }
        },
    };
    let defs = match state.workspace.workflows() {
        Ok(defs) => defs,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some((def, text)) = webhook::find(&defs, &path) else {
        return error(StatusCode::NOT_FOUND, format!("no workflow has a webhook trigger with path `{path}`"));
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    match webhook::start(&state.runtime, def, text, input, key).await {
        Ok(Started::Again(id)) => {
            (StatusCode::OK, axum::Json(json!({"run": id, "workflow": def.name, "repeated": true}))).into_response()
        }
        Ok(Started::New(run)) => {
            let run = *run;
            let (runtime, id) = (state.runtime.clone(), run.id.clone());
            state.drives.lock().await.spawn(async move {
                let _slot = runtime.run_slot().await;
                if let Err(e) = runtime.drive_run(&id).await {
                    tracing::error!(run = %id, error = %e, "driving a webhook run failed");
                }
            });
            (StatusCode::ACCEPTED, axum::Json(json!({"run": run.id, "workflow": def.name}))).into_response()
        }
        Err(e @ crate::workflow::WorkflowError::Paused { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
