//! What the operator reads: plugins, the approval inbox, recent decisions,
//! the audit log, costs, memory and the kill switch. Every list is bounded.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Shared};
use crate::kernel::approvals::ApprovalStatus;
use crate::kernel::outbox::{Intent, IntentState};

/// Most entries one list returns.
const MAX_LIMIT: usize = 500;
/// Most audit entries one page reads to find matches for a filter.
const AUDIT_SCAN: usize = 20_000;

fn limit(asked: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match asked {
        None => Ok(default),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("limit={n} is out of range: ask for 1 to {MAX_LIMIT}"))),
    }
}

pub(super) async fn plugins(State(state): State<Shared>) -> ApiResult {
    Ok(axum::Json(state.runtime.store().plugin_list()?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalsQuery {
    /// `pending` (the default) or `all`.
    status: Option<String>,
}

/// Approvals with their intents, oldest first: the inbox.
pub(super) async fn approvals(State(state): State<Shared>, Query(q): Query<ApprovalsQuery>) -> ApiResult {
    let status = match q.status.as_deref() {
        None | Some("pending") => Some(ApprovalStatus::Pending),
        Some("all") => None,
        Some(other) => return Err(ApiError::bad_request(format!("status={other} is not known: use pending or all"))),
    };
    let store = state.runtime.store();
    let mut out = Vec::new();
    for approval in store.approvals(status)?.into_iter().rev().take(MAX_LIMIT).rev() {
        let intent = store.intent(&approval.intent_key)?;
        out.push(json!({"approval": approval, "intent": intent}));
    }
    Ok(axum::Json(out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IntentsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// States whose intents were decided: what the operator reviews.
const DECIDED: [IntentState; 4] =
    [IntentState::Executed, IntentState::Rejected, IntentState::Failed, IntentState::NeedsReconcile];

/// Intents, most recently changed first: by default the decided ones.
pub(super) async fn intents(State(state): State<Shared>, Query(q): Query<IntentsQuery>) -> ApiResult {
    let limit = limit(q.limit, 50)?;
    let states: Vec<IntentState> = match q.state.as_deref() {
        None => DECIDED.to_vec(),
        Some(name) => vec![IntentState::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = IntentState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("state={name} is not a state: use one of {}", names.join(", ")))
        })?],
    };
    let mut intents: Vec<Intent> = Vec::new();
    for s in states {
        intents.extend(state.runtime.store().intents_in(s, 10_000)?);
    }
    intents.sort_by_key(|i| std::cmp::Reverse(i.updated_at_ms));
    intents.truncate(limit);
    Ok(axum::Json(intents).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Entries numbered below this (the previous page's `next_before`).
    before: Option<u64>,
    limit: Option<usize>,
    /// Only operations starting with this, e.g. `approvals.`.
    operation: Option<String>,
    /// Only this actor (a plugin name, `operator`, `host`).
    actor: Option<String>,
    /// Only `allowed`, `denied` or `parked`.
    decision: Option<String>,
}

/// A page of the audit log, newest first.
pub(super) async fn audit(State(state): State<Shared>, Query(q): Query<AuditQuery>) -> ApiResult {
    let limit = limit(q.limit, 50)?;
    let decision = match q.decision.as_deref() {
        None => None,
        Some(d) => {
            Some(serde_json::from_value::<crate::memory::audit::Decision>(Value::from(d)).map_err(|_| {
                ApiError::bad_request(format!("decision={d} is not known: use allowed, denied or parked"))
            })?)
        }
    };
    let keep = |e: &crate::memory::audit::AuditEntry| {
        q.operation.as_deref().is_none_or(|op| e.operation.starts_with(op))
            && q.actor.as_deref().is_none_or(|a| e.actor == a)
            && decision.is_none_or(|d| e.decision == d)
    };
    let (entries, next_before) = state.runtime.store().audit_page(q.before, limit, AUDIT_SCAN, keep)?;
    Ok(axum::Json(json!({"entries": entries, "next_before": next_before})).into_response())
}

/// Recomputes the audit hash chain.
pub(super) async fn audit_verify(State(state): State<Shared>) -> ApiResult {
    let store = state.runtime.store().clone();
    let v = tokio::task::spawn_blocking(move || store.audit_verify())
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("the check stopped: {e}")))??;
    Ok(axum::Json(json!({
        "intact": v.broken.is_none(),
        "entries": v.entries,
        "head": v.head,
        "broken": v.broken.map(|b| b.to_string()),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CostsQuery {
    days: Option<u64>,
}

/// Model spend and cost per useful action over the last `days` (7).
pub(super) async fn costs(State(state): State<Shared>, Query(q): Query<CostsQuery>) -> ApiResult {
    let days = q.days.unwrap_or(7);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::bad_request(format!("days={days} is out of range: ask for 1 to 3650")));
    }
    let currency = &state.workspace.config().policy.currency;
    let report = crate::model::report::cost_report(state.runtime.store(), currency, days)?;
    Ok(axum::Json(report).into_response())
}

/// What the memory plane holds.
pub(super) async fn memory(State(state): State<Shared>) -> ApiResult {
    Ok(axum::Json(crate::memory::stats::stats_json(state.runtime.store(), state.runtime.plane())?).into_response())
}

pub(super) async fn kill_switch(State(state): State<Shared>) -> ApiResult {
    let switch = state.runtime.store().kill_switch()?;
    Ok(axum::Json(json!({"engaged": switch.as_ref().is_some_and(|s| s.engaged), "switch": switch})).into_response())
}
