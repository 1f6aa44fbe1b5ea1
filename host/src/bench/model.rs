//! The model capability against a raw HTTP client, and batched against
//! unbatched embeddings, all talking to an OpenAI-compatible server on
//! loopback that this module starts.
//!
//! The floor of a completion is a bare `reqwest::Client` POSTing the same
//! chat JSON and parsing the answer into a `serde_json::Value`. keel's side
//! is [`ModelService::complete`] (routing, budget reservation, the provider
//! client with its retry loop, cost rows, the audit entry) plus enqueueing
//! the call's record for the committer, as the capability does: recording
//! is asynchronous group commit, so the model call does not wait for the
//! disk. The plugin call does, once, at its end; `through_guest` measures
//! that and the capability from a real guest (`model-caller`).
//!
//! Batching: many tasks embed one text each, foreground against background
//! (`embed-background`), with the server charging nothing, a fixed cost
//! per request served one at a time (a local model server), or the same
//! cost paid in parallel (a hosted API's latency). See docs/perf.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{Percentiles, percentiles};
use crate::kernel::ledger::utc_day;
use crate::memory::committer::Batch;
use crate::memory::{Store, now_ms};
use crate::model::provider::{ChatRequest, Message, Role};
use crate::model::service::plugin_scope;
use crate::model::{CallScope, ModelConfig, ModelService, Urgency};
use crate::workspace::Workspace;

/// Who the bench's calls are made for.
const SCOPE: CallScope<'static> = CallScope { plugin: "bench", run_id: None, workflow: None };
/// Warm-up calls per side before measuring (connections, allocator, caches).
const WARMUP: usize = 200;
/// Calls per interleaved chunk; raw and keel alternate chunks.
const CHUNK: usize = 100;
/// Completions per guest call when measuring through a guest.
const GUEST_COMPLETIONS: usize = 20;
/// Concurrent tasks embedding one text each in the batching case.
const EMBED_TASKS: usize = 64;
/// `[model.batch] window_ms` of the background case.
const BATCH_WINDOW_MS: u64 = 2;
/// The per-request cost the server simulates for embeddings.
const EMBED_COST: Duration = Duration::from_millis(2);
/// A RAM-backed file system (Linux), where fsync costs nothing.
const MEMORY_DIR: &str = "/dev/shm";
/// The largest request body the loopback server reads.
const MAX_BODY: usize = 4 << 20;

const SYSTEM: &str = "You are a terse assistant. Answer in one word.";
const USER: &str = "Is the invoice from ACME paid? Answer yes or no.";
/// The server's answer to every chat request.
const CHAT_ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench-chat","choices":[{"index":0,"message":{"role":"assistant","content":"yes"},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":1,"total_tokens":32}}"#;

// The loopback server.

/// How the server spends its time on an embeddings request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedCost {
    /// Answers at once.
    Free,
    /// Each request costs this long and one request is served at a time,
    /// as a local model server with one worker does (Ollama, llama.cpp).
    Serial(Duration),
    /// Each request waits this long, all at the same time, as the latency
    /// of a hosted API that scales out.
    Parallel(Duration),
}

impl std::fmt::Display for EmbedCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedCost::Free => write!(f, "none"),
            EmbedCost::Serial(d) => write!(f, "{} ms, one at a time", d.as_millis()),
            EmbedCost::Parallel(d) => write!(f, "{} ms, all in parallel", d.as_millis()),
        }
    }
}

struct Shared {
    chat_requests: AtomicU64,
    embed_requests: AtomicU64,
    /// Time spent on [`EmbedCost`], in nanoseconds.
    embed_busy_nanos: AtomicU64,
    cost: Mutex<EmbedCost>,
    /// Held while a [`EmbedCost::Serial`] request is served.
    worker: tokio::sync::Mutex<()>,
}

/// An OpenAI-compatible HTTP/1.1 keep-alive server on 127.0.0.1: a fixed
/// chat completion for `POST /v1/chat/completions`, one 8-number vector
/// per input for `POST /v1/embeddings`. Stops when dropped.
pub struct LoopbackServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which ends every connection.
        self.task.abort();
    }
}

impl LoopbackServer {
    /// Listens on a free port of 127.0.0.1 on the current tokio runtime.
    pub async fn start() -> std::io::Result<LoopbackServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            chat_requests: AtomicU64::new(0),
            embed_requests: AtomicU64::new(0),
            embed_busy_nanos: AtomicU64::new(0),
            cost: Mutex::new(EmbedCost::Free),
            worker: tokio::sync::Mutex::new(()),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let state = state.clone();
                connections.spawn(async move {
                    let _ = serve(stream, &state).await;
                });
            }
        });
        Ok(LoopbackServer { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/v1`, for `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_embed_cost(&self, cost: EmbedCost) {
        *self.shared.cost.lock().unwrap_or_else(|e| e.into_inner()) = cost;
    }

    /// Chat requests answered so far.
    pub fn chat_requests(&self) -> u64 {
        self.shared.chat_requests.load(Ordering::Relaxed)
    }

    /// Embeddings requests answered so far.
    pub fn embed_requests(&self) -> u64 {
        self.shared.embed_requests.load(Ordering::Relaxed)
    }

    /// Time spent on the embeddings cost so far (timers round sleeps up).
    pub fn embed_busy(&self) -> Duration {
        Duration::from_nanos(self.shared.embed_busy_nanos.load(Ordering::Relaxed))
    }
}

/// Answers requests on one connection until the client closes it.
async fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let (mut length, mut close) = (0, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let Some((name, value)) = line.trim_end().split_once(':') else { break };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| std::io::Error::other("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if length > MAX_BODY {
            return Err(std::io::Error::other("request body too large"));
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        let (status, answer) = match path.as_str() {
            "/v1/chat/completions" => {
                shared.chat_requests.fetch_add(1, Ordering::Relaxed);
                ("200 OK", CHAT_ANSWER.to_owned())
            }
            "/v1/embeddings" => embeddings(shared, &body).await,
            _ => ("404 Not Found", json!({"error": {"message": format!("no route {path}")}}).to_string()),
        };
        // Head and body in one write, so no segment waits for a delayed ACK.
        let mut out =
            format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", answer.len())
                .into_bytes();
        out.extend_from_slice(answer.as_bytes());
        stream.get_mut().write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
}

async fn embeddings(shared: &Shared, body: &[u8]) -> (&'static str, String) {
    shared.embed_requests.fetch_add(1, Ordering::Relaxed);
    let texts: Vec<String> = match serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("input").cloned()) {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => return ("400 Bad Request", json!({"error": {"message": "input: a string or strings"}}).to_string()),
    };
    let cost = *shared.cost.lock().unwrap_or_else(|e| e.into_inner());
    let busy = match cost {
        EmbedCost::Free => Duration::ZERO,
        EmbedCost::Parallel(d) => timed_sleep(d).await,
        EmbedCost::Serial(d) => {
            let _one_at_a_time = shared.worker.lock().await;
            timed_sleep(d).await
        }
    };
    shared.embed_busy_nanos.fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": vector_of(text)}))
        .collect();
    let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4)).sum();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": "bench-embed",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    ("200 OK", answer.to_string())
}

async fn timed_sleep(d: Duration) -> Duration {
    let t = Instant::now();
    tokio::time::sleep(d).await;
    t.elapsed()
}

/// 8 numbers in -1..1 from FNV-1a hashes of `text` and the dimension.
fn vector_of(text: &str) -> Vec<f32> {
    (0u8..8)
        .map(|dim| {
            let hash = text
                .bytes()
                .chain([dim])
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            (hash % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

// The measurements.

/// `[model]` pointing the `small` and `embed` tiers at `base_url`; `prefix`
/// is `"model."` inside `keel.toml`, empty for a bare `ModelConfig`.
fn model_toml(prefix: &str, base_url: &str) -> String {
    format!(
        r#"
[{prefix}providers.bench]
kind = "openai"
base_url = "{base_url}"

[{prefix}tiers]
small = ["bench/bench-chat"]
embed = ["bench/bench-embed"]

[{prefix}prices."bench/bench-chat"]
input_per_million = 0.15
output_per_million = 0.60

[{prefix}prices."bench/bench-embed"]
input_per_million = 0.02

[{prefix}budget]
daily = 1000.0
plugin_daily = 1000.0

[{prefix}batch]
window_ms = {BATCH_WINDOW_MS}
max_texts = 128
"#
    )
}

/// The completion both sides ask for; temperature 0.7, so never cached.
fn chat_request() -> ChatRequest {
    ChatRequest {
        model: String::new(),
        messages: vec![
            Message { role: Role::System, content: SYSTEM.into() },
            Message { role: Role::User, content: USER.into() },
        ],
        max_tokens: 16,
        temperature_milli: 700,
        json_schema: None,
    }
}

/// The floor: a bare reqwest client, as an agent without keel would call.
struct RawClient {
    client: reqwest::Client,
    url: String,
}

impl RawClient {
    fn new(base_url: &str) -> anyhow::Result<RawClient> {
        // The same TLS set-up as keel's provider client (plain HTTP here).
        let tls = crate::tls::client_config().map_err(anyhow::Error::msg)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(RawClient { client, url: format!("{base_url}/chat/completions") })
    }

    async fn complete(&self) -> anyhow::Result<Value> {
        let body = json!({
            "model": "bench-chat",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
            "max_tokens": 16,
            "temperature": 0.7,
        });
        let response = self.client.post(&self.url).json(&body).send().await?.error_for_status()?;
        Ok(serde_json::from_slice(&response.bytes().await?)?)
    }
}

/// One completion through the service, its record queued as the capability does.
async fn keel_complete(service: &ModelService, store: &Store) -> anyhow::Result<()> {
    let metered = service.complete(store, SCOPE, "small", chat_request()).await;
    store.enqueue(metered.record);
    let done = metered.result.map_err(|e| anyhow!("keel's completion failed: {e:?}"))?;
    ensure!(!done.cached && done.text == "yes", "unexpected answer {done:?}");
    Ok(())
}

/// Raw and keel completions, interleaved in chunks.
async fn overhead(n: usize, raw: &RawClient, service: &ModelService, store: &Store) -> anyhow::Result<Overhead> {
    for _ in 0..WARMUP {
        raw.complete().await?;
        keel_complete(service, store).await?;
    }
    let (mut floor, mut keel) = (Vec::with_capacity(n), Vec::with_capacity(n));
    while keel.len() < n {
        for _ in 0..CHUNK {
            let t = Instant::now();
            raw.complete().await?;
            floor.push(t.elapsed());
        }
        for _ in 0..CHUNK {
            let t = Instant::now();
            keel_complete(service, store).await?;
            keel.push(t.elapsed());
        }
    }
    let calls = WARMUP + keel.len();
    Ok(Overhead { raw: percentiles(floor), keel: percentiles(keel), calls })
}

/// Completions from inside a guest against the same through the service,
/// p50s over `rounds` interleaved with raw calls. A plugin call that made
/// model calls waits at its end for their records to be durable (one
/// commit after all of them, `Gate::flush`); an empty call does not. So the
/// service side is K calls, each record enqueued, then an empty batch
/// awaited; the guest side a plugin call making K completions less an empty
/// plugin call; for K = 1 and K = [`GUEST_COMPLETIONS`]. The workspace and
/// the service's store are made in `parent`.
async fn through_guest(
    parent: &Path,
    rounds: usize,
    server: &LoopbackServer,
    raw: &RawClient,
    service: &ModelService,
) -> anyhow::Result<Guest> {
    let dir = parent.join(format!("keel-bench-model-guest-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Store::open(&dir.join("service.redb"))?;
    let config = format!("[limits]\ncall_timeout_ms = 60000\n{}", model_toml("model.", &server.base_url()));
    std::fs::write(dir.join(crate::workspace::CONFIG_FILE), config)?;
    let ws = Workspace::open(&dir).context("opening the bench workspace")?;
    let runtime = ws.runtime()?;
    let plugin = PathBuf::from(super::guests::MODEL_CALLER);
    let bytes = std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
    let candidate = runtime.check_candidate(bytes, &plugin, None, &())?;
    let grants = candidate.manifest.capabilities.clone();
    ws.install(candidate, grants)?;

    let complete = json!({"complete": {"tier": "small", "system": SYSTEM, "user": USER, "max_tokens": 16, "temperature_milli": 700}});
    let script = |k: usize| json!({"calls": vec![complete.clone(); k]}).to_string();
    let (empty, one, many) = (script(0), script(1), script(GUEST_COMPLETIONS));
    let out = runtime.call("model-caller", many.clone()).await?;
    let answers: Vec<Value> = serde_json::from_str(&out.output)?;
    ensure!(answers.iter().all(|a| a["text"] == "yes" && a["cached"] == false), "unexpected answers {answers:?}");
    let guest = async |input: &str| -> anyhow::Result<Duration> {
        let t = Instant::now();
        runtime.call("model-caller", input.to_owned()).await?;
        Ok(t.elapsed())
    };
    let keel = async |k: usize| -> anyhow::Result<Duration> {
        let t = Instant::now();
        for _ in 0..k {
            keel_complete(service, &store).await?;
        }
        store.commit(Batch::default()).await?;
        Ok(t.elapsed())
    };
    for _ in 0..5 {
        for input in [&empty, &one, &many] {
            guest(input).await?;
        }
        keel(GUEST_COMPLETIONS).await?;
    }
    let mut series: [Vec<Duration>; 6] = Default::default();
    let [floor, none, guest_one, guest_many, keel_one, keel_many] = &mut series;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..GUEST_COMPLETIONS {
            raw.complete().await?;
        }
        floor.push(t.elapsed());
        none.push(guest(&empty).await?);
        guest_one.push(guest(&one).await?);
        guest_many.push(guest(&many).await?);
        keel_one.push(keel(1).await?);
        keel_many.push(keel(GUEST_COMPLETIONS).await?);
    }
    let [floor, none, guest_one, guest_many, keel_one, keel_many] = series.map(|s| percentiles(s).p50);
    let k = GUEST_COMPLETIONS as u32;
    let result = Guest {
        raw: floor / k,
        service_one: keel_one,
        guest_one: guest_one.saturating_sub(none),
        service_each: keel_many / k,
        guest_each: guest_many.saturating_sub(none) / k,
    };
    drop((runtime, ws, store));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

/// `EMBED_TASKS` tasks each embedding one text `per_task` times.
async fn embed_throughput(
    service: &Arc<ModelService>,
    store: &Arc<Store>,
    server: &LoopbackServer,
    per_task: usize,
    urgency: Urgency,
) -> anyhow::Result<Throughput> {
    let run = async |per_task: usize| -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for task in 0..EMBED_TASKS {
            let (service, store) = (service.clone(), store.clone());
            tasks.spawn(async move {
                for i in 0..per_task {
                    let text = format!("note {task}-{i}: the invoice from ACME is due on Friday");
                    let metered = service.embed(&store, SCOPE, vec![text], urgency).await;
                    store.enqueue(metered.record);
                    let vectors = metered.result.map_err(|e| anyhow!("embedding failed: {e:?}"))?;
                    ensure!(vectors.len() == 1 && vectors[0].len() == 8, "unexpected vectors");
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    };
    run(1).await?;
    let (before, busy) = (server.embed_requests(), server.embed_busy());
    let t = Instant::now();
    run(per_task).await?;
    let elapsed = t.elapsed();
    let texts = EMBED_TASKS * per_task;
    let requests = server.embed_requests() - before;
    Ok(Throughput {
        texts_per_sec: texts as f64 / elapsed.as_secs_f64(),
        requests,
        cost: server.embed_busy().saturating_sub(busy) / u32::try_from(requests.max(1)).unwrap_or(u32::MAX),
    })
}

fn temp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("keel-bench-model-{what}-{}-{}", std::process::id(), now_ms()))
}

/// p50 and p99 of raw and keel completions.
#[derive(Debug, Clone, Copy)]
pub struct Overhead {
    pub raw: Percentiles,
    pub keel: Percentiles,
    /// Calls made per side, warm-up included.
    pub calls: usize,
}

/// p50s per completion; see `through_guest`.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub raw: Duration,
    /// One service call, its record enqueued, then an empty commit awaited.
    pub service_one: Duration,
    /// A plugin call making one completion, less an empty plugin call.
    pub guest_one: Duration,
    /// `GUEST_COMPLETIONS` service calls and one empty commit, per call.
    pub service_each: Duration,
    /// A plugin call making `GUEST_COMPLETIONS`, less an empty one, per completion.
    pub guest_each: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub texts_per_sec: f64,
    /// Provider requests the server received.
    pub requests: u64,
    /// The server's cost per request as it happened (timers round up).
    pub cost: Duration,
}

/// Foreground and background embeddings against one server cost.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow {
    pub cost: EmbedCost,
    pub now: Throughput,
    pub background: Throughput,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    pub iterations: usize,
    pub host: Overhead,
    /// Where the guest's workspace was (the temp directory, and
    /// `MEMORY_DIR` when it exists: commits without a disk) and what it took.
    pub guests: Vec<(&'static str, Guest)>,
    pub guest_rounds: usize,
    /// Calls the cost ledger counted for the bench's plugin, once durable.
    pub recorded_calls: u64,
    /// Chat requests the server received in the host-side measurement.
    pub chat_requests: u64,
    pub texts: usize,
    pub batching: Vec<BatchRow>,
}

/// Runs every case: `iterations` completions per side, `iterations / 100`
/// guest rounds, `iterations / 250` embeddings per task.
pub async fn run(iterations: usize) -> anyhow::Result<Report> {
    let server = LoopbackServer::start().await.context("starting the loopback model server")?;
    let config: ModelConfig = toml::from_str(&model_toml("", &server.base_url()))?;
    config.validate(&[]).map_err(|e| anyhow!("bench model config: {e}"))?;
    let service = Arc::new(ModelService::new(config, "EUR", &BTreeMap::new()));
    let dir = temp_dir("host");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Arc::new(Store::open(&dir.join("keel.redb"))?);
    let raw = RawClient::new(&server.base_url())?;
    let since = utc_day(now_ms());

    let chats = server.chat_requests();
    let host = overhead(iterations, &raw, &service, &store).await?;
    let chat_requests = server.chat_requests() - chats;
    // A waited-for commit makes every queued record before it durable.
    store.commit(Batch::default()).await?;
    let recorded_calls = recorded(&store, &since)?;

    let guest_rounds = (iterations / 25).max(5);
    let mut guests =
        vec![("temp dir", through_guest(&std::env::temp_dir(), guest_rounds, &server, &raw, &service).await?)];
    if Path::new(MEMORY_DIR).is_dir() {
        guests.push((MEMORY_DIR, through_guest(Path::new(MEMORY_DIR), guest_rounds, &server, &raw, &service).await?));
    }

    let per_task = (iterations / 250).max(2);
    let mut batching = Vec::new();
    for cost in [EmbedCost::Free, EmbedCost::Serial(EMBED_COST), EmbedCost::Parallel(EMBED_COST)] {
        server.set_embed_cost(cost);
        let now = embed_throughput(&service, &store, &server, per_task, Urgency::Now).await?;
        let background = embed_throughput(&service, &store, &server, per_task, Urgency::Background).await?;
        batching.push(BatchRow { cost, now, background });
    }
    store.commit(Batch::default()).await?;
    drop((service, store));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        iterations,
        host,
        guests,
        guest_rounds,
        recorded_calls,
        chat_requests,
        texts: EMBED_TASKS * per_task,
        batching,
    })
}

fn recorded(store: &Store, since: &str) -> anyhow::Result<u64> {
    let scope = plugin_scope(SCOPE.plugin);
    Ok(store.model_costs_since(since)?.iter().filter(|(_, s, _)| *s == scope).map(|(_, _, t)| t.calls).sum())
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        let added =
            |keel: Duration, raw: Duration| format!("{:+.1} µs", (keel.as_secs_f64() - raw.as_secs_f64()) * 1e6);
        let h = &self.host;
        writeln!(
            f,
            "keel bench model: chat completions to a loopback OpenAI-compatible server; raw = reqwest POST + JSON parse"
        )?;
        writeln!(
            f,
            "{:<42} {:>10} {:>10} {:>11} {:>10} {:>10}",
            "case", "raw p50", "keel p50", "added", "raw p99", "keel p99"
        )?;
        writeln!(
            f,
            "{:<42} {:>10} {:>10} {:>11} {:>10} {:>10}",
            "service, record enqueued",
            us(h.raw.p50),
            us(h.keel.p50),
            added(h.keel.p50, h.raw.p50),
            us(h.raw.p99),
            us(h.keel.p99)
        )?;
        for (at, g) in &self.guests {
            let rows = [
                ("service + empty commit".to_owned(), g.service_one),
                ("guest, 1 completion".to_owned(), g.guest_one),
                (format!("{GUEST_COMPLETIONS} service + empty commit, each"), g.service_each),
                (format!("guest, {GUEST_COMPLETIONS} completions, each"), g.guest_each),
            ];
            for (case, keel) in rows {
                let case = format!("{at}: {case}");
                writeln!(f, "{case:<42} {:>10} {:>10} {:>11}", us(g.raw), us(keel), added(keel, g.raw))?;
            }
        }
        let over = h.keel.p50.saturating_sub(h.raw.p50);
        let verdict = if over < Duration::from_micros(100) { "met" } else { "NOT met" };
        writeln!(f, "target under 100 µs added per call at p50, service with its record enqueued: {verdict}")?;
        writeln!(
            f,
            "service = ModelService::complete: routing, budget reservation, provider client, cost rows, audit entry; \
             first row: {} calls per side interleaved in chunks of {CHUNK}, the record queued for group commit and not \
             awaited, as the capability does; server saw {} chat requests for {} raw + {} keel calls, the cost ledger \
             {} calls.",
            self.iterations, self.chat_requests, h.calls, h.calls, self.recorded_calls
        )?;
        writeln!(
            f,
            "other rows: p50 of {} rounds, raw = p50 of {GUEST_COMPLETIONS} calls / {GUEST_COMPLETIONS}; guest = the \
             model capability from the model-caller component, workspace and the service's store in the temp \
             directory (on disk) or in /dev/shm (RAM), a plugin call making K completions less an empty \
             plugin call; a plugin call that made model calls waits at its end for their records to be durable \
             (Gate::flush: an empty commit after them), so the service rows are K calls, each record enqueued, then \
             an empty commit awaited.",
            self.guest_rounds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "embeddings: {EMBED_TASKS} concurrent tasks, {} one-text requests per side; now = embed, background = \
             embed-background with [model.batch] window_ms = {BATCH_WINDOW_MS}",
            self.texts
        )?;
        writeln!(
            f,
            "{:<34} {:>11} {:>9} {:>11} {:>9} {:>7}",
            "server cost per request (actual)", "now text/s", "requests", "bg text/s", "requests", "ratio"
        )?;
        for r in &self.batching {
            let actual = match r.cost {
                EmbedCost::Free => String::new(),
                _ => format!(" ({:.1} ms)", r.now.cost.as_secs_f64() * 1e3),
            };
            writeln!(
                f,
                "{:<34} {:>11.0} {:>9} {:>11.0} {:>9} {:>6.2}x",
                format!("{}{actual}", r.cost),
                r.now.texts_per_sec,
                r.now.requests,
                r.background.texts_per_sec,
                r.background.requests,
                r.background.texts_per_sec / r.now.texts_per_sec
            )?;
        }
        writeln!(
            f,
            "the server's cost is simulated by sleeping: a model server spends a fixed time per request, which is what \
             batching saves; with no cost, or a cost paid in parallel, batching only adds its window"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_loopback_server_answers_in_input_order_and_counts() {
        let server = LoopbackServer::start().await.unwrap();
        let raw = RawClient::new(&server.base_url()).unwrap();
        let answer = raw.complete().await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], "yes");
        let texts = ["a", "b", "c"];
        let answer: Value = raw
            .client
            .post(format!("{}/embeddings", server.base_url()))
            .json(&json!({"model": "m", "input": texts}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(answer["data"][i]["index"], i);
            assert_eq!(answer["data"][i]["embedding"], json!(vector_of(text)));
        }
        assert_eq!((server.chat_requests(), server.embed_requests()), (1, 1));
    }

    #[test]
    fn the_model_caller_component_is_found() {
        assert!(super::super::guests::MODEL_CALLER.ends_with("model-caller.wasm"));
    }
}
