//! The OpenAI-compatible provider: chat completions (whole or streamed as
//! server-sent events) and embeddings over HTTP(S), retried on rate limits,
//! server errors and refused connections within one time budget.
//!
//! Threat stopped: leaking the API key. It travels only in the
//! `Authorization` header (marked sensitive, never logged); every error
//! detail built from a server's answer or a transport error has it
//! redacted, and `Debug` never shows it. Redirects are not followed, so
//! the key never goes to a second address. Not stopped: a `base_url` the
//! operator points at a hostile server receives the key, as any client
//! would send it.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use super::provider::{ChatRequest, ChatResponse, EmbedResponse, PieceSink, ProviderError, Usage};

/// The longest wait between two attempts, whatever the server asks for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The largest answer read, so a runaway server cannot exhaust the host's memory.
const MAX_BODY_BYTES: usize = 64 << 20;
/// How much of a server's message goes into an error, so errors stay one readable line.
const MAX_DETAIL_CHARS: usize = 300;
/// The largest `timeout_ms`: ten minutes covers the slowest long completions.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// The most `max_retries`: more only delays a failure the caller should see.
const MAX_RETRIES: u32 = 10;

/// `[model.providers.NAME]` with `kind = "openai"`: any server that speaks
/// the OpenAI chat completions and embeddings API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// E.g. `https://api.openai.com/v1`; requests go to
    /// `{base_url}/chat/completions` and `{base_url}/embeddings`.
    pub base_url: String,
    /// The name of the secret holding the key (not the key itself).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The budget of one call, retries and waits included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first on HTTP 429, 5xx and refused connections.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first wait between attempts; it doubles after each, up to 30 s.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Ask for `stream: true` and assemble the server-sent events.
    #[serde(default)]
    pub stream: bool,
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_max_retries() -> u32 {
    3
}

fn default_retry_base_ms() -> u64 {
    500
}

impl OpenAiConfig {
    /// Checks every key; errors name it as `model.providers.NAME.KEY`.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let key = |field: &str| format!("model.providers.{name}.{field}");
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            format!(
                "`{}` = {:?} is not a URL ({e}): use e.g. \"https://api.openai.com/v1\"",
                key("base_url"),
                self.base_url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "`{}` = {:?} must start with http:// or https:// and name a host, e.g. \"https://api.openai.com/v1\"",
                key("base_url"),
                self.base_url
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{}` holds credentials: remove them and name a secret in `{}` instead",
                key("base_url"),
                key("api_key")
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{}` = {:?} must not have a query or fragment: keel appends `/chat/completions` and `/embeddings`",
                key("base_url"),
                self.base_url
            ));
        }
        if self.api_key.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(format!(
                "`{}` is empty: name a secret, or remove the key for servers without auth",
                key("api_key")
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "`{}` = {} must be between 1 and {MAX_TIMEOUT_MS}",
                key("timeout_ms"),
                self.timeout_ms
            ));
        }
        if self.max_retries > MAX_RETRIES {
            return Err(format!("`{}` = {} must be at most {MAX_RETRIES}", key("max_retries"), self.max_retries));
        }
        let max_base = MAX_RETRY_WAIT.as_millis();
        if u128::from(self.retry_base_ms) > max_base {
            return Err(format!("`{}` = {} must be at most {max_base}", key("retry_base_ms"), self.retry_base_ms));
        }
        Ok(())
    }
}

/// One configured OpenAI-compatible server.
pub struct OpenAiProvider {
    name: String,
    /// Without a trailing `/`.
    base_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
    max_retries: u32,
    retry_base: Duration,
    stream: bool,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Token counts a server reported, each possibly missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counted {
    input: Option<u32>,
    output: Option<u32>,
}

/// What one failed attempt leaves: how long to wait before the next, and
/// the error to return if there is no next.
struct Retry {
    wait: Duration,
    status: Option<u16>,
    error: ProviderError,
}

impl OpenAiProvider {
    /// `name` is the provider's name in the config (used in every error
    /// message); `api_key` is the resolved secret value.
    pub fn new(name: &str, config: &OpenAiConfig, api_key: Option<String>) -> Result<OpenAiProvider, String> {
        config.validate(name)?;
        // Secret files usually end with a newline; a key never holds whitespace.
        let api_key = api_key.map(|key| key.trim().to_owned());
        if let Some(key) = &api_key
            && (key.is_empty() || reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err())
        {
            return Err(format!(
                "the secret named by `model.providers.{name}.api_key` is empty or holds characters not allowed in an HTTP header: store the key alone on one line"
            ));
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config()?)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("provider `{name}`: cannot build the HTTP client: {e}"))?;
        Ok(OpenAiProvider {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key,
            client,
            timeout: Duration::from_millis(config.timeout_ms),
            max_retries: config.max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
            stream: config.stream,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One chat completion; usage is estimated where the server does not count.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.chat_streamed(request, None).await
    }

    /// [`chat`](Self::chat), streamed as server-sent events when `pieces`
    /// is given (whatever the provider's `stream` setting), each piece
    /// passed on as it arrives.
    pub async fn chat_streamed(
        &self,
        request: &ChatRequest,
        pieces: Option<&PieceSink>,
    ) -> Result<ChatResponse, ProviderError> {
        let span =
            tracing::debug_span!("keel.model.openai", provider = %self.name, model = %request.model, op = "chat");
        async {
            let stream = self.stream || pieces.is_some();
            let body = chat_body(request, stream);
            let response = self.post("/chat/completions", &request.model, &body).await?;
            // A server that ignores `stream: true` answers with plain JSON.
            let (text, counted) = if stream && is_event_stream(&response) {
                self.read_stream(response, pieces).await?
            } else {
                let body = self.read_body(response).await?;
                let (text, counted) = parse_chat(&body).map_err(|detail| self.invalid(&detail))?;
                if let Some(pieces) = pieces {
                    pieces.send(&text);
                }
                (text, counted)
            };
            let usage = Usage {
                input_tokens: counted.input.unwrap_or_else(|| {
                    request.messages.iter().fold(0, |sum: u32, m| sum.saturating_add(estimate_tokens(&m.content)))
                }),
                output_tokens: counted.output.unwrap_or_else(|| estimate_tokens(&text)),
            };
            tracing::debug!(
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                counted = counted.input.is_some() && counted.output.is_some(),
                "answered"
            );
            Ok(ChatResponse { text, usage })
        }
        .instrument(span)
        .await
    }

    /// One vector per text, in the order of `texts`.
    pub async fn embed(&self, model: &str, texts: &[String]) -> Result<EmbedResponse, ProviderError> {
        if texts.is_empty() {
            return Ok(EmbedResponse { vectors: Vec::new(), input_tokens: 0 });
        }
        let span = tracing::debug_span!("keel.model.openai", provider = %self.name, model = %model, op = "embed");
        async {
            let body = json!({"model": model, "input": texts});
            let response = self.post("/embeddings", model, &body).await?;
            let body = self.read_body(response).await?;
            let (vectors, counted) = parse_embeddings(&body, texts.len()).map_err(|detail| self.invalid(&detail))?;
            let input_tokens =
                counted.unwrap_or_else(|| texts.iter().fold(0, |sum: u32, t| sum.saturating_add(estimate_tokens(t))));
            tracing::debug!(input_tokens, vectors = vectors.len(), "answered");
            Ok(EmbedResponse { vectors, input_tokens })
        }
        .instrument(span)
        .await
    }

    /// POSTs `body` until a 2xx answer, retrying what is worth retrying
    /// while the call's budget (`timeout_ms`) lasts.
    async fn post(&self, path: &str, model: &str, body: &Value) -> Result<reqwest::Response, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let deadline = Instant::now() + self.timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Each attempt gets what is left of the budget, at most `timeout_ms`.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut request = self.client.post(&url).timeout(remaining).json(body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let retry = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => self.refused(response, model, attempts).await?,
                Err(e) if e.is_timeout() => return Err(self.timed_out()),
                Err(e) if e.is_connect() => Retry {
                    wait: self.backoff(attempts),
                    status: None,
                    error: self.unreachable(&format!("{} (after {attempts} attempts)", self.clean(&error_chain(&e)))),
                },
                Err(e) => return Err(self.unreachable(&self.clean(&error_chain(&e)))),
            };
            if attempts > self.max_retries || Instant::now() + retry.wait >= deadline {
                return Err(retry.error);
            }
            tracing::warn!(
                provider = %self.name,
                status = retry.status,
                attempt = attempts,
                wait_ms = u64::try_from(retry.wait.as_millis()).unwrap_or(u64::MAX),
                "model provider call failed; retrying"
            );
            tokio::time::sleep(retry.wait).await;
        }
    }

    /// Maps a non-2xx answer to a retry or to the final error.
    async fn refused(&self, response: reqwest::Response, model: &str, attempts: u32) -> Result<Retry, ProviderError> {
        let status = response.status().as_u16();
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = header(reqwest::header::RETRY_AFTER).as_deref().and_then(parse_retry_after);
        let location = header(reqwest::header::LOCATION);
        // The detail is a courtesy: a body that cannot be read leaves it empty.
        let body = self.read_body(response).await.unwrap_or_default();
        let detail = self.clean(&error_message(&body));
        let provider = self.name.clone();
        match status {
            429 => Ok(Retry {
                wait: retry_after.map_or_else(|| self.backoff(attempts), |wait| wait.min(MAX_RETRY_WAIT)),
                status: Some(status),
                error: ProviderError::RateLimited { provider, attempts },
            }),
            500..=599 => Ok(Retry {
                wait: self.backoff(attempts),
                status: Some(status),
                error: ProviderError::Server { provider, status, attempts, detail },
            }),
            401 | 403 => Err(ProviderError::Unauthorized { provider }),
            404 => Err(ProviderError::NotFound { provider, model: model.to_owned() }),
            300..=399 => Err(ProviderError::BadRequest {
                provider,
                status,
                detail: format!(
                    "the server redirects to {}: set `model.providers.{}.base_url` to the final address",
                    self.clean(location.as_deref().unwrap_or("an unnamed address")),
                    self.name
                ),
            }),
            _ => Err(ProviderError::BadRequest { provider, status, detail }),
        }
    }

    /// Reads a whole answer, at most [`MAX_BODY_BYTES`].
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.broken(&e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(self.invalid(&format!("the answer is larger than {} MiB", MAX_BODY_BYTES >> 20)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Assembles a streamed chat answer, up to `data: [DONE]`.
    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        pieces: Option<&PieceSink>,
    ) -> Result<(String, Counted), ProviderError> {
        let mut decoder = SseDecoder::default();
        let mut answer = StreamAnswer::default();
        let mut read = 0;
        loop {
            let chunk = response.chunk().await.map_err(|e| self.broken(&e))?;
            let ended = chunk.is_none();
            let events = match chunk {
                Some(bytes) => {
                    read += bytes.len();
                    if read > MAX_BODY_BYTES {
                        return Err(self.invalid(&format!("the stream is larger than {} MiB", MAX_BODY_BYTES >> 20)));
                    }
                    decoder.push(&bytes)
                }
                None => decoder.finish(),
            };
            for data in events {
                let before = answer.text.len();
                let done = answer.feed(&data).map_err(|detail| self.invalid(&detail))?;
                if let Some(pieces) = pieces {
                    pieces.send(&answer.text[before..]);
                }
                if done {
                    return answer.finish().map_err(|detail| self.invalid(&detail));
                }
            }
            if ended {
                return Err(self.invalid("the stream ended before `data: [DONE]`: the server or a proxy cut it short"));
            }
        }
    }

    /// `retry_base * 2^(attempts - 1)` plus up to 10 % jitter, at most 30 s.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        let wait = self.retry_base.saturating_mul(factor).min(MAX_RETRY_WAIT);
        (wait + jitter(wait / 10)).min(MAX_RETRY_WAIT)
    }

    /// Redacts the key and truncates, for any text that goes into an error.
    fn clean(&self, text: &str) -> String {
        let text = match &self.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "[redacted]"),
            _ => text.to_owned(),
        };
        truncate(text.trim(), MAX_DETAIL_CHARS)
    }

    fn invalid(&self, detail: &str) -> ProviderError {
        ProviderError::InvalidResponse { provider: self.name.clone(), detail: self.clean(detail) }
    }

    fn timed_out(&self) -> ProviderError {
        ProviderError::Timeout { provider: self.name.clone(), timeout: self.timeout }
    }

    fn unreachable(&self, detail: &str) -> ProviderError {
        ProviderError::Connect {
            provider: self.name.clone(),
            detail: format!("{detail}: check `model.providers.{}.base_url` and that the server is running", self.name),
        }
    }

    /// An error while reading an answer that had started.
    fn broken(&self, error: &reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return self.timed_out();
        }
        ProviderError::Connect {
            provider: self.name.clone(),
            detail: format!("the connection broke during the answer: {}", self.clean(&error_chain(error))),
        }
    }
}

fn chat_body(request: &ChatRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "temperature": f64::from(request.temperature_milli) / 1000.0,
    });
    if let Some(schema) = &request.json_schema {
        body["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))
}

/// `choices[0].message.content` and `usage` of a whole chat answer.
fn parse_chat(body: &[u8]) -> Result<(String, Counted), String> {
    let value = parse_json(body)?;
    let message = value.pointer("/choices/0/message");
    if let Some(text) = message.and_then(|m| m.get("content")).and_then(Value::as_str) {
        return Ok((text.to_owned(), counted_usage(&value)));
    }
    if let Some(refusal) = message.and_then(|m| m.get("refusal")).and_then(Value::as_str) {
        return Err(format!("no choices[0].message.content; the model refused: {refusal}"));
    }
    match server_said(&value) {
        Some(said) => Err(format!("no choices[0].message.content; the server said: {said}")),
        None => Err("no choices[0].message.content".to_owned()),
    }
}

/// Vectors ordered by `data[i].index`, and `usage.prompt_tokens`.
fn parse_embeddings(body: &[u8], inputs: usize) -> Result<(Vec<Vec<f32>>, Option<u32>), String> {
    let value = parse_json(body)?;
    let Some(data) = value.get("data").and_then(Value::as_array) else {
        return Err(match server_said(&value) {
            Some(said) => format!("no data array; the server said: {said}"),
            None => "no data array".to_owned(),
        });
    };
    if data.len() != inputs {
        return Err(format!("{} embeddings for {inputs} input texts", data.len()));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (i, item) in data.iter().enumerate() {
        let index = match item.get("index") {
            None => i,
            Some(index) => index
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n < inputs)
                .ok_or_else(|| format!("data[{i}].index is not an index below {inputs}"))?,
        };
        let vector = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no data[{i}].embedding array"))?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| format!("data[{i}].embedding holds something other than numbers"))?;
        if slots[index].replace(vector).is_some() {
            return Err(format!("two embeddings for index {index}"));
        }
    }
    // Every slot is filled: as many items as inputs, each index in range and unique.
    let vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
    if let Some(other) = vectors.iter().find(|v| v.len() != vectors[0].len()) {
        return Err(format!("embeddings of {} and {} dimensions in one answer", vectors[0].len(), other.len()));
    }
    Ok((vectors, counted_usage(&value).input))
}

fn counted_usage(value: &Value) -> Counted {
    let count = |field: &str| value.get("usage")?.get(field)?.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Counted { input: count("prompt_tokens"), output: count("completion_tokens") }
}

/// The message of an OpenAI-style `{"error": ...}` body, if it is one.
fn server_said(value: &Value) -> Option<String> {
    let error = value.get("error")?;
    error.get("message").and_then(Value::as_str).or(error.as_str()).map(str::to_owned)
}

/// A server's reason for a refusal: its `error.message`, or the body's text.
fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Some(said) = server_said(&value)
    {
        return said;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { "(no detail in the answer)".to_owned() } else { text.to_owned() }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `Retry-After` in seconds (integer or decimal); an HTTP date gives
/// `None`, so the caller backs off instead.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// Up to `max`, from the clock's sub-second digits: enough to spread
/// clients that failed together, steady enough for tests.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    max.mul_f64(f64::from(nanos) / 1e9)
}

/// Tokens of `text` for servers that do not count: a quarter of its
/// characters, rounded up (close for English with OpenAI's tokenizers).
fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Splits a byte stream of server-sent events into the `data` of each
/// event, whatever the chunk boundaries.
#[derive(Debug, Default)]
struct SseDecoder {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    /// `data` lines of the event being read, joined by `\n`.
    data: Option<String>,
}

impl SseDecoder {
    /// Takes the next bytes; returns the data of each event they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + end]).into_owned();
            self.line(&line, &mut events);
            start += end + 1;
        }
        self.pending.drain(..start);
        events
    }

    /// The stream ended: the last event may lack its blank line.
    fn finish(&mut self) -> Vec<String> {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        let mut events = Vec::new();
        self.line(&rest, &mut events);
        self.line("", &mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            events.extend(self.data.take());
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // Comments (`:`), `event:`, `id:` and `retry:` carry nothing a chat answer needs.
    }
}

/// A chat answer assembled from stream events.
#[derive(Debug, Default)]
struct StreamAnswer {
    text: String,
    usage: Counted,
    saw_choice: bool,
}

impl StreamAnswer {
    /// Takes one event's data; true at `[DONE]`.
    fn feed(&mut self, data: &str) -> Result<bool, String> {
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let value: Value =
            serde_json::from_str(data).map_err(|e| format!("a stream event is not JSON ({e}): {data}"))?;
        if let Some(said) = server_said(&value) {
            return Err(format!("the stream reported an error: {said}"));
        }
        if let Some(delta) = value.pointer("/choices/0/delta") {
            self.saw_choice = true;
            if let Some(content) = delta.get("content").and_then(Value::as_str) {
                self.text.push_str(content);
            }
        }
        let usage = counted_usage(&value);
        if usage != Counted::default() {
            self.usage = usage;
        }
        Ok(false)
    }

    fn finish(self) -> Result<(String, Counted), String> {
        if !self.saw_choice {
            return Err("no choices[0].delta in any stream event".to_owned());
        }
        Ok((self.text, self.usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::provider::{Message, Role};

    fn config(base_url: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.to_owned(),
            api_key: None,
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            retry_base_ms: default_retry_base_ms(),
            stream: false,
        }
    }

    fn decode_in_pieces(stream: &[u8], size: usize) -> Vec<String> {
        let mut decoder = SseDecoder::default();
        let mut events: Vec<String> = stream.chunks(size).flat_map(|piece| decoder.push(piece)).collect();
        events.extend(decoder.finish());
        events
    }

    #[test]
    fn sse_events_survive_any_chunk_boundary() {
        let stream = "data: {\"a\":\"é\"}\n\n: keep-alive\n\nevent: x\r\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        let expected = vec!["{\"a\":\"é\"}".to_owned(), "{\"b\":2}".to_owned(), "[DONE]".to_owned()];
        for size in 1..=stream.len() {
            assert_eq!(decode_in_pieces(stream.as_bytes(), size), expected, "pieces of {size} bytes");
        }
    }

    #[test]
    fn sse_joins_data_lines_and_keeps_a_last_event_without_blank_line() {
        assert_eq!(decode_in_pieces(b"data: one\ndata:two\n\ndata: [DONE]", 5), vec!["one\ntwo", "[DONE]"]);
    }

    #[test]
    fn stream_answer_concatenates_deltas_and_takes_final_usage() {
        let mut answer = StreamAnswer::default();
        let events = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
        ];
        for event in events {
            assert!(!answer.feed(event).unwrap());
        }
        assert!(answer.feed("[DONE]").unwrap());
        assert_eq!(answer.finish().unwrap(), ("Hello".to_owned(), Counted { input: Some(7), output: Some(2) }));
    }

    #[test]
    fn stream_answer_rejects_garbage_errors_and_choiceless_streams() {
        assert!(StreamAnswer::default().feed("{nope").unwrap_err().contains("not JSON"));
        let error = StreamAnswer::default().feed(r#"{"error":{"message":"overloaded"}}"#).unwrap_err();
        assert!(error.contains("overloaded"), "{error}");
        let mut answer = StreamAnswer::default();
        answer.feed(r#"{"id":"x"}"#).unwrap();
        assert!(answer.finish().unwrap_err().contains("choices[0].delta"));
    }

    #[test]
    fn retry_after_takes_seconds_and_ignores_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 2.5 "), Some(Duration::from_millis(2500)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("inf"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let parsed: OpenAiConfig = toml::from_str("base_url = \"http://127.0.0.1:11434/v1\"").unwrap();
        assert_eq!(parsed, config("http://127.0.0.1:11434/v1"));
        let unknown = toml::from_str::<OpenAiConfig>("base_url = \"http://x/v1\"\ntimeout = 5").unwrap_err();
        assert!(unknown.to_string().contains("timeout"), "{unknown}");
    }

    #[test]
    fn validation_names_the_key() {
        let check = |edit: fn(&mut OpenAiConfig)| {
            let mut c = config("https://api.openai.com/v1");
            edit(&mut c);
            c.validate("main")
        };
        assert_eq!(check(|_| {}), Ok(()));
        for (edit, key) in [
            ((|c| c.base_url = "ftp://x/v1".into()) as fn(&mut OpenAiConfig), "model.providers.main.base_url"),
            (|c| c.base_url = "api.openai.com/v1".into(), "model.providers.main.base_url"),
            (|c| c.base_url = "https://u:p@x/v1".into(), "model.providers.main.base_url"),
            (|c| c.base_url = "https://x/v1?k=1".into(), "model.providers.main.base_url"),
            (|c| c.api_key = Some(" ".into()), "model.providers.main.api_key"),
            (|c| c.timeout_ms = 0, "model.providers.main.timeout_ms"),
            (|c| c.timeout_ms = 600_001, "model.providers.main.timeout_ms"),
            (|c| c.max_retries = 11, "model.providers.main.max_retries"),
            (|c| c.retry_base_ms = 30_001, "model.providers.main.retry_base_ms"),
        ] {
            let error = check(edit).unwrap_err();
            assert!(error.contains(key), "{error}");
        }
        let mut edge = config("http://127.0.0.1:8080/v1/");
        edge.timeout_ms = 600_000;
        edge.max_retries = 10;
        assert_eq!(edge.validate("local"), Ok(()));
    }

    #[test]
    fn new_builds_a_tls_client_and_hides_the_key() {
        let provider = OpenAiProvider::new("main", &config("https://api.openai.com/v1/"), Some("sk-hidden\n".into()))
            .expect("the preconfigured rustls backend must be accepted");
        assert_eq!(provider.base_url, "https://api.openai.com/v1");
        assert_eq!(provider.api_key.as_deref(), Some("sk-hidden"));
        let debug = format!("{provider:?}");
        assert!(!debug.contains("sk-hidden") && debug.contains("[redacted]"), "{debug}");
        let error = OpenAiProvider::new("main", &config("https://x/v1"), Some("sk-a\nb".into())).unwrap_err();
        assert!(error.contains("model.providers.main.api_key") && !error.contains("sk-a"), "{error}");
    }

    #[test]
    fn clean_redacts_then_truncates() {
        let mut c = config("http://x/v1");
        c.api_key = Some("k".into());
        let provider = OpenAiProvider::new("p", &c, Some("sk-secret".into())).unwrap();
        assert_eq!(provider.clean(" bad key sk-secret "), "bad key [redacted]");
        let long = provider.clean(&"é".repeat(1000));
        assert_eq!(long.chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut c = config("http://x/v1");
        c.retry_base_ms = 100;
        let provider = OpenAiProvider::new("p", &c, None).unwrap();
        for (attempts, base) in [(1, 100), (2, 200), (3, 400)] {
            let wait = provider.backoff(attempts).as_millis();
            assert!((base..=base + base / 10).contains(&wait), "attempt {attempts}: {wait} ms");
        }
        assert_eq!(provider.backoff(20), MAX_RETRY_WAIT);
        assert_eq!(provider.backoff(40), MAX_RETRY_WAIT);
    }

    #[test]
    fn chat_body_has_temperature_schema_and_stream_options() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message { role: Role::System, content: "be brief".into() }],
            max_tokens: 64,
            temperature_milli: 250,
            json_schema: Some(json!({"type": "object"})),
        };
        let body = chat_body(&request, true);
        assert_eq!(body["messages"], json!([{"role": "system", "content": "be brief"}]));
        assert_eq!(body["temperature"], json!(0.25));
        assert_eq!(body["max_tokens"], json!(64));
        assert_eq!(body["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
        assert_eq!(body["response_format"]["json_schema"]["strict"], json!(true));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        let plain = chat_body(&ChatRequest { json_schema: None, ..request }, false);
        assert!(plain.get("response_format").is_none() && plain.get("stream").is_none());
    }

    #[test]
    fn chat_answers_parse_or_say_what_is_missing() {
        let (text, counted) =
            parse_chat(br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3}}"#).unwrap();
        assert_eq!((text.as_str(), counted), ("hi", Counted { input: Some(3), output: None }));
        assert_eq!(parse_chat(br#"{"choices": "nope"}"#).unwrap_err(), "no choices[0].message.content");
        let said = parse_chat(br#"{"error":{"message":"model overloaded"}}"#).unwrap_err();
        assert!(said.contains("model overloaded"), "{said}");
        assert!(parse_chat(b"<html>").unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn embeddings_follow_index_and_must_match_inputs() {
        let body =
            br#"{"data":[{"index":1,"embedding":[2.0]},{"index":0,"embedding":[1.0]}],"usage":{"prompt_tokens":4}}"#;
        assert_eq!(parse_embeddings(body, 2).unwrap(), (vec![vec![1.0], vec![2.0]], Some(4)));
        assert!(parse_embeddings(body, 3).unwrap_err().contains("2 embeddings for 3"));
        let duplicate = br#"{"data":[{"index":0,"embedding":[2.0]},{"index":0,"embedding":[1.0]}]}"#;
        assert!(parse_embeddings(duplicate, 2).unwrap_err().contains("two embeddings"));
        let ragged = br#"{"data":[{"index":0,"embedding":[2.0]},{"index":1,"embedding":[1.0, 3.0]}]}"#;
        assert!(parse_embeddings(ragged, 2).unwrap_err().contains("dimensions"));
        assert!(parse_embeddings(br#"{"data":[{"index":0}]}"#, 1).unwrap_err().contains("data[0].embedding"));
    }

    #[test]
    fn estimates_round_up_by_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("éééé"), 1);
    }

    #[test]
    fn error_message_prefers_the_servers_message() {
        assert_eq!(error_message(br#"{"error":{"message":"bad model"}}"#), "bad model");
        assert_eq!(error_message(br#"{"error":"plain"}"#), "plain");
        assert_eq!(error_message(b" gateway down "), "gateway down");
        assert_eq!(error_message(b""), "(no detail in the answer)");
    }
}
