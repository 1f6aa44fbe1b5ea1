//! The operator's dashboard: static assets embedded in the binary, served
//! without the token (they hold no data); the page reads the API with the
//! token the operator gives it.
//!
//! Threat: script injection into the page that holds the operator's token
//! (an agent's rationale, a payload or an audit reason crafted to run as
//! script) and the page being framed by another site (clickjacking an
//! approval). The page never builds HTML from data (the script sets
//! `textContent` only), and every asset is sent with a Content-Security-Policy
//! that allows scripts, styles and requests from this origin only, no inline
//! script or style, no framing, no forms posting elsewhere. Not stopped: a
//! local user who can read the token file, or a browser extension.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::api::Shared;

/// The page, its script and its styles: no build step, nothing fetched
/// from elsewhere.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Scripts, styles and API requests from this origin only; images only
/// as `data:` (none today); nothing may frame the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/` and its assets.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// One embedded asset with its type and the security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let fixed = |v: &'static str| HeaderValue::from_static(v);
    headers.insert(header::CONTENT_TYPE, fixed(content_type));
    headers.insert(header::CACHE_CONTROL, fixed("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, fixed(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, fixed("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, fixed("DENY"));
    headers.insert(header::REFERRER_POLICY, fixed("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_never_writes_html_from_data() {
        assert!(INDEX_HTML.contains(r#"src="/dashboard/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/dashboard/style.css""#));
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "no inline script or style");
        for asset in [INDEX_HTML, APP_JS, STYLE_CSS] {
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(!asset.contains("http://") && !asset.contains("https://"), "nothing from elsewhere");
        }
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn assets_carry_their_type_and_the_security_headers() {
        let response = asset("text/css; charset=utf-8", STYLE_CSS);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-"), "no inline script or style, no eval");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
