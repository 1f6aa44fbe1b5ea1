//! Tier 2: each misbehaving test component fails with its own clear error,
//! and the same runtime keeps serving healthy calls afterwards.

mod common;

use common::guests::*;
use keel_host::runtime::{CallError, Runtime};
use keel_host::workspace::Workspace;

/// One runtime with every test component and `hello` installed.
fn host() -> (tempfile::TempDir, Workspace, Runtime) {
    let (dir, path) = common::workspace();
    let ws = Workspace::open(&path).unwrap();
    let runtime = ws.runtime().unwrap();
    for plugin in [
        HELLO,
        ECHO,
        LOOP_FOREVER,
        MEMORY_BOMB,
        DEEP_RECURSION,
        TRAP_MID_CALL,
        UNGRANTED_IMPORT,
        HUGE_OUTPUT,
        MEMORY_READS,
        MEMORY_PLANE,
        PROPOSER,
        MODEL_CALLER,
    ] {
        common::install(&ws, &runtime, plugin);
    }
    (dir, ws, runtime)
}

/// Calls `name`, expects an error, then proves the runtime still serves.
async fn fails_then_host_serves(name: &str) -> CallError {
    let (_dir, _ws, runtime) = host();
    let err = runtime.call(name, "{}".into()).await.expect_err("the component misbehaves");
    let ok = runtime.call("hello", r#"{"name":"after"}"#.into()).await.expect("host keeps serving");
    assert!(ok.output.contains("Hello, after!"), "{}", ok.output);
    // And the misbehaving plugin gets a fresh instance next time.
    let again = runtime.call(name, "{}".into()).await.expect_err("still misbehaves");
    assert_eq!(std::mem::discriminant(&err), std::mem::discriminant(&again));
    err
}

#[tokio::test]
async fn loop_forever() {
    let err = fails_then_host_serves("loop-forever").await;
    assert!(matches!(err, CallError::Timeout { limit_ms: 1500, .. }), "{err:?}");
    assert!(err.to_string().contains("timed out after 1500 ms"), "{err}");
}

#[tokio::test]
async fn memory_bomb() {
    let err = fails_then_host_serves("memory-bomb").await;
    assert!(matches!(err, CallError::MemoryLimit { limit_mib: 128, .. }), "{err:?}");
    assert!(err.to_string().contains("memory limit of 128 MiB"), "{err}");
}

#[tokio::test]
async fn deep_recursion() {
    let err = fails_then_host_serves("deep-recursion").await;
    assert!(matches!(err, CallError::StackOverflow { .. }), "{err:?}");
    assert!(err.to_string().contains("overflowed its stack"), "{err}");
}

#[tokio::test]
async fn trap_mid_call() {
    let err = fails_then_host_serves("trap-mid-call").await;
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    assert!(err.to_string().contains("trap-mid-call") && err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn huge_output() {
    let err = fails_then_host_serves("huge-output").await;
    assert!(matches!(err, CallError::OutputTooLarge { size, limit: 1_048_576, .. } if size == 64 << 20), "{err:?}");
}

#[tokio::test]
async fn ungranted_import() {
    let (_dir, ws, runtime) = host();
    let out = runtime.call("ungranted-import", "{}".into()).await.expect("the component handles denials");
    let report: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(report["get"], "denied", "{report}");
    assert_eq!(report["put"], "denied", "{report}");
    assert_eq!(report["propose"], "denied", "{report}");
    assert_eq!(report["own"], "ok", "{report}");
    assert_eq!(ws.store().kv_get("someone-else", "k").unwrap(), None, "a denied write leaves nothing");

    let denials: Vec<_> = ws
        .store()
        .audit_tail(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "ungranted-import" && e.decision == keel_host::memory::audit::Decision::Denied)
        .map(|e| (e.operation, e.target))
        .collect();
    assert_eq!(
        denials,
        [
            ("memory.read".to_owned(), "someone-else".to_owned()),
            ("memory.write".to_owned(), "someone-else".to_owned()),
            ("actions.propose".to_owned(), "payments.charge".to_owned()),
        ]
    );
}

#[tokio::test]
async fn echo() {
    let (_dir, _ws, runtime) = host();
    let out = runtime.call("echo", r#"{"a":[1,2,3]}"#.into()).await.unwrap();
    assert_eq!(out.output, r#"{"a":[1,2,3]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_isolated() {
    let (_dir, _ws, runtime) = host();
    let runtime = std::sync::Arc::new(runtime);
    let bad = tokio::spawn({
        let r = runtime.clone();
        async move { r.call("loop-forever", "{}".into()).await }
    });
    let mut good = Vec::new();
    for i in 0..8 {
        let r = runtime.clone();
        good.push(tokio::spawn(async move { r.call("echo", format!("{{\"i\":{i}}}")).await }));
    }
    for (i, g) in good.into_iter().enumerate() {
        assert_eq!(g.await.unwrap().unwrap().output, format!("{{\"i\":{i}}}"));
    }
    assert!(matches!(bad.await.unwrap(), Err(CallError::Timeout { .. })));
}

// Every test component must have a test above: this fails to compile when
// host/build.rs lists a component without a function of the same name.
macro_rules! assert_component_has_test {
    ($name:ident, $path:ident) => {
        const _: () = {
            let _ = $name;
            let _ = $path;
        };
    };
}
foreach_test_component!(assert_component_has_test);

#[tokio::test]
async fn memory_reads() {
    let (_dir, _ws, runtime) = host();
    let fresh = runtime.call("memory-reads", r#"{"reads":2}"#.into()).await.unwrap();
    assert_eq!(fresh.output, "0");
    let seeded = runtime.call("memory-reads", r#"{"reads":3,"seed":true}"#.into()).await.unwrap();
    assert_eq!(seeded.output, "3");
}

#[tokio::test]
async fn wasi_command() {
    let (_dir, _ws, runtime) = host();
    let bytes = std::fs::read(WASI_COMMAND).unwrap();
    let err = runtime.check_candidate(bytes, std::path::Path::new(WASI_COMMAND), None, &()).unwrap_err();
    assert!(matches!(err, keel_host::plugin::InstallError::WrongWorld { .. }), "{err:?}");
    assert!(err.to_string().contains("wasi:cli/run@0.2"), "{err}");
}

#[tokio::test]
async fn a_failed_call_commits_none_of_its_writes() {
    let (_dir, ws, runtime) = host();
    runtime.call("trap-mid-call", "{}".into()).await.expect_err("traps");
    assert_eq!(ws.store().kv_get("trap-mid-call", "progress").unwrap(), None, "the write before the trap is dropped");
    assert!(ws.store().audit_tail(100).unwrap().iter().all(|e| e.actor != "trap-mid-call"), "and not audited");

    runtime.call("hello", r#"{"name":"kept"}"#.into()).await.unwrap();
    assert!(ws.store().kv_get("hello", "kept").unwrap().is_some(), "a successful call's write lands");
}

/// The detailed record and note tests are in memory_plane.rs; this one
/// checks the component works under the default workspace config.
#[tokio::test]
async fn memory_plane() {
    let (_dir, _ws, runtime) = host();
    let script = serde_json::json!({"ops": [{"op": "put-record", "collection": "leads", "id": "a", "data": {"n": 1}}]});
    let out = runtime.call("memory-plane", script.to_string()).await.unwrap();
    assert_eq!(out.output, "[1]");
}

/// The model tests are in model_capability.rs; this one checks that with
/// no provider configured the offline one answers, honestly named and free.
#[tokio::test]
async fn model_caller() {
    let (_dir, ws, runtime) = host();
    let script = serde_json::json!({"calls": [{"complete": {"tier": "small", "user": "Hello from Ada"}}]});
    let out = runtime.call("model-caller", script.to_string()).await.unwrap();
    let results: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(results[0]["model"], "offline/keel-rules-v1", "{results}");
    assert_eq!(results[0]["cost_micros"], 0, "{results}");
    assert!(!results[0]["text"].as_str().unwrap().is_empty(), "{results}");
    // The model service's entry names the version of the calling plugin.
    let audit = ws.store().audit_tail(5).unwrap();
    let entry = audit.iter().find(|e| e.actor == "model-caller" && e.operation == "model.complete");
    assert_eq!(entry.and_then(|e| e.version.as_deref()), Some("0.1.0"), "{audit:?}");
}

/// The kernel tests are in kernel.rs; this one checks that with no
/// connector installed a proposal is `unavailable`, audited, and harmless.
#[tokio::test]
async fn proposer() {
    let (_dir, ws, runtime) = host();
    let script = serde_json::json!({"proposals": [{"kind": "email.send", "payload": {"to": "a@example.com"}}]});
    let out = runtime.call("proposer", script.to_string()).await.unwrap();
    let results: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(results[0]["error"], "unavailable", "{results}");
    assert!(results[0]["detail"].as_str().unwrap().contains("install one"), "{results}");
    let audit = ws.store().audit_tail(5).unwrap();
    let entry = audit.iter().find(|e| e.actor == "proposer" && e.operation == "actions.propose");
    assert_eq!(entry.and_then(|e| e.version.as_deref()), Some("0.1.0"), "the refusal names the version: {audit:?}");
    assert!(ws.store().intents_in(keel_host::kernel::outbox::IntentState::Ready, 10).unwrap().is_empty());
}
