//! The HTTP API of the real `keel serve` binary, checked against its own
//! description (`/api/v1/openapi.json`): the document validates
//! (openapi-spec-validator), every route in it answers with a documented
//! status and a body of the documented shape, every mutating route is 401
//! without the token or with a wrong one, and a foreign `Host` or `Origin`
//! is refused. Approving over the API executes the action at the real
//! payments peer (edited when asked); rejecting needs a reason; the kill
//! switch holds actions back until it is lifted. Then load: 200 clients
//! poll the dashboard's reads while webhook runs go through, with p99
//! latency printed, no errors and no audit entry lost. Last, SIGTERM in
//! the middle of runs: the next start finishes every one, effects once.

mod common;
mod peers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use peers::keel_serve::{Server, http, rotate_token};

const API_KEY: &str = "sk_test_serve_api";

/// Charges above 500 wait for the operator.
const POLICY: &str =
    "[limits]\ncall_timeout_ms = 10000\n\n[policy.approval]\nabove_by_kind = { \"payments.charge\" = 500 }\n";

fn charge(amount: i64, customer: &str) -> Value {
    json!({"kind": "payments.charge", "amount": amount, "currency": "EUR",
        "payload": {"amount": amount, "currency": "EUR", "customer": customer}})
}

/// The documented statuses and response schemas of one operation.
struct Operation {
    method: String,
    path: String,
    spec: Value,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, spec) in item.as_object().unwrap() {
            out.push(Operation { method: method.to_uppercase(), path: path.clone(), spec: spec.clone() });
        }
    }
    out
}

/// Checks `body` against the schema documented for `status`, resolving
/// `$ref`s into the document's components.
fn check_body(doc: &Value, op: &Operation, status: u16, body: &Value) {
    let responses = &op.spec["responses"];
    let response = responses.get(status.to_string()).unwrap_or_else(|| {
        panic!("{} {} answered {status}, which its description does not list: {body}", op.method, op.path)
    });
    let response = match response.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["components"]["responses"][r.rsplit('/').next().unwrap()],
        None => response,
    };
    let Some(schema) = response.pointer("/content/application~1json/schema") else { return };
    let root = json!({"components": doc["components"], "allOf": [schema]});
    let validator = jsonschema::validator_for(&root).expect("the documented schema compiles");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(
        errors.is_empty(),
        "{} {} {status}: the body does not match its description: {errors:?}\n{body}",
        op.method,
        op.path
    );
}

/// What `keel approvals list --json` says of approval `id`.
fn approval_status(addr: SocketAddr, auth: &[(&str, &str)], id: u64) -> String {
    let (status, list) = http(addr, "GET", "/api/v1/approvals?status=all", auth, "");
    assert_eq!(status, 200, "{list}");
    let found = list.as_array().unwrap().iter().find(|a| a["approval"]["id"] == id);
    found.unwrap_or_else(|| panic!("no approval #{id}: {list}"))["approval"]["status"].as_str().unwrap().to_owned()
}

/// Proposes `proposals` with the `proposer` agent in a workspace wired to
/// the peers; the results say what the gate decided.
async fn workspace_with_proposals(proposals: Value) -> (peers::Connected, std::path::PathBuf, Vec<Value>) {
    let c = peers::connected_workspace(POLICY, API_KEY, |_| {}).await;
    let out = c.rt.call("proposer", json!({ "proposals": proposals }).to_string()).await.expect("the call runs");
    let results: Vec<Value> = serde_json::from_str(&out.output).unwrap();
    let path = c.dir.path().join("ws");
    (c, path, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_described_and_mutations_need_the_token() {
    let proposals = json!([charge(900, "cus_edit"), charge(700, "cus_reject"), charge(800, "cus_held")]);
    let (c, path, parked) = workspace_with_proposals(proposals).await;
    assert!(parked.iter().all(|r| r["error"] == "pending-approval"), "{parked:?}");
    let peers::Connected { dir: _dir, ws, rt, smtp: _smtp, payments } = c;
    drop((rt, ws));
    let token = rotate_token(&path);
    let server = Server::start(&path, &[]);
    let host = server.host();
    let bearer = format!("Bearer {token}");
    let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];

    // A sign-in link for the dashboard, while the server holds the database.
    let link = common::keel(&path, &["token", "link"]);
    assert!(link.status.success(), "{}", common::stderr(&link));
    assert_eq!(common::stdout(&link).trim(), format!("http://{host}/#token={token}"));

    // The description is public, validates, and lists every route.
    let (status, doc) = http(server.addr, "GET", "/api/v1/openapi.json", &[("host", &host)], "");
    assert_eq!(status, 200);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    peers::require_python_module("openapi_spec_validator", "openapi-spec-validator");
    let checked =
        std::process::Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(file.path()).output().unwrap();
    assert!(
        checked.status.success(),
        "the OpenAPI document does not validate:\n{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let ops = operations(&doc);
    assert!(ops.len() >= 21, "{} operations described", ops.len());

    // Every mutating route: 401 without a token or with a wrong one, 403
    // from a foreign origin, and nothing changes.
    let wrong = [("host", host.as_str()), ("authorization", "Bearer keel_not_the_token")];
    let foreign = [auth[0], auth[1], ("origin", "http://evil.example")];
    for op in ops.iter().filter(|op| op.method != "GET") {
        let route = op.path.replace("{id}", "1").replace("{path}", "leads").replace("{name}", "proposer");
        for (headers, expected) in [(&[auth[0]][..], 401), (&wrong[..], 401), (&foreign[..], 403)] {
            let (status, body) = http(server.addr, &op.method, &route, headers, r#"{"engaged": true, "reason": "x"}"#);
            assert_eq!(status, expected, "{} {route} with {headers:?}: {body}", op.method);
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        }
    }
    assert_eq!(approval_status(server.addr, &auth, 1), "pending", "refused requests changed nothing");
    let (_, switch) = http(server.addr, "GET", "/api/v1/kill-switch", &auth, "");
    assert_eq!(switch["engaged"], false, "{switch}");
    for headers in [&[auth[0]][..], &wrong[..]] {
        let reads = ops.iter().filter(|op| op.method == "GET" && op.spec.get("security") != Some(&json!([])));
        for op in reads {
            let route = op.path.replace("{id}", "1");
            assert_eq!(http(server.addr, "GET", &route, headers, "").0, 401, "GET {route} without the token");
        }
    }
    let rebinding = [("host", "rebind.example:80"), auth[1]];
    assert_eq!(http(server.addr, "GET", "/api/v1/approvals", &rebinding, "").0, 403);

    // Approve #1 with an edited payload: the peer charges the edit.
    let edit = json!({"payload": {"amount": 900, "currency": "EUR", "customer": "cus_edited"}});
    let (status, approved) = http(server.addr, "POST", "/api/v1/approvals/1/approve", &auth, &edit.to_string());
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["intent"]["state"], "executed", "{approved}");
    assert_eq!(approved["executed"][0]["state"], "executed", "{approved}");
    let charges = payments.charges();
    assert_eq!((charges.len(), &charges[0]["amount"], &charges[0]["customer"]), (1, &json!(900), &json!("cus_edited")));
    let (status, again) = http(server.addr, "POST", "/api/v1/approvals/1/approve", &auth, "");
    assert_eq!(status, 409, "deciding twice: {again}");
    let bad_edit = json!({"payload": {"amount": "lots"}});
    let (status, refused) = http(server.addr, "POST", "/api/v1/approvals/2/approve", &auth, &bad_edit.to_string());
    assert_eq!(status, 422, "an edit that breaks the schema: {refused}");
    assert_eq!(http(server.addr, "POST", "/api/v1/approvals/99/approve", &auth, "").0, 404);

    // Reject #2: a reason is required.
    assert_eq!(http(server.addr, "POST", "/api/v1/approvals/2/reject", &auth, "{}").0, 400);
    let (status, rejected) =
        http(server.addr, "POST", "/api/v1/approvals/2/reject", &auth, r#"{"reason": "not this customer"}"#);
    assert_eq!((status, rejected["approval"]["status"].as_str()), (200, Some("rejected")), "{rejected}");

    // The kill switch holds #3 back after approval, until it is lifted.
    let (status, on) =
        http(server.addr, "POST", "/api/v1/kill-switch", &auth, r#"{"engaged": true, "reason": "audit"}"#);
    assert_eq!((status, &on["engaged"]), (200, &json!(true)), "{on}");
    let (_, held) = http(server.addr, "POST", "/api/v1/approvals/3/approve", &auth, "");
    assert_eq!(held["intent"]["state"], "ready", "{held}");
    assert_eq!(payments.charges().len(), 1, "nothing runs while the switch is on");
    let (status, off) = http(server.addr, "POST", "/api/v1/kill-switch", &auth, r#"{"engaged": false}"#);
    assert_eq!((status, &off["engaged"]), (200, &json!(false)), "{off}");
    assert_eq!(payments.charges().len(), 2, "lifting the switch executed the approved charge");

    // Every documented route answers with a documented status and shape.
    let mut answered = BTreeMap::new();
    for op in &ops {
        let (route, body) = match (op.method.as_str(), op.path.as_str()) {
            ("POST", "/api/v1/approvals/{id}/approve") => ("/api/v1/approvals/1/approve".to_owned(), String::new()),
            ("POST", "/api/v1/approvals/{id}/reject") => {
                ("/api/v1/approvals/3/reject".to_owned(), r#"{"reason": "late"}"#.to_owned())
            }
            ("POST", "/api/v1/kill-switch") => (op.path.clone(), r#"{"engaged": false}"#.to_owned()),
            ("POST", "/api/v1/hooks/{path}") => ("/api/v1/hooks/nobody".to_owned(), "{}".to_owned()),
            ("POST", "/api/v1/plugins") => (op.path.clone(), r#"{"target": "/nowhere/plugin.wasm"}"#.to_owned()),
            ("POST", p) if p.contains("{name}") => (p.replace("{name}", "nobody"), "{}".to_owned()),
            (_, p) => (p.replace("{id}", "no-such-run"), String::new()),
        };
        let (status, got) = http(server.addr, &op.method, &route, &auth, &body);
        if route == "/metrics" {
            assert_eq!(status, 200, "GET /metrics");
        } else {
            check_body(&doc, op, status, &got);
        }
        answered.insert(format!("{} {route}", op.method), status);
    }
    println!("every described route answered: {answered:?}");
    assert!(answered.iter().filter(|(r, _)| r.starts_with("GET")).all(|(r, s)| *s == 200 || r.contains("no-such-run")));

    // Reads answer what happened.
    let (_, audit) = http(server.addr, "GET", "/api/v1/audit?operation=approvals.&limit=10", &auth, "");
    let ops_seen: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(ops_seen, ["approvals.approve", "approvals.reject", "approvals.approve"], "{audit}");
    let (_, page) = http(server.addr, "GET", "/api/v1/audit?limit=2", &auth, "");
    let before = page["next_before"].as_u64().unwrap();
    let (_, next) = http(server.addr, "GET", &format!("/api/v1/audit?limit=2&before={before}"), &auth, "");
    assert_eq!(next["entries"][0]["seq"].as_u64(), Some(before - 1), "pages follow on");
    let (_, verified) = http(server.addr, "GET", "/api/v1/audit/verify", &auth, "");
    assert_eq!(verified["intact"], true, "{verified}");
    let (_, decided) = http(server.addr, "GET", "/api/v1/intents", &auth, "");
    let states: Vec<&str> = decided.as_array().unwrap().iter().map(|i| i["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "executed").count(), 2, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "rejected").count(), 1, "{states:?}");
    assert_eq!(http(server.addr, "GET", "/api/v1/intents?state=bogus", &auth, "").0, 400);
    assert_eq!(http(server.addr, "GET", "/api/v1/audit?limit=100000", &auth, "").0, 400);
    let (_, plugins) = http(server.addr, "GET", "/api/v1/plugins", &auth, "");
    let names: Vec<&str> = plugins.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"proposer") && names.contains(&"payments"), "{names:?}");
    let (_, costs) = http(server.addr, "GET", "/api/v1/costs?days=3", &auth, "");
    assert_eq!((costs["currency"].as_str(), costs["useful_actions"].as_u64()), (Some("EUR"), Some(2)), "{costs}");

    // Not a workspace: said so, nothing written.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = common::keel(elsewhere.path(), &["token", "rotate"]);
    assert!(
        !refused.status.success() && common::stderr(&refused).contains("keel init"),
        "{}",
        common::stderr(&refused)
    );
    assert!(!elsewhere.path().join("serve.token").exists());

    // Stopped: no link, and a hint to start the server.
    let mut server = server;
    assert!(server.terminate().success());
    let link = common::keel(&path, &["token", "link"]);
    assert!(!link.status.success() && common::stderr(&link).contains("start it first"), "{}", common::stderr(&link));
}

/// Charges each run's customer (small: no approval), then echoes.
const CHECKOUT: &str = r#"
[trigger]
kind = "webhook"
path = "checkout"

[[steps]]
id = "charge"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 100, currency = "EUR", payload = { amount = 100, currency = "EUR", customer = "$.trigger.customer" } }] }

[[steps]]
id = "note"
agent = "echo"
input = { customer = "$.trigger.customer", charged = "$.steps.charge.output" }
"#;

/// A closed workspace serving the `checkout` webhook, with its peers.
struct Checkout {
    _dir: tempfile::TempDir,
    _smtp: peers::smtp::SmtpPeer,
    payments: peers::payments::PaymentsPeer,
    path: std::path::PathBuf,
    token: String,
}

async fn checkout_workspace() -> Checkout {
    let c = peers::connected_workspace(POLICY, API_KEY, |path| {
        std::fs::create_dir_all(path.join("workflows")).unwrap();
        std::fs::write(path.join("workflows/checkout.toml"), CHECKOUT).unwrap();
    })
    .await;
    common::install(&c.ws, &c.rt, common::guests::ECHO);
    let peers::Connected { dir, ws, rt, smtp, payments } = c;
    drop((rt, ws));
    let path = dir.path().join("ws");
    let token = rotate_token(&path);
    Checkout { _dir: dir, _smtp: smtp, payments, path, token }
}

fn start_checkout(addr: SocketAddr, auth: &[(&str, &str)], customer: &str) -> String {
    let headers = [auth[0], auth[1], ("idempotency-key", customer)];
    let (status, started) =
        http(addr, "POST", "/api/v1/hooks/checkout", &headers, &json!({"customer": customer}).to_string());
    assert!(status == 202 || status == 200, "{status} {started}");
    started["run"].as_str().unwrap().to_owned()
}

/// Waits until every run in `ids` has finished; returns their states.
fn wait_finished(addr: SocketAddr, auth: &[(&str, &str)], ids: &[String], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let states: Vec<String> = ids
            .iter()
            .map(|id| {
                http(addr, "GET", &format!("/api/v1/runs/{id}"), auth, "").1["state"].as_str().unwrap_or("?").to_owned()
            })
            .collect();
        if states.iter().all(|s| ["succeeded", "failed", "cancelled", "compensated"].contains(&s.as_str())) {
            return states;
        }
        assert!(Instant::now() < deadline, "runs not finished within {within:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Audit entries of `operation`, by target, read with the CLI.
fn audit_count(path: &Path, operation: &str) -> usize {
    let out = common::keel(path, &["audit", "export", "--jsonl"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    common::stdout(&out).lines().filter(|l| serde_json::from_str::<Value>(l).unwrap()["operation"] == operation).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_poll_while_runs_go_through_and_nothing_is_lost() {
    const CLIENTS: usize = 200;
    const RUNS: usize = 30;
    let Checkout { path, token, payments, .. } = &checkout_workspace().await;
    let server = Server::start(path, &[]);
    let (addr, host, bearer) = (server.addr, server.host(), format!("Bearer {token}"));

    let stop = Arc::new(AtomicBool::new(false));
    let reads = [
        "/api/v1/status",
        "/api/v1/approvals",
        "/api/v1/intents?limit=20",
        "/api/v1/audit?limit=20",
        "/api/v1/costs",
        "/api/v1/runs",
    ];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, host, bearer) = (stop.clone(), host.clone(), bearer.clone());
            std::thread::spawn(move || {
                let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) || latencies.is_empty() {
                    let route = reads[n % reads.len()];
                    n += 1;
                    let started = Instant::now();
                    let (status, body) = peers::http::request(addr, "GET", route, &auth, b"");
                    latencies.push(started.elapsed());
                    if status != 200 {
                        errors.push(format!("GET {route}: {status} {body}"));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (latencies, errors)
            })
        })
        .collect();

    let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];
    let ids: Vec<String> = (0..RUNS).map(|i| start_checkout(addr, &auth, &format!("cus_{i}"))).collect();
    let states = wait_finished(addr, &auth, &ids, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for client in clients {
        let (l, e) = client.join().unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{CLIENTS} clients, {} requests while {RUNS} runs went through: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    assert!(errors.is_empty(), "{} failed requests, first: {:?}", errors.len(), errors.first());
    assert!(states.iter().all(|s| s == "succeeded"), "{states:?}");
    assert_eq!(payments.charges().len(), RUNS, "one charge per run");

    let mut server = server;
    assert!(server.terminate().success());
    assert_eq!(audit_count(path, "workflow.finish"), RUNS, "one finish entry per run, none lost");
    assert_eq!(audit_count(path, "actions.execute"), RUNS, "one execution entry per charge");
    let verify = common::keel(path, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", common::stdout(&verify));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_runs_then_every_run_finishes_at_the_next_start() {
    const RUNS: usize = 24;
    let Checkout { path, token, payments, .. } = &checkout_workspace().await;
    let mut server = Server::start(path, &["--grace-seconds", "0"]);
    let (host, bearer) = (server.host(), format!("Bearer {token}"));
    let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];
    // Started all at once, so that many are in flight at the signal however
    // fast each run is.
    let addr = server.addr;
    let ids: Vec<String> = std::thread::scope(|s| {
        let starts: Vec<_> =
            (0..RUNS).map(|i| s.spawn(move || start_checkout(addr, &auth, &format!("cus_{i}")))).collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(server.terminate().success(), "a clean stop even with runs in flight");
    drop(server);
    let unfinished = {
        let out = common::keel(path, &["runs", "list", "--json"]);
        let runs: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
        runs.as_array().unwrap().iter().filter(|r| r["state"] != "succeeded").count()
    };
    println!("{unfinished} of {RUNS} runs were unfinished at SIGTERM");
    // The last runs were started just before the signal and had no grace.
    assert!(unfinished > 0, "every run finished before SIGTERM: nothing was left to resume");

    let server = Server::start(path, &[]);
    let host = server.host();
    let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];
    let states = wait_finished(server.addr, &auth, &ids, Duration::from_secs(120));
    assert!(states.iter().all(|s| s == "succeeded"), "{states:?}");
    let mut charged: Vec<String> =
        payments.charges().iter().map(|c| c["customer"].as_str().unwrap().to_owned()).collect();
    charged.sort();
    let mut expected: Vec<String> = (0..RUNS).map(|i| format!("cus_{i}")).collect();
    expected.sort();
    assert_eq!(charged, expected, "every customer charged exactly once");
    drop(server);
    assert_eq!(audit_count(path, "workflow.finish"), RUNS);
    let verify = common::keel(path, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", common::stdout(&verify));
}
