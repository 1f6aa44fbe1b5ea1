//! Installing third-party plugins safely, through the real `keel` binary:
//! sha256 pins, publisher signatures, plugin indexes over HTTP on loopback
//! (with a 404, a wrong hash and a slow server), the capability review on
//! upgrade, kept versions and rollback.

mod common;
mod peers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::guests::{ECHO, HELLO, MEMORY_PLANE, PROPOSER};
use common::{keel, stderr, stdout};
use peers::plugin_index::{PluginMirror, Served};

fn sha256(bytes: &[u8]) -> String {
    keel_host::runtime::sha256_hex(bytes)
}

/// Runs keel and asserts success, returning stdout.
fn ok(ws: &Path, args: &[&str]) -> String {
    let out = keel(ws, args);
    assert!(out.status.success(), "keel {args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// Runs keel and asserts exit code 1 with one `keel: ` line, returning it.
fn fails(ws: &Path, args: &[&str]) -> String {
    let out = keel(ws, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "keel {args:?} should fail: {}{err}", stdout(&out));
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("keel: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_owned()
}

/// Every audit entry, one JSON object per line.
fn audit(ws: &Path) -> Vec<serde_json::Value> {
    ok(ws, &["audit", "export", "--jsonl"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Nothing installed and the audit log as long as it was.
fn assert_nothing_written(ws: &Path, audit_len: usize) {
    assert!(ok(ws, &["list"]).contains("no plugins installed"), "nothing installed");
    assert_eq!(audit(ws).len(), audit_len, "no audit entry was written");
}

/// A fresh publisher key in `dir`: (secret key file, public key).
fn publisher(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let public = ok(dir, &["keys", "generate", "--out", key.to_str().unwrap()]).trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    (key, public)
}

fn sign(dir: &Path, key: &Path, plugin: &Path) -> PathBuf {
    ok(dir, &["sign", "--key", key.to_str().unwrap(), plugin.to_str().unwrap()]);
    let sig = PathBuf::from(format!("{}.sig", plugin.display()));
    assert!(sig.exists());
    sig
}

/// `guest` with its manifest replaced by `manifest`, written to `dir/file`.
fn repacked(dir: &Path, guest: &str, file: &str, manifest: &str) -> PathBuf {
    let bytes = std::fs::read(guest).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, keel_host::plugin::package::pack(&bytes, manifest)).unwrap();
    path
}

fn copy(dir: &Path, guest: &str, file: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::copy(guest, &path).unwrap();
    path
}

#[test]
fn one_flipped_bit_fails_the_sha256_pin_and_writes_nothing() {
    let (dir, ws) = common::workspace();
    let good = std::fs::read(HELLO).unwrap();
    let pin = sha256(&good);
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x01;
    let tampered = dir.path().join("hello.wasm");
    std::fs::write(&tampered, &bad).unwrap();

    let err = fails(&ws, &["install", tampered.to_str().unwrap(), "--sha256", &pin, "--yes", "--allow-unsigned"]);
    assert!(err.contains("hello.wasm") && err.contains(&pin) && err.contains("do not install it"), "{err}");
    assert_nothing_written(&ws, 0);

    // The same over HTTP.
    let mirror = PluginMirror::start();
    mirror.put("/hello.wasm", Served::File(bad));
    let url = mirror.url("/hello.wasm");
    let err = fails(&ws, &["install", &url, "--sha256", &pin, "--yes", "--allow-unsigned"]);
    assert!(err.contains(&url) && err.contains("sha256") && err.contains(&pin), "{err}");
    assert_nothing_written(&ws, 0);

    // A URL must be pinned; the right pin installs.
    mirror.put("/hello.wasm", Served::File(good));
    let err = fails(&ws, &["install", &url, "--yes", "--allow-unsigned"]);
    assert!(err.contains("--sha256"), "{err}");
    ok(&ws, &["install", &url, "--sha256", &pin, "--yes", "--allow-unsigned"]);
    assert!(ok(&ws, &["inspect", "hello"]).contains(&format!("source:    {url}")));
}

#[test]
fn unsigned_and_untrusted_plugins_need_allow_unsigned_and_are_marked() {
    let (dir, ws) = common::workspace();
    let d = dir.path();
    let hello = copy(d, HELLO, "hello.wasm");
    let err = fails(&ws, &["install", hello.to_str().unwrap(), "--yes"]);
    assert!(err.contains("is unsigned") && err.contains("--allow-unsigned"), "{err}");
    assert_nothing_written(&ws, 0);

    // Signed, but by a key this workspace never trusted.
    let (stranger_key, stranger) = publisher(d, "stranger");
    sign(d, &stranger_key, &hello);
    let err = fails(&ws, &["install", hello.to_str().unwrap(), "--yes"]);
    assert!(err.contains(&stranger) && err.contains("does not trust") && err.contains("keel keys add"), "{err}");
    assert_nothing_written(&ws, 0);

    // Allowed explicitly: installed, and marked unsigned everywhere.
    let out = keel(&ws, &["install", hello.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning:"), "{}", stderr(&out));
    let list = ok(&ws, &["list"]);
    let row = list.lines().find(|l| l.starts_with("hello")).unwrap();
    assert!(row.contains("UNSIGNED"), "{list}");
    assert!(ok(&ws, &["inspect", "hello"]).contains("signature: UNSIGNED"));
    let json: serde_json::Value = serde_json::from_str(&ok(&ws, &["list", "--json"])).unwrap();
    assert!(json[0]["signed_by"].is_null(), "{json}");
    let entries = audit(&ws);
    let install = entries.iter().find(|e| e["operation"] == "plugin.install").unwrap();
    assert!(install["reason"].as_str().unwrap().contains("unsigned"), "{install}");

    // Once the operator trusts a publisher, its signed plugins install
    // without the flag and name it.
    let (acme_key, acme) = publisher(d, "acme");
    ok(&ws, &["keys", "add", "acme", &acme]);
    assert!(ok(&ws, &["keys", "list"]).contains(&acme));
    let echo = copy(d, ECHO, "echo.wasm");
    sign(d, &acme_key, &echo);
    ok(&ws, &["install", echo.to_str().unwrap(), "--yes"]);
    let list = ok(&ws, &["list"]);
    assert!(list.lines().any(|l| l.starts_with("echo") && l.contains("acme")), "{list}");
    assert!(ok(&ws, &["inspect", "echo"]).contains(&format!("signed by acme ({acme})")));
    let entries = audit(&ws);
    assert!(entries.iter().any(|e| e["operation"] == "keys.add"), "keys add is audited");
    let install = entries.iter().rev().find(|e| e["operation"] == "plugin.install").unwrap();
    assert!(install["reason"].as_str().unwrap().contains("signed by acme"), "{install}");

    // A key removed is no longer trusted.
    ok(&ws, &["keys", "remove", "acme"]);
    ok(&ws, &["remove", "echo"]);
    let err = fails(&ws, &["install", echo.to_str().unwrap(), "--yes"]);
    assert!(err.contains("does not trust"), "{err}");
}

#[test]
fn a_signature_over_other_bytes_is_refused_even_with_allow_unsigned() {
    let (dir, ws) = common::workspace();
    let d = dir.path();
    let (key, public) = publisher(d, "acme");
    ok(&ws, &["keys", "add", "acme", &public]);
    let echo = copy(d, ECHO, "echo.wasm");
    let echo_sig = sign(d, &key, &echo);
    let hello = copy(d, HELLO, "hello.wasm");

    // Echo's (valid) signature placed beside hello.
    std::fs::copy(&echo_sig, d.join("hello.wasm.sig")).unwrap();
    for extra in [&[][..], &["--allow-unsigned"][..]] {
        let mut args = vec!["install", hello.to_str().unwrap(), "--yes"];
        args.extend_from_slice(extra);
        let err = fails(&ws, &args);
        assert!(err.contains("is for other bytes") && err.contains(&sha256(&std::fs::read(HELLO).unwrap())), "{err}");
    }
    // The signature's sha256 edited to match hello: it no longer verifies.
    let mut forged: serde_json::Value = serde_json::from_slice(&std::fs::read(&echo_sig).unwrap()).unwrap();
    forged["sha256"] = sha256(&std::fs::read(HELLO).unwrap()).into();
    std::fs::write(d.join("hello.wasm.sig"), forged.to_string()).unwrap();
    let err = fails(&ws, &["install", hello.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    assert!(err.contains("does not verify") && err.contains("tampered"), "{err}");
    // A flipped bit in a signed file: the signature is for other bytes.
    let mut bytes = std::fs::read(&echo).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&echo, bytes).unwrap();
    let err = fails(&ws, &["install", echo.to_str().unwrap(), "--yes"]);
    assert!(err.contains("is for other bytes"), "{err}");
    assert_eq!(audit(&ws).len(), 1, "only the keys.add entry");
    assert!(ok(&ws, &["list"]).contains("no plugins installed"));
}

/// An index on loopback listing a good entry, one whose file is missing,
/// one with a wrong pin and one on a server too slow to answer.
#[test]
fn install_from_an_http_index_with_404_wrong_hash_and_timeout() {
    let (dir, ws) = common::workspace();
    let d = dir.path();
    let (key, public) = publisher(d, "acme");
    let hello = copy(d, HELLO, "hello.wasm");
    let hello_sig = sign(d, &key, &hello);
    let hello_bytes = std::fs::read(&hello).unwrap();
    let echo_bytes = std::fs::read(ECHO).unwrap();

    let mirror = PluginMirror::start();
    mirror.put("/p/hello-0.1.0.wasm", Served::File(hello_bytes.clone()));
    mirror.put("/p/hello-0.1.0.wasm.sig", Served::File(std::fs::read(&hello_sig).unwrap()));
    mirror.put("/p/echo.wasm", Served::File(echo_bytes.clone()));
    mirror.put("/p/slow.wasm", Served::Stall(Duration::from_secs(20), echo_bytes.clone()));
    let index = serde_json::json!({ "plugins": [
        { "name": "hello", "version": "0.1.0", "url": "hello-0.1.0.wasm", "sha256": sha256(&hello_bytes), "publisher_key": public },
        { "name": "missing", "version": "1.0.0", "url": "missing.wasm", "sha256": sha256(&echo_bytes) },
        { "name": "echo", "version": "0.1.0", "url": "echo.wasm", "sha256": sha256(b"other bytes") },
        { "name": "slow", "version": "0.1.0", "url": mirror.url("/p/slow.wasm"), "sha256": sha256(&echo_bytes) },
    ]});
    mirror.put("/p/index.json", Served::File(index.to_string().into_bytes()));
    let index_url = mirror.url("/p/index.json");
    let base = ["--yes", "--allow-unsigned", "--timeout-seconds", "2"];
    fn with<'a>(index: &'a str, target: &'a str, base: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["install", "--index", index, target];
        args.extend_from_slice(base);
        args
    }
    let install = |target: &'static str| with(&index_url, target, &base);

    let err = fails(&ws, &install("missing"));
    assert!(err.contains(&mirror.url("/p/missing.wasm")) && err.contains("404"), "{err}");
    assert!(err.contains("missing@1.0.0") && err.contains(&index_url), "names the entry and index: {err}");
    assert_nothing_written(&ws, 0);

    let err = fails(&ws, &install("echo"));
    assert!(err.contains(&mirror.url("/p/echo.wasm")) && err.contains(&format!("index {index_url}")), "{err}");
    assert!(err.contains("do not install it"), "{err}");
    assert_nothing_written(&ws, 0);

    let started = std::time::Instant::now();
    let err = fails(&ws, &install("slow"));
    assert!(started.elapsed() < Duration::from_secs(15), "gave up in time: {:?}", started.elapsed());
    assert!(err.contains(&mirror.url("/p/slow.wasm")) && err.contains("within 2 s"), "{err}");
    assert!(err.contains("--timeout-seconds"), "{err}");
    assert_nothing_written(&ws, 0);

    let err = fails(&ws, &install("nobody"));
    assert!(err.contains("no plugin `nobody`") && err.contains("hello"), "{err}");

    // The index names acme's key, which this workspace does not trust yet.
    let err = fails(&ws, &["install", "--index", &index_url, "hello", "--yes"]);
    assert!(err.contains("does not trust"), "{err}");
    assert_nothing_written(&ws, 0);
    ok(&ws, &["keys", "add", "acme", &public]);
    ok(&ws, &["install", "--index", &index_url, "hello@0.1.0", "--yes"]);
    let inspect = ok(&ws, &["inspect", "hello"]);
    assert!(
        inspect.contains("signed by acme") && inspect.contains(&format!("index {index_url} hello@0.1.0")),
        "{inspect}"
    );
    assert!(mirror.requests().contains(&"/p/hello-0.1.0.wasm.sig".to_owned()));
    let call = ok(&ws, &["call", "hello", "--input", r#"{"name":"Ada"}"#]);
    assert!(call.contains("Hello, Ada!"), "{call}");

    // An index's publisher key does not make another trusted key right.
    let (other_key, other) = publisher(d, "other");
    ok(&ws, &["keys", "add", "other", &other]);
    let echo = copy(d, ECHO, "echo.wasm");
    let echo_sig = sign(d, &other_key, &echo);
    mirror.put("/q/echo.wasm", Served::File(echo_bytes.clone()));
    mirror.put("/q/echo.wasm.sig", Served::File(std::fs::read(echo_sig).unwrap()));
    let index = serde_json::json!({ "plugins": [
        { "name": "echo", "version": "0.1.0", "url": "echo.wasm", "sha256": sha256(&echo_bytes), "publisher_key": public },
    ]});
    mirror.put("/q/index.json", Served::File(index.to_string().into_bytes()));
    let err = fails(&ws, &["install", "--index", &mirror.url("/q/index.json"), "echo", "--yes"]);
    assert!(err.contains("the index says the publisher's key is"), "{err}");
}

const PROPOSER_V1: &str = "name = 'proposer'\nversion = '0.1.0'\nworld = 'agent'\n\n[capabilities]\nactions = ['email.send']\nmemory = [{ namespace = 'proposer', access = 'read-write' }]\n";
const PROPOSER_V2: &str = "name = 'proposer'\nversion = '0.2.0'\nworld = 'agent'\n\n[capabilities]\nactions = ['email.send', 'payments.charge']\nmemory = [{ namespace = 'proposer', access = 'read-write' }]\n";
const PROPOSER_V3: &str = "name = 'proposer'\nversion = '0.3.0'\nworld = 'agent'\n\n[capabilities]\nactions = ['email.send', 'payments.charge']\n";

/// What the kernel said to a `payments.charge` proposal: `denied` while
/// it is not granted.
fn charge_verdict(ws: &Path) -> String {
    let input = r#"{"proposals":[{"kind":"payments.charge","payload":{"amount":100},"amount":100,"currency":"EUR"}]}"#;
    let out: serde_json::Value = serde_json::from_str(&ok(ws, &["call", "proposer", "--input", input])).unwrap();
    out[0]["error"].as_str().map_or_else(|| out[0].to_string(), str::to_owned)
}

#[test]
fn an_upgrade_that_adds_a_capability_waits_until_accepted_and_rollback_restores() {
    let (dir, ws) = common::workspace();
    let d = dir.path();
    let (key, public) = publisher(d, "acme");
    ok(&ws, &["keys", "add", "acme", &public]);
    let v1 = repacked(d, PROPOSER, "proposer-0.1.0.wasm", PROPOSER_V1);
    let v2 = repacked(d, PROPOSER, "proposer-0.2.0.wasm", PROPOSER_V2);
    let v3 = repacked(d, PROPOSER, "proposer-0.3.0.wasm", PROPOSER_V3);
    for v in [&v1, &v2, &v3] {
        sign(d, &key, v);
    }
    ok(&ws, &["install", v1.to_str().unwrap(), "--yes"]);
    assert_eq!(charge_verdict(&ws), "denied");

    // Without --accept-new (and no terminal): reviewed, kept, not applied.
    let out = keel(&ws, &["upgrade", "proposer", "--from", v2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("new:     actions: propose `payments.charge`"), "{}", stderr(&out));
    assert!(stdout(&out).contains("NOT applied") && stdout(&out).contains("--accept-new"), "{}", stdout(&out));
    assert_eq!(charge_verdict(&ws), "denied", "the old version keeps serving, without the new grant");
    let inspect = ok(&ws, &["inspect", "proposer"]);
    assert!(inspect.starts_with("proposer 0.1.0"), "{inspect}");
    assert!(inspect.contains("0.2.0 (waiting for review"), "{inspect}");
    assert!(ok(&ws, &["list"]).contains("0.2.0 waits for review"));
    let staged = audit(&ws).into_iter().find(|e| e["operation"] == "plugin.stage").unwrap();
    assert!(staged["reason"].as_str().unwrap().contains("new: actions: propose `payments.charge`"), "{staged}");

    // Accepted: the new version serves, with the new grant.
    let out = ok(&ws, &["upgrade", "proposer", "--accept-new"]);
    assert!(out.contains("upgraded proposer 0.1.0 -> 0.2.0"), "{out}");
    assert_ne!(charge_verdict(&ws), "denied", "payments.charge is granted now");
    assert!(ok(&ws, &["inspect", "proposer"]).contains("actions: propose `payments.charge`"));

    // An upgrade that only drops capabilities applies directly.
    let out = keel(&ws, &["upgrade", "proposer", "--from", v3.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("removed: memory: read and write namespace `proposer`"), "{}", stderr(&out));
    assert!(stdout(&out).contains("upgraded proposer 0.2.0 -> 0.3.0"), "{}", stdout(&out));

    // Rollback: 0.2.0 with its grants, then 0.1.0 with its own.
    ok(&ws, &["rollback", "proposer"]);
    assert!(ok(&ws, &["inspect", "proposer"]).starts_with("proposer 0.2.0"));
    ok(&ws, &["rollback", "proposer", "--to", "0.1.0"]);
    let inspect = ok(&ws, &["inspect", "proposer"]);
    assert!(inspect.starts_with("proposer 0.1.0"), "{inspect}");
    let granted = inspect.split("granted:").nth(1).unwrap();
    assert!(!granted.contains("payments.charge") && granted.contains("email.send"), "{inspect}");
    assert_eq!(charge_verdict(&ws), "denied");
    let ops: Vec<String> = audit(&ws).iter().map(|e| e["operation"].as_str().unwrap().to_owned()).collect();
    for op in ["plugin.install", "plugin.stage", "plugin.upgrade", "plugin.rollback"] {
        assert!(ops.iter().any(|o| o == op), "{op} audited: {ops:?}");
    }
    assert!(ok(&ws, &["audit", "verify"]).contains("entries"));

    // Installing a kept version number with other bytes is refused.
    let other = repacked(d, PROPOSER, "other.wasm", &PROPOSER_V1.replace("email.send", "calendar.create"));
    let err = fails(&ws, &["install", other.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    assert!(err.contains("already installed with other bytes"), "{err}");
}

#[test]
fn a_folder_installs_with_its_manifest_and_remove_purge_deletes_data() {
    let (dir, ws) = common::workspace();
    let folder = dir.path().join("greeter");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(HELLO, folder.join("plugin.wasm")).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        "name = 'greeter'\nversion = '1.0.0'\nworld = 'agent'\n[capabilities]\nmemory = [{ namespace = 'hello', access = 'read-write' }]\n",
    )
    .unwrap();
    let err = fails(&ws, &["install", folder.to_str().unwrap(), "--yes"]);
    assert!(err.contains("is unsigned"), "{err}");
    ok(&ws, &["install", folder.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    ok(&ws, &["call", "greeter", "--input", r#"{"name":"Ada"}"#]);
    assert!(ok(&ws, &["memory", "get", "hello", "Ada"]).contains('1'));

    // Plain remove keeps the data; --purge deletes it.
    ok(&ws, &["remove", "greeter"]);
    assert!(ok(&ws, &["memory", "get", "hello", "Ada"]).contains('1'));
    ok(&ws, &["install", folder.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    let out = ok(&ws, &["remove", "greeter", "--purge"]);
    assert!(out.contains("purged the 0 records and 0 notes it owned, and 1 key/value entries in [hello]"), "{out}");
    assert_eq!(keel(&ws, &["memory", "get", "hello", "Ada"]).status.code(), Some(1));
    let purge = audit(&ws).into_iter().rev().find(|e| e["operation"] == "plugin.remove").unwrap();
    assert!(purge["reason"].as_str().unwrap().contains("and 1 key/value entries"), "{purge}");

    // Another plugin granted the same namespace: the review says so.
    ok(&ws, &["install", HELLO, "--yes", "--allow-unsigned"]);
    let out = keel(&ws, &["install", folder.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let review = stderr(&out);
    assert!(
        review.contains("memory: read and write namespace `hello` (shared: also granted to `hello` (read and write))"),
        "{review}"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&ws, &["install", empty.to_str().unwrap(), "--yes"]);
    assert!(err.contains("without plugin.wasm"), "{err}");
}

const HELLO_V2: &str = "name = 'hello'\nversion = '0.2.0'\nworld = 'agent'\n\n[capabilities]\nmemory = [{ namespace = 'hello', access = 'read-write' }]\n";

/// Hot reload, as a process that serves calls sees it: upgrades applied
/// through the same store while calls run concurrently. No call fails;
/// calls prepared after the upgrade run the new version; a call that
/// holds the old version finishes on it; each call's audit entry names the
/// version that served it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrading_while_calls_run_loses_no_call() {
    use keel_host::plugin::installer::{self, Applied, Request};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (dir, path) = common::workspace();
    let ws = keel_host::workspace::Workspace::open(&path).unwrap();
    let runtime = Arc::new(ws.runtime().unwrap());
    common::install(&ws, &runtime, HELLO);
    let v2 = repacked(dir.path(), HELLO, "hello-0.2.0.wasm", HELLO_V2);
    let old = runtime.prepare("hello", &()).unwrap();
    assert_eq!(old.record.version, "0.1.0");

    let upgraded = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for i in 0..6 {
        let (runtime, upgraded, stop) = (runtime.clone(), upgraded.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let after_upgrade = upgraded.load(Ordering::SeqCst);
                let plugin = runtime.prepare("hello", &()).expect("prepare never fails during an upgrade");
                let input = format!(r#"{{"name":"caller-{i}-{n}"}}"#);
                let out = runtime.call_prepared(&plugin, input).await;
                assert!(out.is_ok(), "call {i}/{n} on {} failed: {:?}", plugin.record.version, out.err());
                seen.push((after_upgrade, plugin.record.version.clone(), format!("hello/caller-{i}-{n}")));
                n += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = Request {
        target: v2.to_str().unwrap().to_owned(),
        index: None,
        sha256: None,
        signature: None,
        manifest: None,
        allow_unsigned: true,
        timeout: Duration::from_secs(5),
    };
    let acquired = installer::acquire(&ws, &runtime, &request, &()).await.unwrap();
    let plan = installer::plan(&ws, &acquired).unwrap();
    let applied = installer::apply(&ws, &runtime, acquired, plan, false).unwrap();
    assert!(matches!(applied, Applied::Upgraded { .. }), "nothing new asked: applied directly");
    upgraded.store(true, Ordering::SeqCst);
    // The old version, held since before the upgrade, still finishes.
    runtime.call_prepared(&old, r#"{"name":"held"}"#.into()).await.expect("a call on the old version finishes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    let mut seen = Vec::new();
    for c in callers {
        seen.extend(c.await.unwrap());
    }
    assert!(seen.iter().any(|(_, v, _)| v == "0.1.0"), "calls ran before the upgrade");
    assert!(seen.iter().any(|(_, v, _)| v == "0.2.0"), "calls ran after the upgrade");
    for (after, version, _) in &seen {
        if *after {
            assert_eq!(version, "0.2.0", "a call prepared after the upgrade runs the new version");
        }
    }
    // Each call's own audit entry (its `memory.put` of its caller's key)
    // names the version that served it, the held call's too.
    let mut audited = std::collections::HashMap::new();
    ws.store()
        .audit_for_each(|e| {
            if e.actor == "hello" && e.operation == "memory.put" {
                audited.insert(e.target.clone(), e.version.clone());
            }
            Ok(())
        })
        .unwrap();
    seen.push((true, "0.1.0".to_owned(), "hello/held".to_owned()));
    for (_, version, target) in &seen {
        assert_eq!(audited.get(target), Some(&Some(version.clone())), "the audit entry of {target}");
    }
    assert_eq!(audited.len(), seen.len(), "one entry per call");
    assert!(ws.store().audit_verify().unwrap().broken.is_none());
    // Rolled back the same way, the next call runs 0.1.0 again.
    installer::rollback(&ws, &runtime, "hello", None).unwrap();
    assert_eq!(runtime.prepare("hello", &()).unwrap().record.version, "0.1.0");
}

/// `memory-plane`'s manifest under another name: the same grants.
const MEMORY_PLANE_MANIFEST: &str = include_str!("../../tests/components/memory-plane/plugin.toml");

#[test]
fn remove_purge_deletes_exactly_the_records_and_notes_the_plugin_owns() {
    let (dir, ws) = common::workspace();
    ok(&ws, &["install", MEMORY_PLANE, "--yes", "--allow-unsigned"]);
    let manifest = MEMORY_PLANE_MANIFEST.replace("name = \"memory-plane\"", "name = \"neighbour\"");
    let neighbour = repacked(dir.path(), MEMORY_PLANE, "neighbour.wasm", &manifest);
    ok(&ws, &["install", neighbour.to_str().unwrap(), "--yes", "--allow-unsigned"]);
    let ops = serde_json::json!({ "ops": [
        { "op": "put-record", "collection": "leads", "id": "acme", "data": { "name": "Acme" } },
        { "op": "put-record", "collection": "leads", "id": "globex", "data": { "name": "Globex" } },
        { "op": "remember", "namespace": "notes", "text": "Acme wants an invoice meeting" },
        { "op": "put", "namespace": "notes", "key": "k", "value": "v" },
    ]});
    ok(&ws, &["call", "memory-plane", "--input", &ops.to_string()]);
    let ops = serde_json::json!({ "ops": [
        { "op": "put-record", "collection": "leads", "id": "initech", "data": { "name": "Initech" } },
        { "op": "remember", "namespace": "notes", "text": "Initech wants an invoice meeting" },
    ]});
    ok(&ws, &["call", "neighbour", "--input", &ops.to_string()]);
    ok(&ws, &["memory", "remember", "notes", "Invoice meetings are on Fridays"]);
    assert!(ok(&ws, &["memory", "recall", "notes", "Acme invoice meeting"]).contains("Acme wants"));

    let out = ok(&ws, &["remove", "memory-plane", "--purge"]);
    // `notes` and `leads` are shared with `neighbour`: their key/value
    // entries stay, since entries carry no owner.
    assert!(out.contains("purged the 2 records and 1 notes it owned, and 0 key/value entries in []"), "{out}");
    let left = ok(&ws, &["memory", "query", "leads"]);
    assert!(!left.contains("acme") && !left.contains("globex") && left.contains("initech"), "{left}");
    let recalled = ok(&ws, &["memory", "recall", "notes", "Acme invoice meeting", "-k", "10"]);
    assert!(!recalled.contains("Acme wants"), "its vector is gone from recall: {recalled}");
    assert!(recalled.contains("Initech wants") && recalled.contains("on Fridays"), "{recalled}");
    assert!(ok(&ws, &["memory", "get", "notes", "k"]).contains('v'));
    let purge = audit(&ws).into_iter().rev().find(|e| e["operation"] == "plugin.remove").unwrap();
    assert!(purge["reason"].as_str().unwrap().contains("purged 2 records and 1 notes it owned"), "{purge}");
    assert!(ok(&ws, &["audit", "verify"]).contains("entries"));

    // Alone in its namespaces, a purge also takes their key/value entries.
    ok(&ws, &["call", "neighbour", "--input", r#"{"ops":[{"op":"put","namespace":"leads","key":"k","value":"v"}]}"#]);
    let out = ok(&ws, &["remove", "neighbour", "--purge"]);
    assert!(
        out.contains("purged the 1 records and 1 notes it owned, and 2 key/value entries in [leads, notes]"),
        "{out}"
    );
    assert!(ok(&ws, &["memory", "query", "leads"]).contains("no matching records"));
    let recalled = ok(&ws, &["memory", "recall", "notes", "invoice meeting", "-k", "10"]);
    assert!(!recalled.contains("Initech") && recalled.contains("on Fridays"), "the operator's note stays: {recalled}");
}

/// `keel serve` holds the database: changing plugins says what to do.
/// `agents/hello`'s manifest.
const HELLO_MANIFEST: &str = include_str!("../../agents/hello/plugin.toml");

/// A webhook workflow whose one step greets with `hello`.
const GREET: &str = "[trigger]\nkind = \"webhook\"\npath = \"greet\"\n\n[[steps]]\nid = \"hi\"\nagent = \"hello\"\ninput = { name = \"$.trigger.name\" }\n";

/// Starts a `greet` run over the API and waits for it; the version of
/// `hello` that ran its step.
fn greet(server: &peers::keel_serve::Server, token: &str) -> String {
    greet_as(server.addr, &server.host(), token, "Ada")
}

/// [`greet`] for `name`, from any thread.
fn greet_as(addr: std::net::SocketAddr, host: &str, token: &str, name: &str) -> String {
    let bearer = format!("Bearer {token}");
    let auth = [("host", host), ("authorization", bearer.as_str())];
    let body = serde_json::json!({ "name": name }).to_string();
    let (status, started) = peers::keel_serve::http(addr, "POST", "/api/v1/hooks/greet", &auth, &body);
    assert_eq!(status, 202, "{started}");
    let id = started["run"].as_str().unwrap();
    for _ in 0..400 {
        let (_, run) = peers::keel_serve::http(addr, "GET", &format!("/api/v1/runs/{id}"), &auth, "");
        if run["state"] == "succeeded" {
            assert_eq!(run["steps"]["hi"]["output"]["message"], format!("Hello, {name}!"));
            return run["steps"]["hi"]["version"].as_str().unwrap().to_owned();
        }
        assert!(run["state"] != "failed", "{run}");
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the greet run for {name} did not finish");
}

#[test]
fn install_upgrade_and_rollback_reach_a_running_serve_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    ok(dir.path(), &["init", ws.to_str().unwrap()]);
    std::fs::create_dir_all(ws.join("workflows")).unwrap();
    std::fs::write(ws.join("workflows/greet.toml"), GREET).unwrap();
    let token = std::fs::read_to_string(ws.join("serve.token")).unwrap().trim().to_owned();
    let hello2 = repacked(dir.path(), HELLO, "hello-0.2.0.wasm", &HELLO_MANIFEST.replace("0.1.0", "0.2.0"));
    let mut server = peers::keel_serve::Server::start(&ws, &[]);

    let out = ok(&ws, &["install", HELLO, "--yes", "--allow-unsigned"]);
    assert!(out.contains("installed hello 0.1.0 in the running keel serve"), "{out}");
    assert_eq!(greet(&server, &token), "0.1.0", "the server runs what was just installed");
    // Runs keep arriving over loopback while the upgrade is applied: none
    // fails, and each is audited under the version that served it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runners: Vec<_> = (0..3)
        .map(|i| {
            let (addr, host, token, stop) = (server.addr, server.host(), token.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut served = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let name = format!("runner-{i}-{}", served.len());
                    let version = greet_as(addr, &host, &token, &name);
                    served.push((format!("hello/{name}"), version));
                }
                served
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = ok(&ws, &["upgrade", "hello", "--from", hello2.to_str().unwrap(), "--allow-unsigned"]);
    assert!(out.contains("upgraded hello 0.1.0 -> 0.2.0 in the running keel serve"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let concurrent: Vec<(String, String)> = runners.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert!(concurrent.iter().any(|(_, v)| v == "0.1.0"), "runs before the upgrade: {concurrent:?}");
    assert!(concurrent.iter().any(|(_, v)| v == "0.2.0"), "runs after the upgrade: {concurrent:?}");
    assert_eq!(greet(&server, &token), "0.2.0");
    let out = ok(&ws, &["rollback", "hello"]);
    assert!(out.contains("back from 0.2.0 to 0.1.0"), "{out}");
    assert_eq!(greet(&server, &token), "0.1.0");
    let err = fails(&ws, &["remove", "hello"]);
    assert!(err.contains("stop it to remove a plugin"), "{err}");
    let err = fails(&ws, &["install", "/nonexistent/plugin.wasm", "--yes"]);
    assert!(err.contains("/nonexistent/plugin.wasm"), "the server's error reaches the CLI: {err}");

    assert!(server.terminate().success());
    let operations: Vec<serde_json::Value> = audit(&ws).into_iter().map(|e| e["operation"].clone()).collect();
    for op in ["plugin.install", "plugin.upgrade", "plugin.rollback"] {
        assert!(operations.contains(&op.into()), "{op} audited");
    }
    let tail = ok(&ws, &["audit", "tail", "-n", "10"]);
    // Each run's write is audited under the version that served it.
    let writes: Vec<serde_json::Value> =
        audit(&ws).into_iter().filter(|e| e["actor"] == "hello" && e["operation"] == "memory.put").collect();
    let versions_of = |target: &str| -> Vec<serde_json::Value> {
        writes.iter().filter(|e| e["target"] == target).map(|e| e["version"].clone()).collect()
    };
    assert_eq!(versions_of("hello/Ada"), ["0.1.0", "0.2.0", "0.1.0"], "the version of each run's memory.put");
    for (target, version) in &concurrent {
        assert_eq!(versions_of(target), [version.as_str()], "the audit entry of {target}");
    }
    assert!(tail.contains("hello@0.1.0"), "`keel audit tail` shows the version: {tail}");
    ok(&ws, &["remove", "hello"]);
}
