//! The operator's dashboard: static assets embedded in the binary, served
//! without the token (they hold no data); the page reads the API with the
//! token the operator gives it.

use axum::Router;

use super::api::Shared;

/// The dashboard's routes: `/` and its assets.
pub fn routes() -> Router<Shared> {
    Router::new()
}
