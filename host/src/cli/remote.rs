//! The CLI talking to the `keel serve` that holds a workspace: plugin
//! changes go through its API (`POST /api/v1/plugins...`), so they reach
//! the serving runtime without a restart. The address comes from
//! `serve.addr`, the token from `serve.token`; the server only listens
//! where it said it would.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::serve::auth;

/// A running `keel serve`, reached over loopback.
pub struct Server {
    base: String,
    host: String,
    token: String,
    client: reqwest::Client,
}

impl Server {
    /// The server holding workspace `root`, if one says it listens.
    pub fn of_workspace(root: &Path) -> anyhow::Result<Server> {
        let addr = crate::serve::read_address(root)?;
        let token = auth::read(root)?;
        let tls = crate::tls::client_config().map_err(anyhow::Error::msg)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Server { base: format!("http://{addr}"), host: addr.to_string(), token, client })
    }

    /// POSTs `body` to `path`; the JSON answer, or the server's error.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("host", &self.host)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach keel serve at {}: is it still running?", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let why = json["error"].as_str().map_or(text.clone(), str::to_owned);
            bail!("{why}");
        }
        Ok(json)
    }
}
