//! The `model` interface end to end: the `model-caller` test component
//! calls tiers routed to the OpenAI-compatible server in `peers/openai.rs`
//! (on loopback) or to the offline provider, and the tests check answers,
//! costs, budgets, the cache, fallback, escalation, audit and the CLI.

mod common;
mod peers;

use keel_host::kernel::ledger::utc_day;
use keel_host::memory::now_ms;
use keel_host::model::cache;
use keel_host::model::costs::Totals;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use common::guests::MODEL_CALLER;
use peers::openai::{Fault, OpenAiPeer, UsageReply, embedding_of};

/// The API key the peer expects; it must never show up anywhere.
const KEY: &str = "sk-canary-model-7c1d0e9f";

/// A workspace whose tiers go to `peer` (with `extra` TOML appended),
/// the key read from a file, and `model-caller` installed.
struct Setup {
    _secrets: tempfile::TempDir,
    _dir: tempfile::TempDir,
    ws: Workspace,
    runtime: Runtime,
}

fn setup(peer: &OpenAiPeer, tiers: &str, extra: &str) -> Setup {
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = format!(
        r#"{base}
[model.providers.hosted]
kind = "openai"
base_url = "{url}"
api_key = "hosted_key"
timeout_ms = 5000
max_retries = 1
retry_base_ms = 10

[secrets.hosted_key]
file = "{key_file}"

[model.tiers]
{tiers}

[model.prices."hosted/m-small"]
input_per_million = 1.0
output_per_million = 2.0

[model.prices."hosted/m-large"]
input_per_million = 0
output_per_million = 5000

[model.prices."hosted/e"]
input_per_million = 0.5

{extra}
"#,
        base = common::TEST_CONFIG,
        url = peer.base_url(),
        key_file = key_file.display(),
    );
    let (dir, ws, runtime) = common::host_with(&config, MODEL_CALLER);
    Setup { _secrets: secrets, _dir: dir, ws, runtime }
}

const HOSTED_TIERS: &str = r#"small = ["hosted/m-small"]
large = ["hosted/m-large"]
embed = ["hosted/e"]"#;

async fn calls(runtime: &Runtime, calls: Value) -> Vec<Value> {
    let out = runtime.call("model-caller", json!({ "calls": calls }).to_string()).await.expect("model-caller runs");
    serde_json::from_str(&out.output).unwrap()
}

fn complete(tier: &str, user: &str, temperature_milli: u32) -> Value {
    json!({"complete": {"tier": tier, "user": user, "temperature_milli": temperature_milli}})
}

/// Today's totals of `scope` (e.g. `plugin:model-caller`).
fn spent(ws: &Workspace, scope: &str) -> Totals {
    let today = utc_day(now_ms());
    let rows = ws.store().model_costs_since(&today).unwrap();
    rows.into_iter().find(|(_, s, _)| s == scope).map(|(_, _, t)| t).unwrap_or_default()
}

fn audit_text(ws: &Workspace) -> String {
    let mut all = String::new();
    ws.store()
        .audit_for_each(|e| {
            all.push_str(&serde_json::to_string(e).unwrap());
            all.push('\n');
            Ok(())
        })
        .unwrap();
    all
}

#[tokio::test]
async fn a_completion_is_answered_priced_recorded_and_audited() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 100, completion: 50 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(&s.runtime, json!([complete("small", "hello there", 300)])).await;
    assert_eq!(r[0]["text"], "echo: hello there", "{r:?}");
    assert_eq!(r[0]["model"], "hosted/m-small");
    assert_eq!((r[0]["input_tokens"].as_u64(), r[0]["output_tokens"].as_u64()), (Some(100), Some(50)));
    // 100 tokens at 1.0 and 50 at 2.0 per million: 100 + 100 micro-units.
    assert_eq!(r[0]["cost_micros"], 200);
    assert_eq!(r[0]["cached"], false);

    let request = &peer.bodies()[0];
    assert_eq!(request["model"], "m-small");
    assert_eq!(request["temperature"], 0.3);
    assert_eq!(peer.requests()[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    let plugin = spent(&s.ws, "plugin:model-caller");
    assert_eq!((plugin.micros, plugin.calls, plugin.input_tokens, plugin.output_tokens), (200, 1, 100, 50));
    assert_eq!(spent(&s.ws, "model:hosted/m-small").micros, 200);
    assert_eq!(spent(&s.ws, "*").micros, 200);
    let audit = s.ws.store().audit_tail(5).unwrap();
    let entry = audit.iter().find(|e| e.operation == "model.complete").expect("the call is audited");
    assert_eq!(entry.actor, "model-caller");
    assert!(entry.reason.as_deref().unwrap().contains("cost 0.000200 EUR"), "{entry:?}");
}

#[tokio::test]
async fn a_deterministic_repeat_comes_from_the_cache_free_and_without_a_request() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 10, completion: 10 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let r =
        calls(&s.runtime, json!([complete("small", "same question", 0), complete("small", "same question", 0)])).await;
    assert_eq!(peer.request_count(), 1, "the second call made no request");
    assert_eq!((r[0]["cached"].as_bool(), r[1]["cached"].as_bool()), (Some(false), Some(true)), "{r:?}");
    assert_eq!(r[1]["cost_micros"], 0);
    assert_eq!(r[1]["text"], r[0]["text"]);
    assert_eq!(r[1]["model"], "hosted/m-small");

    // Sampling (temperature above 0) is never cached; another call (a new
    // instance, same plugin) still hits.
    calls(&s.runtime, json!([complete("small", "same question", 700)])).await;
    assert_eq!(peer.request_count(), 2);
    let again = calls(&s.runtime, json!([complete("small", "same question", 0)])).await;
    assert_eq!((again[0]["cached"].as_bool(), peer.request_count()), (Some(true), 2));
    let totals = spent(&s.ws, "plugin:model-caller");
    assert_eq!((totals.calls, totals.cached), (4, 2));

    assert_eq!(cache::count(s.ws.store()).unwrap(), 1);
    assert_eq!(s.runtime.kernel().models().clear_cache(s.ws.store()).await.unwrap(), 1);
    calls(&s.runtime, json!([complete("small", "same question", 0)])).await;
    assert_eq!(peer.request_count(), 3, "after clearing, the model is asked again");
    assert!(audit_text(&s.ws).contains("model.cache.clear"));
}

#[tokio::test]
async fn a_plugin_with_a_budget_of_one_cannot_spend_one_point_zero_one() {
    let peer = OpenAiPeer::with_key(KEY).await;
    // `large` costs 5000 per million output tokens: 101 tokens = 0.505.
    peer.set_usage(UsageReply::Fixed { prompt: 10, completion: 101 });
    let s = setup(&peer, HOSTED_TIERS, "[model.budget]\nplugin_daily = 1.00");
    let large =
        |user: &str| json!({"complete": {"tier": "large", "user": user, "max_tokens": 101, "temperature_milli": 500}});
    let r = calls(&s.runtime, json!([large("first"), large("second")])).await;
    assert_eq!(r[0]["cost_micros"], 505_000, "{r:?}");
    assert_eq!(r[1]["error"], "budget-exceeded", "{r:?}");
    let detail = r[1]["detail"].as_str().unwrap();
    assert!(detail.contains("1.000000") && detail.contains("plugin `model-caller`"), "{detail}");
    assert_eq!(peer.request_count(), 1, "the refused call never reached the provider");
    assert_eq!(spent(&s.ws, "plugin:model-caller").micros, 505_000);
    let audit = s.ws.store().audit_tail(10).unwrap();
    assert!(
        audit.iter().any(|e| e.operation == "model.complete"
            && e.decision == keel_host::memory::audit::Decision::Denied
            && e.reason.as_deref().unwrap_or_default().contains("budget")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn what_a_failed_call_spent_stays_recorded() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 1000, completion: 0 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let input = json!({"calls": [complete("small", "spend then fail", 500)], "fail": true});
    s.runtime.call("model-caller", input.to_string()).await.expect_err("the plugin fails on purpose");
    assert_eq!(peer.request_count(), 1);
    let totals = spent(&s.ws, "plugin:model-caller");
    assert_eq!((totals.calls, totals.micros), (1, 1000), "the money was spent even though the call failed");
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_next_and_the_audit_says_why() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.script([Fault::Status(500, "overloaded".into()), Fault::Status(500, "overloaded".into())]);
    let s = setup(&peer, "small = [\"hosted/m-small\", \"offline\"]", "");
    let r = calls(&s.runtime, json!([complete("small", "Hello, I'd like a quote", 0)])).await;
    assert_eq!(r[0]["model"], "offline/keel-rules-v1", "{r:?}");
    assert_eq!(peer.request_count(), 2, "one retry, then the next model");
    let audit = s.ws.store().audit_tail(5).unwrap();
    let entry = audit.iter().find(|e| e.operation == "model.complete").unwrap();
    let reason = entry.reason.as_deref().unwrap();
    assert!(reason.contains("after hosted/m-small") && reason.contains("HTTP 500"), "{reason}");
}

#[tokio::test]
async fn refused_credentials_are_a_clear_unavailable_that_never_shows_the_key() {
    let peer = OpenAiPeer::with_key("sk-some-other-key").await;
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(&s.runtime, json!([complete("small", "hi", 0)])).await;
    assert_eq!(r[0]["error"], "unavailable", "{r:?}");
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused the credentials") && detail.contains("model.providers.hosted.api_key"),
        "{detail}"
    );
    assert_eq!(peer.request_count(), 1, "a 401 is not retried");
    assert!(!detail.contains(KEY));
    // The peer's 401 body echoes the key it got, as OpenAI's does.
    assert!(!audit_text(&s.ws).contains(KEY), "the key is not in the audit log");
}

#[tokio::test]
async fn structured_answers_are_parsed_checked_and_escalated_when_unsure() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let schema = json!({"type": "object", "required": ["echo"], "properties": {"echo": {"type": "string"}}});
    let s = setup(&peer, "small = [\"hosted/m-small\"]\nlarge = [\"offline\"]", "[model.escalate]\nbelow = 0.5");
    let ask = |user: &str, schema: &Value| json!({"complete": {"tier": "small", "user": user, "schema": schema}});
    let r = calls(&s.runtime, json!([ask("structured please", &schema)])).await;
    let parsed: Value = serde_json::from_str(r[0]["json"].as_str().unwrap()).unwrap();
    assert_eq!(parsed, json!({"echo": "structured please"}));
    let sent = &peer.bodies()[0]["response_format"];
    assert_eq!(sent["json_schema"]["schema"], schema, "the schema went to the provider");

    // An answer that does not match its schema is not handed over.
    peer.set_content(Some("this is not JSON"));
    let r = calls(&s.runtime, json!([ask("again", &schema)])).await;
    assert_eq!(r[0]["error"], "unavailable", "{r:?}");
    assert!(r[0]["detail"].as_str().unwrap().contains("not JSON"), "{r:?}");

    // A small answer that is unsure of itself goes to `large`.
    let lead = json!({"type": "object", "required": ["confidence"], "properties": {
        "email": {"type": "string"}, "confidence": {"type": "number"}}});
    peer.set_content(Some(r#"{"email": "", "confidence": 0.2}"#));
    let r = calls(&s.runtime, json!([ask("From: Ada <ada@example.com>\n\nHi", &lead)])).await;
    assert_eq!(r[0]["model"], "offline/keel-rules-v1", "escalated to large: {r:?}");
    let parsed: Value = serde_json::from_str(r[0]["json"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["email"], "ada@example.com", "{parsed}");
    let audit = s.ws.store().audit_tail(3).unwrap();
    let reason = audit.iter().rev().find(|e| e.operation == "model.complete").unwrap().reason.clone().unwrap();
    assert!(reason.contains("below 0.50"), "{reason}");
}

#[tokio::test]
async fn embeddings_keep_their_order_and_are_priced() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 2_000_000, completion: 0 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(&s.runtime, json!([{"embed": ["alpha", "beta"]}])).await;
    assert_eq!((r[0]["vectors"].as_u64(), r[0]["dim"].as_u64()), (Some(2), Some(8)), "{r:?}");
    let first: Vec<f32> = serde_json::from_value(r[0]["first"].clone()).unwrap();
    assert_eq!(first, embedding_of("alpha")[..4]);
    // Two million tokens at 0.5 per million.
    assert_eq!(spent(&s.ws, "model:hosted/e").micros, 1_000_000);
}

#[tokio::test]
async fn background_embeddings_of_concurrent_calls_share_one_request() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let s = setup(&peer, HOSTED_TIERS, "[model.batch]\nwindow_ms = 300");
    let runtime = std::sync::Arc::new(s.runtime);
    let texts: Vec<String> = (0..6).map(|i| format!("note number {i}")).collect();
    let mut tasks = Vec::new();
    for text in &texts {
        let (runtime, text) = (runtime.clone(), text.clone());
        tasks.push(tokio::spawn(async move { calls(&runtime, json!([{"embed_background": [text]}])).await }));
    }
    for (task, text) in tasks.into_iter().zip(&texts) {
        let r = task.await.unwrap();
        let first: Vec<f32> = serde_json::from_value(r[0]["first"].clone()).unwrap();
        assert_eq!(first, embedding_of(text)[..4], "each call gets its own vector: {r:?}");
    }
    assert_eq!(peer.request_count(), 1, "six calls, one provider request");
    let input = peer.bodies()[0]["input"].as_array().unwrap().len();
    assert_eq!(input, 6);
    assert_eq!(spent(&s.ws, "model:hosted/e").calls, 6, "each call is counted");

    // Foreground embeddings never wait for others.
    calls(&runtime, json!([{"embed": ["now"]}, {"embed": ["now too"]}])).await;
    assert_eq!(peer.request_count(), 3);
}

#[tokio::test]
async fn ungranted_tiers_and_bad_requests_are_refused_before_any_request() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(
        &s.runtime,
        json!([
            complete("hosted/m-large", "named models need their own grant", 0),
            {"complete": {"tier": "small", "user": "x", "max_tokens": 0}},
            {"complete": {"tier": "small", "user": "x", "schema": {"type": 12}}},
        ]),
    )
    .await;
    assert_eq!(r[0]["error"], "denied", "{r:?}");
    assert_eq!(r[1]["error"], "invalid-input", "{r:?}");
    assert!(r[1]["detail"].as_str().unwrap().contains("max-tokens"), "{r:?}");
    assert_eq!(r[2]["error"], "invalid-input", "{r:?}");
    assert_eq!(peer.request_count(), 0);
}

#[tokio::test]
async fn the_cli_shows_routing_and_costs_and_clears_the_cache() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 100, completion: 50 });
    let s = setup(&peer, HOSTED_TIERS, "[model.budget]\nplugin_daily = 2.50");
    calls(&s.runtime, json!([complete("small", "cost me", 0)])).await;
    let root = s.ws.root().to_path_buf();
    let Setup { _secrets, _dir, ws, runtime } = s;
    drop(runtime);
    drop(ws);

    let models = common::keel(&root, &["models"]);
    let text = common::stdout(&models);
    assert!(models.status.success(), "{}", common::stderr(&models));
    assert!(text.contains("small  hosted/m-small (1.000000 / 2.000000 EUR per million tokens"), "{text}");
    assert!(text.contains("embed  hosted/e"), "{text}");
    assert!(text.contains("hosted       ready"), "{text}");
    assert!(text.contains("each plugin 2.50 EUR"), "{text}");
    assert!(text.contains("cache: 1 answers"), "{text}");

    let costs = common::keel(&root, &["costs", "--json"]);
    assert!(costs.status.success(), "{}", common::stderr(&costs));
    let report: Value = serde_json::from_slice(&costs.stdout).unwrap();
    assert_eq!(report["total"]["micros"], 200, "{report}");
    assert_eq!(report["plugins"][0]["name"], "model-caller");
    assert_eq!(report["plugins"][0]["useful_actions"], 0);
    assert_eq!(report["models"][0]["name"], "hosted/m-small");
    let table = common::stdout(&common::keel(&root, &["costs"]));
    assert!(table.contains("0.000200 EUR over 1 calls") && table.contains("n/a (no executed actions)"), "{table}");

    let cleared = common::keel(&root, &["cache", "clear"]);
    assert_eq!(common::stdout(&cleared).trim(), "removed 1 cached model answers");
    for out in [&models, &costs, &cleared] {
        assert!(!common::stdout(out).contains(KEY) && !common::stderr(out).contains(KEY));
    }
}

fn stream(tier: &str, user: &str, temperature_milli: u32) -> Value {
    json!({"stream": {"tier": tier, "user": user, "temperature_milli": temperature_milli}})
}

#[tokio::test]
async fn a_streamed_completion_arrives_in_pieces_and_is_priced_cached_and_audited() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 100, completion: 50 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(&s.runtime, json!([stream("small", "tell me about the invoice", 0)])).await;
    let pieces: Vec<&str> =
        r[0]["pieces"].as_array().unwrap_or_else(|| panic!("{r:?}")).iter().map(|p| p.as_str().unwrap()).collect();
    assert!(pieces.len() > 3, "the server's events arrive as separate pieces: {pieces:?}");
    assert_eq!(pieces.concat(), "echo: tell me about the invoice");
    assert_eq!(r[0]["text"], "echo: tell me about the invoice", "{r:?}");
    assert_eq!((r[0]["model"].as_str(), r[0]["cost_micros"].as_u64()), (Some("hosted/m-small"), Some(200)));
    let body = &peer.bodies()[0];
    assert_eq!((body["stream"].as_bool(), body["stream_options"]["include_usage"].as_bool()), (Some(true), Some(true)));
    let totals = spent(&s.ws, "plugin:model-caller");
    assert_eq!((totals.calls, totals.micros), (1, 200));
    assert!(audit_text(&s.ws).contains("\"operation\":\"model.complete\""));

    // Deterministic, so cached: the repeat is one piece, free, no request.
    let r = calls(&s.runtime, json!([stream("small", "tell me about the invoice", 0)])).await;
    assert_eq!(r[0]["pieces"], json!(["echo: tell me about the invoice"]), "{r:?}");
    assert_eq!((r[0]["cached"].as_bool(), r[0]["cost_micros"].as_u64()), (Some(true), Some(0)));
    assert_eq!(peer.request_count(), 1);
}

#[tokio::test]
async fn a_stream_falls_back_only_before_its_first_piece() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.script([Fault::Status(500, "overloaded".into()), Fault::Status(500, "overloaded".into())]);
    let s = setup(&peer, "small = [\"hosted/m-small\", \"offline\"]", "");
    let r = calls(&s.runtime, json!([stream("small", "Hello, I'd like a quote", 0)])).await;
    assert_eq!(r[0]["model"], "offline/keel-rules-v1", "nothing was streamed yet, so offline took over: {r:?}");
    assert_eq!(r[0]["pieces"].as_array().map(Vec::len), Some(1), "an offline answer is one piece: {r:?}");

    // Cut mid-answer: the pieces already read stand, the next model may not
    // add to them, and `next` reports the failure.
    peer.script([Fault::TruncatedStream]);
    let r = calls(&s.runtime, json!([stream("small", "another question", 700)])).await;
    assert_eq!(r[0]["error"], "unavailable", "{r:?}");
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(detail.contains("hosted/m-small") && detail.contains("[DONE]"), "{detail}");
    assert!(!detail.contains("offline/"), "offline was not asked after pieces went out: {detail}");
}

#[tokio::test]
async fn refused_streams_say_why_and_an_abandoned_stream_is_still_charged() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 1000, completion: 0 });
    let s = setup(&peer, HOSTED_TIERS, "");
    let r = calls(&s.runtime, json!([stream("hosted/m-large", "not granted by name", 0)])).await;
    assert_eq!(r[0]["error"], "denied", "{r:?}");
    assert_eq!(peer.request_count(), 0);

    let r = calls(
        &s.runtime,
        json!([{"stream_abandoned": {"tier": "small", "user": "read one piece", "temperature_milli": 500}}]),
    )
    .await;
    assert_eq!(r[0]["first"], "echo", "{r:?}");
    // The model finishes after the stream is dropped; its spend lands then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while spent(&s.ws, "plugin:model-caller").calls == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let totals = spent(&s.ws, "plugin:model-caller");
    assert_eq!((totals.calls, totals.micros), (1, 1000), "the abandoned stream's tokens are charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_workflow_step_a_stream_is_the_journaled_answer_in_one_piece() {
    let peer = OpenAiPeer::with_key(KEY).await;
    let s = setup(&peer, HOSTED_TIERS, "");
    let workflows = s.ws.root().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let step = "[[steps]]\nid = \"ask\"\nagent = \"model-caller\"\n\
                input = { calls = [{ stream = { tier = \"small\", user = \"$.trigger.question\" } }] }\n";
    std::fs::write(workflows.join("ask.toml"), step).unwrap();
    let (def, text) = s.ws.workflow("ask").unwrap();
    let started = s.runtime.start_run(&def, &text, json!({"question": "a streamed question"}), "manual", "operator");
    let done = s.runtime.drive_run(&started.await.unwrap().id).await.unwrap();
    let output = done.output().unwrap_or_else(|| panic!("{done:?}"));
    assert_eq!(output[0]["pieces"], json!(["echo: a streamed question"]), "{output}");
    let journal = s.ws.store().journal(&done.id, "ask").unwrap();
    let ops: Vec<&str> = journal.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(ops, ["model.complete"], "the answer is journaled like complete's: {journal:?}");
    assert_eq!(peer.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_deterministic_requests_in_flight_share_one_provider_call() {
    let peer = OpenAiPeer::with_key(KEY).await;
    peer.set_usage(UsageReply::Fixed { prompt: 100, completion: 50 });
    // The first request takes a while, so the others arrive while it is asked.
    peer.script([Fault::Delay(std::time::Duration::from_millis(400))]);
    let s = setup(&peer, HOSTED_TIERS, "");
    let one = || calls(&s.runtime, json!([complete("small", "the same question from three runs", 0)]));
    let (a, b, c) = tokio::join!(one(), one(), one());
    assert_eq!(peer.request_count(), 1, "one provider call for three identical requests");
    let answers = [&a[0], &b[0], &c[0]];
    assert!(answers.iter().all(|r| r["text"] == "echo: the same question from three runs"), "{answers:?}");
    let paid: Vec<u64> = answers.iter().map(|r| r["cost_micros"].as_u64().unwrap()).collect();
    assert_eq!((paid.iter().sum::<u64>(), paid.iter().filter(|c| **c == 0).count()), (200, 2), "{answers:?}");
    let totals = spent(&s.ws, "plugin:model-caller");
    assert_eq!((totals.calls, totals.cached, totals.micros), (3, 2, 200));
    assert_eq!(audit_text(&s.ws).matches("answered from an identical request in flight").count(), 2);

    // A request that differs (here: sampled) is never held for another.
    peer.script([Fault::Delay(std::time::Duration::from_millis(200))]);
    let sampled = || calls(&s.runtime, json!([complete("small", "the same question from three runs", 700)]));
    tokio::join!(sampled(), sampled());
    assert_eq!(peer.request_count(), 3);
}
