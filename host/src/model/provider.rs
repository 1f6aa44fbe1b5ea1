//! What every model provider takes and returns, independent of the WIT
//! types: the service ([`super::ModelService`]) maps guest requests onto
//! these, routes them to a provider, and meters the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// One chat completion, for one model of one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's own model name, e.g. `gpt-4o-mini` (no provider prefix).
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    /// Sampling temperature in thousandths (0 = deterministic).
    pub temperature_milli: u32,
    /// The JSON Schema the answer must match, if any.
    pub json_schema: Option<serde_json::Value>,
}

/// Where the pieces of a streamed answer go as the model writes them.
#[derive(Debug)]
pub struct PieceSink {
    tx: mpsc::UnboundedSender<String>,
    sent: AtomicBool,
}

impl PieceSink {
    pub fn new(tx: mpsc::UnboundedSender<String>) -> PieceSink {
        PieceSink { tx, sent: AtomicBool::new(false) }
    }

    /// Passes on a non-empty piece; a reader that went away is ignored.
    pub fn send(&self, piece: &str) {
        if !piece.is_empty() {
            self.sent.store(true, Ordering::SeqCst);
            let _ = self.tx.send(piece.to_owned());
        }
    }

    /// Whether any piece went out: after that, another model cannot take over.
    pub fn sent_any(&self) -> bool {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Tokens a call used, as the provider counted them (or estimated, for
/// providers that do not count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The answer; JSON text when the request had a schema.
    pub text: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// One vector per input text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens, as the provider counted them.
    pub input_tokens: u32,
}

/// Why a provider did not answer. Messages name the provider and say what
/// to do; none ever contains a credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "provider `{provider}` refused the credentials (HTTP 401/403): check the secret named by `model.providers.{provider}.api_key`"
    )]
    Unauthorized { provider: String },
    #[error(
        "provider `{provider}` does not know model `{model}` (HTTP 404): check the model name in `[model.tiers]` and the provider's `base_url`"
    )]
    NotFound { provider: String, model: String },
    #[error(
        "provider `{provider}` is rate limiting (HTTP 429) and still was after {attempts} attempts: try again later or raise its limits"
    )]
    RateLimited { provider: String, attempts: u32 },
    #[error("provider `{provider}` failed with HTTP {status} after {attempts} attempts: {detail}")]
    Server { provider: String, status: u16, attempts: u32, detail: String },
    #[error("provider `{provider}` rejected the request (HTTP {status}): {detail}")]
    BadRequest { provider: String, status: u16, detail: String },
    #[error(
        "provider `{provider}` did not answer within {timeout:?}: raise `model.providers.{provider}.timeout_ms` or check the server"
    )]
    Timeout { provider: String, timeout: Duration },
    #[error("provider `{provider}` could not be reached: {detail}")]
    Connect { provider: String, detail: String },
    #[error("provider `{provider}` answered with a body that is not a valid response: {detail}")]
    InvalidResponse { provider: String, detail: String },
    #[error("provider `{provider}` cannot do this: {detail}")]
    Unsupported { provider: String, detail: String },
}
