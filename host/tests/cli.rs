//! Tier 3: the `keel` binary against throwaway workspaces.

mod common;

use common::guests::*;
use common::{keel, stderr, stdout};

fn installed(plugins: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, ws) = common::workspace();
    for p in plugins {
        let out = keel(&ws, &["install", p, "--yes", "--allow-unsigned"]);
        assert!(out.status.success(), "install {p}: {}", stderr(&out));
    }
    (dir, ws)
}

#[test]
fn init_creates_a_workspace_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("new");
    let out = keel(&ws, &["init", ws.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.join("keel.toml").exists() && ws.join("keel.redb").exists());
    let again = keel(&ws, &["init", ws.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already a keel workspace"), "{}", stderr(&again));
}

#[test]
fn hello_state_persists_across_processes() {
    let (_dir, ws) = installed(&[HELLO]);
    let first = keel(&ws, &["call", "hello", "--input", r#"{"name":"Ada"}"#]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first: serde_json::Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert_eq!(first["message"], "Hello, Ada!");
    assert_eq!(first["times_seen"], 1);

    let second = keel(&ws, &["call", "hello", "--input", r#"{"name":"Ada"}"#]);
    let second: serde_json::Value = serde_json::from_str(&stdout(&second)).unwrap();
    assert_eq!(second["times_seen"], 2, "call 2 reads what call 1 wrote");
}

#[test]
fn list_inspect_and_remove() {
    let (_dir, ws) = installed(&[HELLO]);
    let list = stdout(&keel(&ws, &["list"]));
    assert!(list.contains("hello") && list.contains("agent"), "{list}");

    let inspect = stdout(&keel(&ws, &["inspect", "hello"]));
    assert!(inspect.contains("keel:plugin/memory@0.1.0"), "imports listed: {inspect}");
    assert!(inspect.contains("read and write namespace `hello`"), "grants listed: {inspect}");

    let removed = keel(&ws, &["remove", "hello"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let call = keel(&ws, &["call", "hello"]);
    assert_eq!(call.status.code(), Some(1));
    assert!(stderr(&call).contains("no plugin named `hello` is installed"), "{}", stderr(&call));
}

#[test]
fn installing_twice_is_refused() {
    let (_dir, ws) = installed(&[HELLO]);
    let out = keel(&ws, &["install", HELLO, "--yes", "--allow-unsigned"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already installed"), "{}", stderr(&out));
}

#[test]
fn install_without_yes_and_without_a_terminal_asks_for_yes() {
    let (_dir, ws) = common::workspace();
    let out = keel(&ws, &["install", HELLO, "--allow-unsigned"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rerun with --yes"), "{}", stderr(&out));
    assert!(stdout(&keel(&ws, &["list"])).contains("no plugins installed"));
}

/// Each bad file gets its own message, and nothing is written.
#[test]
fn bad_plugin_files_fail_clearly_and_write_nothing() {
    let (dir, ws) = common::workspace();
    let hello = std::fs::read(HELLO).unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("notes.wasm", b"hello, I am a text file\n".to_vec(), "is not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "is a core WebAssembly module, not a component"),
        ("truncated.wasm", hello[..hello.len() / 2].to_vec(), "is truncated"),
        (
            "empty-world.wasm",
            keel_host::plugin::package::pack(b"\0asm\x0d\0\x01\0", "name = 'x'\nversion = '1'\nworld = 'agent'"),
            "is a component of another world",
        ),
        (
            "unpacked.wasm",
            keel_host::plugin::package::pack(
                b"\0asm\x0d\0\x01\0",
                "name = 'x'\nversion = '1'\nworld = 'agent'\nbogus = 1",
            ),
            "unknown field `bogus`",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = keel(&ws, &["install", path.to_str().unwrap(), "--yes", "--allow-unsigned"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expected) && err.contains(name), "{name}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("keel: ")).count(), 1, "one error line: {err}");
    }
    let wasi_command = keel(&ws, &["install", WASI_COMMAND, "--yes", "--allow-unsigned"]);
    assert!(stderr(&wasi_command).contains("is a component of another world"), "{}", stderr(&wasi_command));
    assert!(stderr(&wasi_command).contains("wasi:cli/run"), "names what it exports: {}", stderr(&wasi_command));

    assert!(stdout(&keel(&ws, &["list"])).contains("no plugins installed"));
    assert_eq!(stdout(&keel(&ws, &["audit", "tail"])), "", "no audit entries");
}

#[test]
fn plugin_faults_exit_with_code_4_and_one_clear_line() {
    let (_dir, ws) = installed(&[LOOP_FOREVER, TRAP_MID_CALL]);
    let out = keel(&ws, &["call", "loop-forever"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("plugin `loop-forever` timed out after 1500 ms"), "{}", stderr(&out));
    let out = keel(&ws, &["call", "trap-mid-call"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("deliberate trap for the test"), "panic message surfaces: {}", stderr(&out));
}

#[test]
fn ungranted_imports_are_denied_audited_and_logged() {
    let (_dir, ws) = installed(&[UNGRANTED_IMPORT]);
    let out = keel(&ws, &["call", "ungranted-import"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""propose": "denied""#), "{}", stdout(&out));
    assert!(stderr(&out).contains("denied") && stderr(&out).contains("someone-else"), "logged: {}", stderr(&out));
    let audit = stdout(&keel(&ws, &["audit", "tail"]));
    assert_eq!(audit.matches("DENIED").count(), 3, "{audit}");
    assert!(audit.contains("payments.charge"), "{audit}");
}

#[test]
fn invalid_input_json_is_rejected_before_running() {
    let (_dir, ws) = installed(&[ECHO]);
    let out = keel(&ws, &["call", "echo", "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--input is not valid JSON"), "{}", stderr(&out));
}

#[test]
fn every_command_has_help() {
    let (_dir, ws) = common::workspace();
    let commands = ["init", "install", "list", "inspect", "call", "remove", "pack", "audit", "memory", "bench"];
    let kernel = ["approvals", "approve", "reject", "stop", "resume", "status", "outbox"];
    for cmd in commands.into_iter().chain(kernel) {
        let out = keel(&ws, &[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage:"), "{cmd}");
    }
}

#[test]
fn pack_embeds_a_manifest_that_install_reads() {
    let (dir, ws) = common::workspace();
    let bare = dir.path().join("bare.wasm");
    let manifest = dir.path().join("plugin.toml");
    std::fs::write(&manifest, "name = 'renamed'\nversion = '2.0.0'\nworld = 'agent'\n").unwrap();
    // Repacking the echo plugin replaces its manifest.
    std::fs::copy(ECHO, &bare).unwrap();
    let out = keel(&ws, &["pack", bare.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel(&ws, &["install", bare.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("installed renamed 2.0.0"), "{}", stdout(&out));
}

#[test]
fn bench_prints_ratios_against_the_floor() {
    let (_dir, ws) = common::workspace();
    let out = keel(&ws, &["bench", "--iterations", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for row in ["instantiate+call (echo)", "hello: memory get+put, durable", "memory.get host call round trip"] {
        let line = table.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("row {row}: {table}"));
        let ratio: f64 = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix('x')?.parse().ok())
            .unwrap_or_else(|| panic!("ratio in {line}"));
        assert!(ratio > 0.0 && ratio.is_finite(), "{line}");
    }
}

#[test]
fn operator_memory_commands_are_audited_and_expire() {
    let (_dir, ws) = installed(&[HELLO]);
    assert!(keel(&ws, &["call", "hello", "--input", r#"{"name":"Ada"}"#]).status.success());
    assert_eq!(stdout(&keel(&ws, &["memory", "get", "hello", "Ada"])).trim(), "1", "the agent's write");

    assert!(keel(&ws, &["memory", "put", "notes", "plan", "call Ada on Monday"]).status.success());
    assert_eq!(stdout(&keel(&ws, &["memory", "get", "notes", "plan"])).trim(), "call Ada on Monday");
    assert!(keel(&ws, &["memory", "put", "notes", "otp", "123456", "--ttl-ms", "1"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let expired = keel(&ws, &["memory", "get", "notes", "otp"]);
    assert_eq!(expired.status.code(), Some(1), "expired entries read as absent");

    let stats: serde_json::Value = serde_json::from_str(&stdout(&keel(&ws, &["memory", "stats", "--json"]))).unwrap();
    assert_eq!(stats["namespaces"]["notes"]["entries"], 2, "the expired entry is stored until reclaimed: {stats}");
    assert_eq!(stats["namespaces"]["notes"]["expired"], 1, "{stats}");
    assert_eq!(stats["namespaces"]["hello"]["entries"], 1, "{stats}");
    assert_eq!(stats["namespaces"]["hello"]["max_entries"], 100_000, "the default bound: {stats}");

    let reclaimed = keel(&ws, &["memory", "reclaim"]);
    assert!(stdout(&reclaimed).contains("deleted 1 expired key/value entries in `notes`"), "{}", stdout(&reclaimed));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&keel(&ws, &["memory", "stats", "--json"]))).unwrap();
    assert_eq!(
        (&stats["namespaces"]["notes"]["entries"], &stats["namespaces"]["notes"]["expired"]),
        (&1.into(), &0.into())
    );
    assert!(stdout(&keel(&ws, &["memory", "reclaim"])).contains("nothing to reclaim"));

    assert!(keel(&ws, &["memory", "forget", "notes", "plan"]).status.success());
    assert_eq!(keel(&ws, &["memory", "get", "notes", "plan"]).status.code(), Some(1));
    let audit = stdout(&keel(&ws, &["audit", "tail"]));
    assert!(audit.contains("operator") && audit.contains("memory.delete") && audit.contains("notes/plan"), "{audit}");
}

#[test]
fn operator_queries_records_and_recalls_notes() {
    let (_dir, ws) = installed(&[MEMORY_PLANE]);
    std::fs::write(
        ws.join("keel.toml"),
        format!("{}\n[memory.collections.leads]\nindexes = [\"value\"]\n", common::TEST_CONFIG),
    )
    .unwrap();
    let script = serde_json::json!({"ops": [
        {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Acme", "value": 900}},
        {"op": "put-record", "collection": "leads", "id": "tiny", "data": {"name": "Tiny", "value": 10}},
    ]});
    assert!(keel(&ws, &["call", "memory-plane", "--input", &script.to_string()]).status.success());
    let q = stdout(&keel(&ws, &["memory", "query", "leads", "--where", "value>=500"]));
    assert!(q.contains("acme v1") && !q.contains("tiny"), "{q}");
    let bad = keel(&ws, &["memory", "query", "leads", "--where", "value~5"]);
    assert!(stderr(&bad).contains("is not FIELD OP VALUE"), "{}", stderr(&bad));

    let out = keel(&ws, &["memory", "remember", "notes", "Acme prefers calls on Tuesdays", "--tag", "customer:acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recalled =
        stdout(&keel(&ws, &["memory", "recall", "notes", "when does acme like calls", "--tag", "customer:acme"]));
    assert!(recalled.contains("Tuesdays"), "{recalled}");
    let stats = stdout(&keel(&ws, &["memory", "stats"]));
    let row = |name: &str| stats.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(row("leads").split_whitespace().nth(1) == Some("2") && row("leads").contains("value"), "{stats}");
    assert!(row("notes").split_whitespace().nth(1) == Some("1") && row("notes").contains("exact"), "{stats}");
    let id = recalled.split_whitespace().nth(1).unwrap().to_owned();
    assert!(keel(&ws, &["memory", "forget", "notes", &id, "--note"]).status.success());
    let after = stdout(&keel(&ws, &["memory", "recall", "notes", "acme calls"]));
    assert!(after.contains("nothing recalled"), "{after}");
}

#[test]
fn operator_decides_approvals_and_flips_the_kill_switch() {
    let (_dir, ws) = installed(&[PROPOSER]);
    let policy = "[policy.approval]\nabove_by_kind = { \"payments.charge\" = 500 }\n";
    std::fs::write(ws.join("keel.toml"), format!("{}{policy}", common::TEST_CONFIG)).unwrap();
    {
        // What installing the payments connector registers.
        let w = keel_host::workspace::Workspace::open(&ws).unwrap();
        let spec = keel_host::kernel::registry::KindSpec {
            kind: "payments.charge".into(),
            payload_schema: serde_json::json!({"type": "object"}),
            compensation: None,
            idempotent: true,
        };
        let m = keel_host::kernel::registry::register("payments", vec![spec]);
        w.store().commit_blocking(keel_host::memory::committer::Batch { mutations: vec![m], audit: vec![] }).unwrap();
    }
    let charge = |amount: u32| {
        serde_json::json!({"proposals": [{"kind": "payments.charge", "payload": {"customer": "acme"},
            "amount": amount, "currency": "EUR", "rationale": "renewal"}]})
        .to_string()
    };
    let out = keel(&ws, &["call", "proposer", "--input", &charge(9000)]);
    assert!(stdout(&out).contains("approval #1"), "{}{}", stdout(&out), stderr(&out));
    keel(&ws, &["call", "proposer", "--input", &charge(7000)]);

    let list = stdout(&keel(&ws, &["approvals", "list"]));
    assert!(list.contains("#1  payments.charge") && list.contains("#2  payments.charge"), "{list}");
    assert!(list.contains("renewal") && list.contains("above the approval threshold of 500"), "{list}");

    let approved = keel(&ws, &["approve", "1"]);
    assert!(stdout(&approved).contains("approved #1"), "{}", stderr(&approved));
    let no_reason = keel(&ws, &["reject", "2", "--reason", " "]);
    assert!(!no_reason.status.success() && stderr(&no_reason).contains("--reason is empty"));
    assert!(keel(&ws, &["reject", "2", "--reason", "not this month"]).status.success());
    let twice = keel(&ws, &["approve", "2"]);
    assert!(stderr(&twice).contains("already decided (rejected)"), "{}", stderr(&twice));
    let missing = keel(&ws, &["approve", "99"]);
    assert!(stderr(&missing).contains("no approval #99: `keel approvals list`"), "{}", stderr(&missing));
    assert!(stdout(&keel(&ws, &["approvals", "list"])).contains("nothing waits for you"));

    // Approving executed it at once; with no payments connector installed
    // (only its kinds were registered above) that fails, saying why.
    assert!(stderr(&approved).contains("failed (connector `payments` is not installed"), "{}", stderr(&approved));
    let outbox = stdout(&keel(&ws, &["outbox"]));
    assert!(outbox.contains("failed") && outbox.contains("rejected") && outbox.contains("not this month"), "{outbox}");

    assert!(keel(&ws, &["stop", "--reason", "incident 7"]).status.success());
    let status = stdout(&keel(&ws, &["status"]));
    assert!(status.contains("kill switch: ON") && status.contains("incident 7"), "{status}");
    assert!(status.contains("1 failed") && status.contains("1 rejected"), "{status}");
    assert!(keel(&ws, &["resume"]).status.success());
    assert!(stdout(&keel(&ws, &["status"])).contains("kill switch: off"));
    let audit = stdout(&keel(&ws, &["audit", "tail", "-n", "20"]));
    for op in ["approvals.approve", "approvals.reject", "kernel.stop", "kernel.resume"] {
        assert!(audit.contains(op), "{op}: {audit}");
    }
}
