//! An OpenAI-compatible server on loopback: `POST /v1/chat/completions`
//! (whole, or streamed as server-sent events when the request says
//! `stream: true`) and `POST /v1/embeddings`, with an optional bearer key,
//! a log of every request, and scripted faults for the next requests.
//!
//! Answers are predictable: chat content is `echo: <last user message>`
//! (or `{"echo": "<last user message>"}` when the request asks for a JSON
//! schema) unless a test sets it; usage counts words unless a test sets
//! it; embeddings are [`embedding_of`] each text, listed in reverse order
//! with their `index`, so clients must sort them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub use super::http::RecordedRequest;
use super::http::{read_request, reason};

/// One scripted answer, given to the next request instead of the normal one.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 429, with this `Retry-After` value if any.
    RateLimited(Option<String>),
    /// This status with an OpenAI-style body `{"error": {"message": ...}}`.
    Status(u16, String),
    /// HTTP 200 with this body as is, e.g. `{"choices": "nope"}`.
    Body(String),
    /// Waits this long before sending the headers, then answers normally.
    Delay(Duration),
    /// A chat stream that ends without `data: [DONE]`.
    TruncatedStream,
    /// Closes the connection without answering.
    Hangup,
}

/// The token counts chat answers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageReply {
    /// Words of the messages and of the answer (the default).
    Words,
    /// These counts; embeddings report `prompt`.
    Fixed { prompt: u32, completion: u32 },
    /// No `usage` at all, as some servers do.
    Omitted,
}

struct State {
    key: Option<String>,
    faults: VecDeque<Fault>,
    content: Option<String>,
    /// The answer to requests with a JSON Schema, when set.
    structured: Option<String>,
    usage: UsageReply,
    log: Vec<RecordedRequest>,
}

/// The server; stops when dropped.
pub struct OpenAiPeer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OpenAiPeer {
    /// Serves without auth on a free port of the current tokio runtime.
    pub async fn start() -> OpenAiPeer {
        OpenAiPeer::serve(None).await
    }

    /// Answers 401 unless the request bears `Authorization: Bearer <key>`.
    pub async fn with_key(key: &str) -> OpenAiPeer {
        OpenAiPeer::serve(Some(key.to_owned())).await
    }

    async fn serve(key: Option<String>) -> OpenAiPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            key,
            faults: VecDeque::new(),
            content: None,
            structured: None,
            usage: UsageReply::Words,
            log: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &state).await;
                });
            }
        });
        OpenAiPeer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/v1`, for `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues faults: the next requests get them, one each, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Faults queued and not yet given.
    pub fn faults_left(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// The content of every chat answer from now on; `None` echoes again.
    pub fn set_content(&self, content: Option<&str>) {
        self.state.lock().unwrap().content = content.map(str::to_owned);
    }

    /// The content of answers to requests with a JSON Schema from now on
    /// (others get [`OpenAiPeer::set_content`]'s); `None` undoes it.
    pub fn set_structured_content(&self, content: Option<&str>) {
        self.state.lock().unwrap().structured = content.map(str::to_owned);
    }

    pub fn set_usage(&self, usage: UsageReply) {
        self.state.lock().unwrap().usage = usage;
    }

    /// Every request received so far, faulted ones included, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// The JSON bodies of [`Self::requests`] (`null` for a body that is not JSON).
    pub fn bodies(&self) -> Vec<Value> {
        self.requests().iter().map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null)).collect()
    }
}

/// The 8-dimensional vector the server gives `text`: FNV-1a hashes of the
/// text and a counter, scaled to -1..1.
pub fn embedding_of(text: &str) -> Vec<f32> {
    (0u8..8)
        .map(|dim| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in text.bytes().chain([dim]) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            (hash % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Whitespace-separated words: the token count of [`UsageReply::Words`].
pub fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

/// What the server sends for one request.
enum Reply {
    Json(u16, Vec<(&'static str, String)>, Value),
    Raw(u16, String),
    /// Server-sent events; `[DONE]` last unless `truncated`.
    Stream {
        events: Vec<Value>,
        truncated: bool,
    },
    Hangup,
}

/// Reads one request, answers it, closes the connection.
async fn answer(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let request = read_request(&mut reader).await?;
    let (fault, mut reply) = {
        let mut state = state.lock().unwrap();
        state.log.push(request.clone());
        let fault = state.faults.pop_front();
        (fault, normal_reply(&state, &request))
    };
    match fault {
        None => {}
        Some(Fault::RateLimited(retry_after)) => {
            let headers = retry_after.map(|v| ("retry-after", v)).into_iter().collect();
            reply = Reply::Json(429, headers, error_body("Rate limit reached, please try again later"));
        }
        Some(Fault::Status(status, message)) => reply = Reply::Json(status, Vec::new(), error_body(&message)),
        Some(Fault::Body(body)) => reply = Reply::Raw(200, body),
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::TruncatedStream) => {
            if let Reply::Stream { events, .. } = reply {
                let half = events.len().div_ceil(2);
                reply = Reply::Stream { events: events.into_iter().take(half).collect(), truncated: true };
            }
        }
        Some(Fault::Hangup) => reply = Reply::Hangup,
    }
    let mut stream = reader.into_inner();
    match reply {
        Reply::Json(status, headers, body) => {
            let mut headers = headers;
            headers.push(("content-type", "application/json".into()));
            write_whole(&mut stream, status, &headers, body.to_string().as_bytes()).await
        }
        Reply::Raw(status, body) => {
            write_whole(&mut stream, status, &[("content-type", "application/json".into())], body.as_bytes()).await
        }
        Reply::Stream { events, truncated } => write_stream(&mut stream, &events, truncated).await,
        Reply::Hangup => Ok(()),
    }
}

fn normal_reply(state: &State, request: &RecordedRequest) -> Reply {
    if let Some(key) = &state.key
        && request.header("authorization") != Some(format!("Bearer {key}").as_str())
    {
        // Like OpenAI, the message shows the key it got (OpenAI masks most of it).
        let presented = request.header("authorization").unwrap_or_default().trim_start_matches("Bearer ");
        let mut body = error_body(&format!("Incorrect API key provided: {presented}"));
        body["error"]["code"] = json!("invalid_api_key");
        return Reply::Json(401, Vec::new(), body);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return Reply::Json(400, Vec::new(), error_body("We could not parse the JSON body of your request"));
    };
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/chat/completions") => chat_reply(state, &body),
        ("POST", "/v1/embeddings") => embeddings_reply(state, &body),
        _ => Reply::Json(404, Vec::new(), error_body(&format!("Unknown request URL: {}", request.path))),
    }
}

fn chat_reply(state: &State, body: &Value) -> Reply {
    let model = body["model"].as_str().unwrap_or_default();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user =
        messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default();
    let structured = body["response_format"]["type"] == "json_schema";
    let content = match (&state.structured, &state.content) {
        (Some(content), _) if structured => content.clone(),
        (_, Some(content)) => content.clone(),
        (_, None) if structured => json!({"echo": last_user}).to_string(),
        (_, None) => format!("echo: {last_user}"),
    };
    let usage = match state.usage {
        UsageReply::Words => {
            let prompt: u32 = messages.iter().map(|m| words(m["content"].as_str().unwrap_or_default())).sum();
            Some(json!({"prompt_tokens": prompt, "completion_tokens": words(&content)}))
        }
        UsageReply::Fixed { prompt, completion } => {
            Some(json!({"prompt_tokens": prompt, "completion_tokens": completion}))
        }
        UsageReply::Omitted => None,
    }
    .map(|mut usage| {
        usage["total_tokens"] =
            json!(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap());
        usage
    });
    if body["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        let chars: Vec<char> = content.chars().collect();
        events.extend(
            chars.chunks(4).map(|piece| chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null)),
        );
        events.push(chunk(json!({}), json!("stop")));
        if let Some(usage) = usage.filter(|_| body["stream_options"]["include_usage"] == true) {
            events.push(json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "created": 0, "model": model,
                               "choices": [], "usage": usage}));
        }
        return Reply::Stream { events, truncated: false };
    }
    let mut answer = json!({
        "id": "chatcmpl-peer", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    if let Some(usage) = usage {
        answer["usage"] = usage;
    }
    Reply::Json(200, Vec::new(), answer)
}

fn embeddings_reply(state: &State, body: &Value) -> Reply {
    let texts: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(|t| t.as_str().unwrap_or_default().to_owned()).collect(),
        _ => return Reply::Json(400, Vec::new(), error_body("'input' must be a string or an array of strings")),
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedding_of(text)}))
        .collect();
    let mut answer = json!({"object": "list", "data": data, "model": body["model"]});
    let prompt = match state.usage {
        UsageReply::Words => Some(texts.iter().map(|t| words(t)).sum::<u32>()),
        UsageReply::Fixed { prompt, .. } => Some(prompt),
        UsageReply::Omitted => None,
    };
    if let Some(prompt) = prompt {
        answer["usage"] = json!({"prompt_tokens": prompt, "total_tokens": prompt});
    }
    Reply::Json(200, Vec::new(), answer)
}

fn error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
}

async fn write_whole(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// Sends the events as one chunked body cut into small pieces that ignore
/// line boundaries, pausing between them so clients see split lines.
async fn write_stream(stream: &mut TcpStream, events: &[Value], truncated: bool) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    let mut text: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    if !truncated {
        text.push_str("data: [DONE]\n\n");
    }
    for piece in text.as_bytes().chunks(37) {
        stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
        stream.write_all(piece).await?;
        stream.write_all(b"\r\n").await?;
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.shutdown().await
}
