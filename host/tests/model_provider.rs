//! `OpenAiProvider` against the OpenAI-compatible server in
//! `peers/openai.rs` on loopback: answers, usage, embeddings, streaming,
//! retries and their limits, error mapping, and the secret canary.

mod common;
mod peers;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use keel_host::model::openai::{OpenAiConfig, OpenAiProvider};
use keel_host::model::provider::{ChatRequest, Message, ProviderError, Role, Usage};
use serde_json::{Value, json};

use peers::openai::{Fault, OpenAiPeer, UsageReply, embedding_of};

fn config(base_url: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base_url.to_owned(),
        api_key: None,
        timeout_ms: 10_000,
        max_retries: 3,
        retry_base_ms: 20,
        stream: false,
    }
}

fn provider(config: &OpenAiConfig, key: Option<&str>) -> OpenAiProvider {
    logs();
    OpenAiProvider::new("test", config, key.map(str::to_owned)).expect("valid provider config")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        model: "gpt-test".into(),
        messages: vec![
            Message { role: Role::System, content: "You are terse.".into() },
            Message { role: Role::User, content: text.into() },
        ],
        max_tokens: 100,
        temperature_milli: 200,
        json_schema: None,
    }
}

#[tokio::test]
async fn chat_returns_the_answer_and_the_servers_usage() {
    let peer = OpenAiPeer::start().await;
    peer.set_usage(UsageReply::Fixed { prompt: 1234, completion: 56 });
    let answer = provider(&config(&peer.base_url()), None).chat(&ask("hello there")).await.unwrap();
    assert_eq!(answer.text, "echo: hello there");
    assert_eq!(answer.usage, Usage { input_tokens: 1234, output_tokens: 56 });

    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(requests[0].header("authorization"), None, "no key configured, so no auth header");
    let body = &peer.bodies()[0];
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}])
    );
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.2);
    assert!(body.get("response_format").is_none() && body.get("stream").is_none(), "{body}");
}

#[tokio::test]
async fn chat_with_a_schema_asks_for_strict_json() {
    let peer = OpenAiPeer::start().await;
    let schema = json!({"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]});
    let request = ChatRequest { json_schema: Some(schema.clone()), ..ask("classify this") };
    let answer = provider(&config(&peer.base_url()), None).chat(&request).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&answer.text).unwrap(), json!({"echo": "classify this"}));
    assert_eq!(
        peer.bodies()[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})
    );
}

#[tokio::test]
async fn chat_estimates_usage_the_server_does_not_report() {
    let peer = OpenAiPeer::start().await;
    peer.set_usage(UsageReply::Omitted);
    peer.set_content(Some("abcdefghi"));
    let request = ChatRequest {
        messages: vec![
            Message { role: Role::System, content: "abcd".into() },
            Message { role: Role::User, content: "abcde".into() },
        ],
        ..ask("")
    };
    let answer = provider(&config(&peer.base_url()), None).chat(&request).await.unwrap();
    assert_eq!(answer.text, "abcdefghi");
    // A quarter of the characters, rounded up: 1 + 2 in, 3 out.
    assert_eq!(answer.usage, Usage { input_tokens: 3, output_tokens: 3 });
}

#[tokio::test]
async fn embeddings_come_back_in_input_order() {
    let peer = OpenAiPeer::start().await;
    let texts: Vec<String> = ["alpha", "beta", "gamma delta"].map(String::from).to_vec();
    let provider = provider(&config(&peer.base_url()), None);
    let answer = provider.embed("embed-test", &texts).await.unwrap();
    // The peer lists vectors in reverse; the provider must sort by index.
    assert_eq!(answer.vectors, texts.iter().map(|t| embedding_of(t)).collect::<Vec<_>>());
    assert_eq!(answer.input_tokens, 4, "the peer counts words");
    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/embeddings");
    assert_eq!(peer.bodies()[0], json!({"model": "embed-test", "input": texts}));

    assert_eq!(provider.embed("embed-test", &[]).await.unwrap().vectors.len(), 0);
    assert_eq!(peer.request_count(), 1, "nothing to embed, nothing sent");
}

#[tokio::test]
async fn embeddings_must_match_the_inputs() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::Body(r#"{"data":[{"index":0,"embedding":[1.0]}]}"#.into())]);
    let texts = vec!["one".to_owned(), "two".to_owned()];
    let error = provider(&config(&peer.base_url()), None).embed("e", &texts).await.unwrap_err();
    match &error {
        ProviderError::InvalidResponse { provider, detail } => {
            assert_eq!(provider, "test");
            assert!(detail.contains("1 embeddings for 2 input texts"), "{detail}");
        }
        other => panic!("expected InvalidResponse, got {other:?}"),
    }
    assert_eq!(peer.request_count(), 1);
}

#[tokio::test]
async fn streaming_assembles_the_deltas_and_the_final_usage() {
    let peer = OpenAiPeer::start().await;
    let content = "The quick brown fox jumps over the lazy dog, then naps: «ünïcødé» too.";
    peer.set_content(Some(content));
    peer.set_usage(UsageReply::Fixed { prompt: 11, completion: 22 });
    let config = OpenAiConfig { stream: true, ..config(&peer.base_url()) };
    let answer = provider(&config, None).chat(&ask("go")).await.unwrap();
    assert_eq!(answer.text, content);
    assert_eq!(answer.usage, Usage { input_tokens: 11, output_tokens: 22 });
    let body = &peer.bodies()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streaming_without_usage_estimates_it() {
    let peer = OpenAiPeer::start().await;
    peer.set_usage(UsageReply::Omitted);
    let config = OpenAiConfig { stream: true, ..config(&peer.base_url()) };
    let answer = provider(&config, None).chat(&ask("12345678")).await.unwrap();
    assert_eq!(answer.text, "echo: 12345678");
    // "You are terse." is 14 chars (4) and "12345678" 8 (2); the answer 14 (4).
    assert_eq!(answer.usage, Usage { input_tokens: 6, output_tokens: 4 });
}

#[tokio::test]
async fn a_stream_cut_before_done_is_invalid() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::TruncatedStream]);
    let config = OpenAiConfig { stream: true, ..config(&peer.base_url()) };
    let error = provider(&config, None).chat(&ask("a long enough question")).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidResponse { detail, .. } if detail.contains("data: [DONE]")),
        "{error:?}"
    );
    assert_eq!(peer.request_count(), 1);
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::RateLimited(Some("1".into()))]);
    let started = Instant::now();
    let answer = provider(&config(&peer.base_url()), None).chat(&ask("again")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(answer.text, "echo: again");
    assert_eq!(peer.request_count(), 2);
    // The backoff base is 20 ms, so only Retry-After explains a 1 s wait.
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    let requests = peer.requests();
    let gap = requests[1].at.duration_since(requests[0].at).unwrap();
    assert!(gap >= Duration::from_millis(990), "second attempt came {gap:?} after the first");
}

#[tokio::test]
async fn server_errors_are_retried() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::Status(500, "boom".into()), Fault::Status(503, "overloaded".into())]);
    let answer = provider(&config(&peer.base_url()), None).chat(&ask("x")).await.unwrap();
    assert_eq!(answer.text, "echo: x");
    assert_eq!(peer.request_count(), 3);
}

#[tokio::test]
async fn exhausted_retries_report_the_attempts() {
    let peer = OpenAiPeer::start().await;
    let config = OpenAiConfig { max_retries: 2, ..config(&peer.base_url()) };
    let provider = provider(&config, None);

    peer.script(vec![Fault::RateLimited(Some("0".into())); 3]);
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert_eq!(error, ProviderError::RateLimited { provider: "test".into(), attempts: 3 });
    assert_eq!(peer.request_count(), 3);

    peer.script(vec![Fault::Status(502, "upstream is down".into()); 3]);
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Server { provider: "test".into(), status: 502, attempts: 3, detail: "upstream is down".into() }
    );
    assert_eq!(peer.request_count(), 6);
    assert_eq!(peer.faults_left(), 0);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_gives_up_at_once() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::RateLimited(Some("20".into()))]);
    let config = OpenAiConfig { timeout_ms: 2_000, ..config(&peer.base_url()) };
    let started = Instant::now();
    let error = provider(&config, None).chat(&ask("x")).await.unwrap_err();
    assert_eq!(error, ProviderError::RateLimited { provider: "test".into(), attempts: 1 });
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(peer.request_count(), 1);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_hides_the_key() {
    let peer = OpenAiPeer::with_key("sk-the-right-one").await;
    let key = "sk-canary-wrong-4d2e8f";
    let error = provider(&config(&peer.base_url()), Some(key)).chat(&ask("x")).await.unwrap_err();
    assert_eq!(error, ProviderError::Unauthorized { provider: "test".into() });
    assert!(error.to_string().contains("model.providers.test.api_key"), "{error}");
    assert!(!error.to_string().contains(key) && !format!("{error:?}").contains(key));
    let requests = peer.requests();
    assert_eq!(requests.len(), 1, "401 is not retried");
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {key}").as_str()));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let peer = OpenAiPeer::start().await;
    let provider = provider(&config(&peer.base_url()), None);

    peer.script([Fault::Status(400, "max_tokens is too large".into())]);
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::BadRequest { provider: "test".into(), status: 400, detail: "max_tokens is too large".into() }
    );

    peer.script([Fault::Status(404, "The model `gpt-test` does not exist".into())]);
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert_eq!(error, ProviderError::NotFound { provider: "test".into(), model: "gpt-test".into() });

    peer.script([Fault::Status(422, "x".repeat(1000))]);
    match provider.chat(&ask("x")).await.unwrap_err() {
        ProviderError::BadRequest { status: 422, detail, .. } => assert!(detail.chars().count() <= 301, "{detail}"),
        other => panic!("expected BadRequest 422, got {other:?}"),
    }
    assert_eq!(peer.request_count(), 3, "one request each");
}

#[tokio::test]
async fn a_malformed_answer_is_invalid_and_not_retried() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::Body(r#"{"choices": "nope"}"#.into()), Fault::Body("<html>oops</html>".into())]);
    let provider = provider(&config(&peer.base_url()), None);
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::InvalidResponse { provider: "test".into(), detail: "no choices[0].message.content".into() }
    );
    let error = provider.chat(&ask("x")).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidResponse { detail, .. } if detail.starts_with("not JSON")),
        "{error:?}"
    );
    assert_eq!(peer.request_count(), 2);
}

#[tokio::test]
async fn a_slow_server_times_out_within_the_budget() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::Delay(Duration::from_secs(10))]);
    let config = OpenAiConfig { timeout_ms: 300, ..config(&peer.base_url()) };
    let started = Instant::now();
    let error = provider(&config, None).chat(&ask("x")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, ProviderError::Timeout { provider: "test".into(), timeout: Duration::from_millis(300) });
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(peer.request_count(), 1, "a timeout spends the budget; it is not retried");
}

#[tokio::test]
async fn refused_connections_are_retried_then_reported() {
    let closed = format!("http://127.0.0.1:{}/v1", peers::free_port());
    let config = OpenAiConfig { max_retries: 2, retry_base_ms: 10, ..config(&closed) };
    let error = provider(&config, None).chat(&ask("x")).await.unwrap_err();
    match &error {
        ProviderError::Connect { provider, detail } => {
            assert_eq!(provider, "test");
            assert!(detail.contains("after 3 attempts") && detail.contains("base_url"), "{detail}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_connection_is_a_connect_error_without_retry() {
    let peer = OpenAiPeer::start().await;
    peer.script([Fault::Hangup]);
    let error = provider(&config(&peer.base_url()), None).chat(&ask("x")).await.unwrap_err();
    assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
    assert_eq!(peer.request_count(), 1);
}

/// Everything `tracing` writes in this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber as the global default, at every
/// level, before any test's first provider call. A per-test (scoped)
/// subscriber would race with other test threads over tracing's cache of
/// which callsites are enabled and miss lines.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        captured
    })
}

#[tokio::test]
async fn the_key_never_shows_in_errors_debug_or_logs() {
    const KEY: &str = "sk-canary-7f3a9c1e5b2d";
    let logs = logs();
    let peer = OpenAiPeer::with_key(KEY).await;
    let config = OpenAiConfig { max_retries: 1, retry_base_ms: 10, ..config(&peer.base_url()) };
    let provider = OpenAiProvider::new("canary", &config, Some(KEY.into())).unwrap();
    let echo = |what: &str| format!("{what}: Incorrect API key provided: {KEY}");

    peer.script([Fault::RateLimited(Some("0".into()))]);
    provider.chat(&ask("x")).await.expect("the right key, after one retry");
    assert_eq!(peer.requests()[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    let mut errors = Vec::new();
    for fault in [
        vec![Fault::Status(400, echo("bad request"))],
        vec![Fault::Status(422, echo("unprocessable"))],
        vec![Fault::Status(500, echo("internal")); 2],
        vec![Fault::Body(json!({"error": {"message": echo("in a 200")}}).to_string())],
        vec![Fault::Status(401, echo("unauthorized"))],
    ] {
        peer.script(fault);
        errors.push(provider.chat(&ask("x")).await.unwrap_err());
    }
    let wrong_key = OpenAiPeer::with_key("sk-other").await;
    let stranger = OpenAiProvider::new("canary", &self::config(&wrong_key.base_url()), Some(KEY.into())).unwrap();
    errors.push(stranger.chat(&ask("x")).await.unwrap_err());
    let closed =
        OpenAiConfig { max_retries: 0, ..self::config(&format!("http://127.0.0.1:{}/v1", peers::free_port())) };
    errors.push(OpenAiProvider::new("canary", &closed, Some(KEY.into())).unwrap().chat(&ask("x")).await.unwrap_err());

    assert!(errors.iter().any(|e| e.to_string().contains("[redacted]")), "the echoes were redacted: {errors:?}");
    for error in &errors {
        assert!(!error.to_string().contains(KEY), "{error}");
        assert!(!format!("{error:?}").contains(KEY), "{error:?}");
    }
    let debug = format!("{provider:?}");
    assert!(!debug.contains(KEY) && debug.contains("[redacted]"), "{debug}");

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let retried = logs.lines().filter(|l| l.contains("keel.model.openai{provider=canary") && l.contains("retrying"));
    assert!(retried.count() >= 2, "the span and the retries (429, 500) are logged:\n{logs}");
    assert!(!logs.contains(KEY), "the key leaked into the logs:\n{logs}");
}
