//! The operator's decisions over HTTP: approve (optionally with an edited
//! payload), reject with a reason, and the kill switch. Each is audited as
//! `operator` by the kernel, exactly as the CLI's commands are.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Shared, parse_body};
use crate::kernel::KernelError;

/// Who the API acts as in the audit log.
const OPERATOR: &str = "operator";

impl From<KernelError> for ApiError {
    fn from(e: KernelError) -> ApiError {
        let status = match &e {
            KernelError::NoSuchApproval(_) => StatusCode::NOT_FOUND,
            KernelError::AlreadyDecided { .. } => StatusCode::CONFLICT,
            KernelError::InvalidEdit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            KernelError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Runs a blocking kernel decision off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KernelError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("the decision stopped: {e}")))?
        .map_err(Into::into)
}

/// Executes what became ready and continues runs that waited for it, as
/// `keel approve` does; what happened to each action is returned.
async fn execute_now(state: &Shared) -> Vec<Value> {
    let executed = match state.runtime.execute_ready().await {
        Ok(done) => done
            .iter()
            .inspect(|e| tracing::info!("action {}", crate::runtime::execute::describe(e)))
            .map(|e| json!({"key": e.key, "kind": e.kind, "state": e.state, "detail": e.detail}))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "executing ready actions failed");
            Vec::new()
        }
    };
    match state.runtime.continue_waiting_runs(1000).await {
        Ok(runs) => runs
            .into_iter()
            .filter_map(Result::err)
            .for_each(|e| tracing::error!(error = %e, "continuing a run failed")),
        Err(e) => tracing::error!(error = %e, "continuing waiting runs failed"),
    }
    executed
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    /// Replaces the payload before it executes (checked against the kind's
    /// schema).
    payload: Option<Value>,
}

pub(super) async fn approve(State(state): State<Shared>, Path(id): Path<u64>, body: String) -> ApiResult {
    let ApproveBody { payload } = parse_body(&body)?;
    let kernel = state.runtime.kernel().clone();
    let intent = blocking(move || kernel.approve(id, OPERATOR, payload)).await?;
    tracing::info!(approval = id, intent = %intent.key, "approved over the API");
    let executed = execute_now(&state).await;
    let approval = state.runtime.store().approval(id)?;
    let intent = state.runtime.store().intent(&intent.key)?;
    Ok(axum::Json(json!({"approval": approval, "intent": intent, "executed": executed})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn reject(State(state): State<Shared>, Path(id): Path<u64>, body: String) -> ApiResult {
    let RejectBody { reason } = parse_body(&body)?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request("`reason` is empty: say why, it is audited and shown with the intent"));
    }
    let kernel = state.runtime.kernel().clone();
    blocking(move || kernel.reject(id, OPERATOR, &reason)).await?;
    execute_now(&state).await;
    let approval = state.runtime.store().approval(id)?;
    Ok(axum::Json(json!({"approval": approval})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwitchBody {
    engaged: Option<bool>,
    reason: Option<String>,
}

/// Engages (`{"engaged": true}`) or lifts the kill switch. Lifting it
/// executes what was held back.
pub(super) async fn kill_switch(State(state): State<Shared>, body: String) -> ApiResult {
    let SwitchBody { engaged, reason } = parse_body(&body)?;
    let Some(engaged) = engaged else {
        return Err(ApiError::bad_request("`engaged` is missing: send {\"engaged\": true} to stop, false to resume"));
    };
    let store = state.runtime.store().clone();
    blocking(move || Ok(store.set_kill_switch(engaged, OPERATOR, reason)?)).await?;
    tracing::warn!(engaged, "kill switch set over the API");
    if !engaged {
        execute_now(&state).await;
    }
    let switch = state.runtime.store().kill_switch()?;
    Ok(axum::Json(json!({"engaged": engaged, "switch": switch})).into_response())
}
