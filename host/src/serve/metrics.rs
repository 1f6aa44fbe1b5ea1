//! `GET /metrics`: the operator's signals in Prometheus text format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::api::Shared;

/// The Prometheus exposition of the workspace's signals.
pub async fn metrics(State(_state): State<Shared>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], String::new()).into_response()
}
