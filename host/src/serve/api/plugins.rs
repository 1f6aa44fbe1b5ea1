//! Changing plugins while `keel serve` holds the workspace: install,
//! upgrade, accept a staged upgrade, roll back. The same steps as the CLI's
//! (`plugin::installer`), applied to the serving runtime, so they take
//! effect for new calls at once while calls in flight finish on the version
//! they started with. `keel install`, `upgrade` and `rollback` use these
//! routes when they find the database held by a running server.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, Shared, parse_body};
use crate::plugin::InstallError;
use crate::plugin::installer::{self, Applied, Plan};
use crate::plugin::review;

impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> ApiError {
        let status = match &e {
            InstallError::NotInstalled { .. } => StatusCode::NOT_FOUND,
            InstallError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError(status, e.to_string())
    }
}

/// A plugin to install or upgrade to, as `keel install` takes it. Paths
/// are read by the server: give them absolute.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstallBody {
    target: String,
    index: Option<String>,
    sha256: Option<String>,
    signature: Option<String>,
    /// A manifest's text, replacing the embedded one, and where it came from.
    manifest: Option<String>,
    manifest_path: Option<String>,
    #[serde(default)]
    allow_unsigned: bool,
    /// Grant what a first install asks for, or what an upgrade adds.
    #[serde(default)]
    accept: bool,
    /// Only check and review: nothing is applied.
    #[serde(default)]
    review: bool,
    /// The plugin it must be (for an upgrade).
    expect: Option<String>,
    timeout_seconds: Option<u64>,
}

/// The review of a plan: what is asked for (install) or what changes.
fn review_json(state: &Shared, name: &str, plan: &Plan) -> Result<serde_json::Value, ApiError> {
    Ok(match plan {
        Plan::Install { asks } => json!({"kind": "install", "asks": asks}),
        Plan::Upgrade(up) => {
            let limits = installer::limits(&state.workspace, name)?;
            json!({
                "kind": "upgrade",
                "from": up.current.version,
                "new": review::summary(&up.diff.added, &limits),
                "removed": review::summary(&up.diff.removed, &limits),
                "publisher_change": up.publisher_change,
                "asks_nothing_new": up.asks_nothing_new(),
            })
        }
    })
}

pub(super) async fn install(State(state): State<Shared>, body: String) -> ApiResult {
    let body: InstallBody = parse_body(&body)?;
    // The install steps hold borrows that are not `Send` across awaits:
    // they run to the end on a blocking thread.
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(install_on(state, body)))
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("the install stopped: {e}")))?
}

async fn install_on(state: Shared, body: InstallBody) -> ApiResult {
    if body.target.trim().is_empty() {
        return Err(ApiError::bad_request("`target` is empty: give a path, a URL, or NAME[@VERSION] with `index`"));
    }
    let request = installer::Request {
        target: body.target.clone(),
        index: body.index,
        sha256: body.sha256,
        signature: body.signature,
        manifest: body.manifest.map(|text| (text, PathBuf::from(body.manifest_path.unwrap_or_default()))),
        allow_unsigned: body.allow_unsigned,
        timeout: Duration::from_secs(body.timeout_seconds.unwrap_or(60).max(1)),
    };
    let acquired = installer::acquire(&state.workspace, &state.runtime, &request, &()).await?;
    let m = &acquired.candidate.manifest;
    if let Some(expected) = &body.expect
        && m.name != *expected
    {
        let found = m.name.clone();
        return Err(InstallError::OtherPlugin { path: body.target.into(), found, expected: expected.clone() }.into());
    }
    let plan = installer::plan(&state.workspace, &acquired)?;
    let (name, version) = (m.name.clone(), m.version.clone());
    let review = review_json(&state, &name, &plan)?;
    let head = json!({
        "name": name, "version": version, "world": m.world, "description": m.description,
        "source": acquired.origin.source, "signed": installer::describe_origin(&acquired.origin),
        "warnings": acquired.warnings, "review": review,
    });
    if body.review {
        return Ok(axum::Json(head).into_response());
    }
    let applied = installer::apply(&state.workspace, &state.runtime, acquired, plan, body.accept)?;
    let outcome = match applied {
        Applied::Installed(record) => json!({"applied": "installed", "record": record}),
        Applied::Upgraded { from, record } => json!({"applied": "upgraded", "from": from, "record": record}),
        Applied::Staged { record, active } => json!({"applied": "staged", "active": active, "record": record}),
    };
    tracing::info!(plugin = %name, version = %version, "plugin changed over the API: {}", outcome["applied"]);
    Ok(axum::Json(json!({"plugin": head, "outcome": outcome})).into_response())
}

/// Applies the upgrade of `name` waiting for review, granting what it adds.
pub(super) async fn accept(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let (from, record) = installer::accept_pending(&state.workspace, &state.runtime, &name, true)?;
    Ok(axum::Json(json!({"from": from, "record": record})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    to: Option<String>,
}

pub(super) async fn rollback(State(state): State<Shared>, Path(name): Path<String>, body: String) -> ApiResult {
    let RollbackBody { to } = parse_body(&body)?;
    let (from, record) = installer::rollback(&state.workspace, &state.runtime, &name, to.as_deref())?;
    Ok(axum::Json(json!({"from": from, "record": record})).into_response())
}
