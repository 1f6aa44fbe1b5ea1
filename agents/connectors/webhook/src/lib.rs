//! The `webhook` connector: `webhook.post` sends a JSON body to the
//! configured URL (or another path on the same origin). See README.md.

use keel_sdk::connector::{Action, ActionKind, Connector, receipt};
use keel_sdk::http::Request;
use keel_sdk::{Error, config, connector};
use serde::Deserialize;
use serde_json::json;

/// Redirects followed; the host checks each hop against the grants.
const MAX_REDIRECTS: u8 = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    #[serde(default)]
    url: Option<String>,
    body: serde_json::Value,
}

struct Webhook;

impl Connector for Webhook {
    fn describe() -> Vec<ActionKind> {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["body"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://"},
                "body": {}
            }
        });
        // A receiver may act twice on a retry; the key is sent so that
        // receivers which deduplicate can.
        vec![ActionKind::new("webhook.post", &schema, false)]
    }

    fn perform(action: Action, idempotency_key: String) -> Result<String, Error> {
        let post: Post = action.payload_json()?;
        let configured = config::require_setting("url")?;
        let url = match post.url {
            Some(url) if origin(&url) == origin(&configured) => url,
            Some(url) => {
                return Err(Error::InvalidInput(format!(
                    "url {url} is not on the configured webhook's origin {}",
                    origin(&configured)
                )));
            }
            None => configured,
        };
        let mut request = Request::post(&url).header("idempotency-key", &idempotency_key);
        if let Some(token) = config::setting("token_header")? {
            request = request.header(&token, &config::secret("webhook_token")?);
        }
        let response = request.json(&post.body)?.follow_redirects(MAX_REDIRECTS).send()?;
        if !response.is_success() {
            let detail = format!("the webhook answered {}", response.status);
            return Err(if response.status >= 500 || response.status == 429 {
                Error::Unavailable(detail)
            } else {
                Error::InvalidInput(detail)
            });
        }
        receipt(&json!({"url": url, "status": response.status}))
    }
}

/// `scheme://authority` of a URL, lowercase.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase())
}

connector!(Webhook);
