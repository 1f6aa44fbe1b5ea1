//! The semantic store embedding through a configured model
//! (`[memory] embedder = { kind = "model", ... }`), against the
//! OpenAI-compatible server in `peers/openai.rs` on loopback: notes and
//! queries go to that model, the calls are priced, charged to `host` and
//! audited, and a model that is down or answers vectors of the wrong length
//! gives the guest `unavailable` with what to do, storing nothing.

mod common;
mod peers;

use keel_host::kernel::ledger::utc_day;
use keel_host::memory::now_ms;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::openai::{OpenAiPeer, embedding_of};

/// The API key the peer expects; it must never show up anywhere.
const KEY: &str = "sk-canary-embed-41b2c7d0";

struct Setup {
    _secrets: tempfile::TempDir,
    dir: tempfile::TempDir,
    ws: Workspace,
    runtime: Runtime,
}

/// A workspace whose semantic store embeds with `hosted/emb` at `base_url`,
/// configured for vectors of `dimensions` numbers, with `memory-plane`
/// installed.
fn setup(base_url: &str, dimensions: usize) -> Setup {
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = format!(
        r#"{base}
[memory]
embedder = {{ kind = "model", model = "hosted/emb", dimensions = {dimensions} }}

[model.providers.hosted]
kind = "openai"
base_url = "{base_url}"
api_key = "hosted_key"
timeout_ms = 2000
max_retries = 0

[secrets.hosted_key]
file = "{key_file}"

[model.prices."hosted/emb"]
input_per_million = 100.0
"#,
        base = common::TEST_CONFIG,
        key_file = key_file.display(),
    );
    let (dir, ws, runtime) = common::host_with(&config, common::guests::MEMORY_PLANE);
    Setup { _secrets: secrets, dir, ws, runtime }
}

fn audit_lines(ws: &Workspace) -> Vec<Value> {
    let mut all = Vec::new();
    ws.store()
        .audit_for_each(|e| {
            all.push(serde_json::to_value(e).unwrap());
            Ok(())
        })
        .unwrap();
    all
}

/// Remembers [`INVOICE`], which must fail as `unavailable`; the detail.
async fn unavailable_remember(runtime: &Runtime) -> String {
    let r = common::memory_plane_script(
        runtime,
        json!([{"op": "remember", "namespace": "notes", "text": INVOICE, "tags": []}]),
    )
    .await;
    assert_eq!(r[0]["error"], "unavailable", "{r:?}");
    r[0]["detail"].as_str().unwrap().to_owned()
}

const INVOICE: &str = "Acme asked for a meeting about the March invoice";
const QUOTE: &str = "Globex wants a quote for the new website";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_queries_are_embedded_by_the_model_priced_and_audited() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let s = setup(&peer.base_url(), 8);
    assert_eq!(s.ws.memory_plane().unwrap().semantic.embedder().id(), "model:hosted/emb");

    let r = common::memory_plane_script(
        &s.runtime,
        json!([
            {"op": "remember", "namespace": "notes", "text": INVOICE, "tags": []},
            {"op": "remember", "namespace": "notes", "text": QUOTE, "tags": []},
        ]),
    )
    .await;
    assert!(r.iter().all(Value::is_string), "both notes stored: {r:?}");
    let r = common::memory_plane_script(
        &s.runtime,
        json!([{"op": "recall", "namespace": "notes", "query": QUOTE, "k": 2}]),
    )
    .await;
    let hits = r[0].as_array().unwrap_or_else(|| panic!("recall answered: {r:?}"));
    assert_eq!(hits[0]["text"], QUOTE, "{r:?}");
    // No decay configured: the score is the similarity.
    let score = hits[0]["score"].as_f64().unwrap();
    assert!((score - 1.0).abs() < 1e-5, "the same text, the same model vector: {score}");

    // Every text went to the model, one request each, with the key.
    let bodies = peer.bodies();
    let inputs: Vec<Value> = bodies.iter().map(|b| b["input"].clone()).collect();
    assert_eq!(inputs, vec![json!([INVOICE]), json!([QUOTE]), json!([QUOTE])], "{bodies:?}");
    assert!(bodies.iter().all(|b| b["model"] == "emb"));
    assert!(peer.requests().iter().all(|r| r.path == "/v1/embeddings"));
    let stored = s.ws.memory_plane().unwrap().semantic.embedder().embed(&[QUOTE]);
    assert_eq!(stored[0], embedding_of(QUOTE), "vectors are the model's, not the hashed embedder's");

    // Charged to `host`, at the configured price: the peer counts words.
    let today = utc_day(now_ms());
    let rows = s.ws.store().model_costs_since(&today).unwrap();
    let host = rows.iter().find(|(_, scope, _)| scope == "plugin:host").map(|(_, _, t)| *t);
    let host = host.unwrap_or_else(|| panic!("memory embeddings are charged to host: {rows:?}"));
    assert!(host.calls >= 3 && host.micros > 0, "{host:?}");

    let audit = audit_lines(&s.ws);
    let embeds: Vec<&Value> = audit.iter().filter(|e| e["operation"] == "model.embed").collect();
    assert!(embeds.len() >= 3, "{audit:?}");
    assert!(embeds.iter().all(|e| e["actor"] == "host" && e["decision"] == "allowed"), "{embeds:?}");
    assert!(!format!("{audit:?}").contains(KEY), "the API key never reaches the audit log");

    // The operator's view, from another process once this one lets go.
    let root = s.ws.root().to_path_buf();
    let Setup { dir: _dir, ws, runtime, .. } = s;
    drop((runtime, ws));
    let out = common::keel(&root, &["memory", "stats", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["embedder"], "model:hosted/emb", "{stats}");
    assert!(stats["embedder_fallback"].is_null(), "{stats}");
    let out = common::keel(&root, &["memory", "recall", "notes", QUOTE, "-k", "1"]);
    assert!(common::stdout(&out).contains(QUOTE), "{}{}", common::stdout(&out), common::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_is_down_leaves_the_guest_unavailable_and_stores_nothing() {
    // A port nothing listens on: bind, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = setup(&format!("http://{closed}/v1"), 8);
    let detail = unavailable_remember(&s.runtime).await;
    assert!(detail.contains("model:hosted/emb") && detail.contains("hosted/emb"), "names the model: {detail}");

    let r = common::memory_plane_script(
        &s.runtime,
        json!([{"op": "recall", "namespace": "notes", "query": INVOICE, "k": 5}]),
    )
    .await;
    assert_eq!(r[0]["error"], "unavailable", "a query cannot be embedded either: {r:?}");
    assert_eq!(s.ws.memory_plane().unwrap().semantic.stats("notes").notes, 0, "nothing stored");
    let denied = audit_lines(&s.ws).into_iter().filter(|e| e["operation"] == "model.embed").count();
    assert!(denied >= 2, "each failed embedding is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_of_another_length_than_configured_say_what_to_set() {
    let peer = OpenAiPeer::start().await;
    let s = setup(&peer.base_url(), 16);
    let detail = unavailable_remember(&s.runtime).await;
    assert!(
        detail.contains("vectors of 8 numbers")
            && detail.contains("`memory.embedder.dimensions` is 16")
            && detail.contains("set it to 8"),
        "{detail}"
    );
}

#[test]
fn an_embedder_naming_a_provider_that_is_not_configured_is_refused_at_load() {
    let (_dir, path) = common::workspace();
    let config = format!(
        "{}\n[memory]\nembedder = {{ kind = \"model\", model = \"nowhere/emb\", dimensions = 8 }}\n",
        common::TEST_CONFIG
    );
    std::fs::write(path.join("keel.toml"), config).unwrap();
    let err = Workspace::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("keel.toml")
            && err.contains("`memory.embedder.model` names provider `nowhere`")
            && err.contains("[model.providers.nowhere]"),
        "{err}"
    );
    let out = common::keel(&path, &["memory", "stats"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("[model.providers.nowhere]"), "{}", common::stderr(&out));

    std::fs::write(
        path.join("keel.toml"),
        format!(
            "{}\n[memory]\nembedder = {{ kind = \"model\", model = \"emb\", dimensions = 8 }}\n",
            common::TEST_CONFIG
        ),
    )
    .unwrap();
    let err = Workspace::open(&path).unwrap_err().to_string();
    assert!(err.contains("`memory.embedder.model` = \"emb\" is not `provider/model`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_many_embeds_all_its_notes_in_one_model_request() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let s = setup(&peer.base_url(), 8);
    let texts = [INVOICE, QUOTE, "Initech paid invoice 42 late again"];
    let r =
        common::memory_plane_script(&s.runtime, json!([{"op": "remember-many", "namespace": "notes", "texts": texts}]))
            .await;
    let ids = r[0].as_array().unwrap_or_else(|| panic!("ids: {r:?}"));
    assert_eq!(ids.len(), 3, "{r:?}");
    let inputs: Vec<Value> = peer.bodies().iter().map(|b| b["input"].clone()).collect();
    assert_eq!(inputs, vec![json!(texts)], "one request for the three notes");

    let r = common::memory_plane_script(
        &s.runtime,
        json!([{"op": "recall-many", "requests": texts.iter().map(|t| json!({"namespace": "notes", "query": t, "k": 1})).collect::<Vec<_>>()}]),
    )
    .await;
    let found: Vec<&Value> = r[0].as_array().unwrap().iter().map(|hits| &hits[0]["id"]).collect();
    assert_eq!(found, ids.iter().collect::<Vec<_>>(), "each note is found by its own text, ids in order: {r:?}");
    assert_eq!(peer.bodies().len(), 2, "the three queries went in one request too");

    // All or nothing: a bad note fails the call and stores none.
    let r = common::memory_plane_script(
        &s.runtime,
        json!([{"op": "remember-many", "namespace": "notes", "texts": ["fine", ""]}]),
    )
    .await;
    assert_eq!(r[0]["error"], "invalid-input", "{r:?}");
    assert_eq!(s.ws.memory_plane().unwrap().semantic.stats("notes").notes, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_a_model_reindexes_through_it_in_batches() {
    let peer = OpenAiPeer::start().await;
    let (_dir, ws) = common::workspace();
    for text in [INVOICE, QUOTE] {
        let out = common::keel(&ws, &["memory", "remember", "notes", text]);
        assert!(out.status.success(), "{}", common::stderr(&out));
    }
    let config = format!(
        "{}\n[memory]\nembedder = {{ kind = \"model\", model = \"hosted/emb\", dimensions = 8 }}\n\n\
         [model.providers.hosted]\nkind = \"openai\"\nbase_url = \"{}\"\n",
        common::TEST_CONFIG,
        peer.base_url()
    );
    std::fs::write(ws.join("keel.toml"), config).unwrap();
    let out = common::keel(&ws, &["memory", "stats"]);
    assert!(common::stdout(&out).contains("2 notes embedded by another embedder"), "{}", common::stdout(&out));
    assert_eq!(peer.request_count(), 0, "opening the workspace embeds nothing");

    let out = common::keel(&ws, &["memory", "reindex"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("re-embedded 2 notes with model:hosted/emb"), "{}", common::stdout(&out));
    let inputs: Vec<Value> = peer.bodies().iter().map(|b| b["input"].clone()).collect();
    assert_eq!(inputs, vec![json!([INVOICE, QUOTE])], "one background request for both notes");

    let out = common::keel(&ws, &["memory", "recall", "notes", QUOTE, "-k", "1"]);
    assert!(common::stdout(&out).contains(QUOTE), "{}{}", common::stdout(&out), common::stderr(&out));
}
