//! `keel serve` as an operator runs it: the real binary on a loopback port.
//! The API refuses requests without the token, with a foreign `Host` (DNS
//! rebinding) or a foreign `Origin` (cross-site); a webhook starts a run
//! once per idempotency key and the server drives it; an inbox file
//! dropped while it runs starts a run; SIGTERM stops it cleanly.

mod common;
mod peers;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::keel_serve::{Server, http, rotate_token};

const HOOKED: &str = r#"
[trigger]
kind = "webhook"
path = "leads"

[[steps]]
id = "take"
agent = "echo"
input = { lead = "$.trigger.name" }
"#;

const INBOX: &str = r#"
[trigger]
kind = "inbox"
folder = "inbox"
pattern = "*.txt"

[[steps]]
id = "read"
agent = "echo"
input = { text = "$.trigger.text" }
"#;

fn wait_for_run(addr: SocketAddr, auth: &[(&str, &str)], id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, run) = http(addr, "GET", &format!("/api/v1/runs/{id}"), auth, "");
        assert_eq!(status, 200, "{run}");
        if run["state"] == "succeeded" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_api_is_guarded_webhooks_and_inbox_files_start_runs_and_sigterm_stops_cleanly() {
    let (_dir, path) = common::workspace();
    std::fs::create_dir_all(path.join("workflows")).unwrap();
    std::fs::write(path.join("workflows/hooked.toml"), HOOKED).unwrap();
    std::fs::write(path.join("workflows/inbox.toml"), INBOX).unwrap();
    std::fs::create_dir_all(path.join("inbox")).unwrap();
    {
        let ws = Workspace::open(&path).unwrap();
        let rt = ws.runtime().unwrap();
        common::install(&ws, &rt, common::guests::ECHO);
    }
    let token = rotate_token(&path);
    assert_eq!(std::fs::read_to_string(path.join("serve.token")).unwrap(), token);

    let server = Server::start(&path, &[]);
    assert!(server.startup.contains("2 workflows") && server.startup.contains("serve.token"), "{}", server.startup);
    let host = server.host();
    let bearer = format!("Bearer {token}");
    let auth = [("host", host.as_str()), ("authorization", bearer.as_str())];

    let (status, body) = http(server.addr, "GET", "/api/v1/health", &[("host", &host)], "");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "health needs no token");
    let (status, body) = http(server.addr, "POST", "/api/v1/hooks/leads", &[("host", &host)], "{}");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("serve.token"), "{body}");
    let rebinding = [("host", "attacker.example:7878"), ("authorization", bearer.as_str())];
    assert_eq!(http(server.addr, "GET", "/api/v1/status", &rebinding, "").0, 403, "a foreign Host is refused");
    let cross_site = [("host", host.as_str()), ("authorization", bearer.as_str()), ("origin", "http://evil.example")];
    assert_eq!(http(server.addr, "POST", "/api/v1/hooks/leads", &cross_site, "{}").0, 403);
    let (status, _) = http(server.addr, "GET", "/api/v1/health", &[("host", "attacker.example")], "");
    assert_eq!(status, 403, "even health checks answer only to the server's own name");

    // A webhook starts one run per idempotency key; the server drives it.
    let keyed = [auth[0], auth[1], ("idempotency-key", "lead-42"), ("content-type", "application/json")];
    let (status, started) = http(server.addr, "POST", "/api/v1/hooks/leads", &keyed, r#"{"name":"Ada"}"#);
    assert_eq!(status, 202, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let (status, again) = http(server.addr, "POST", "/api/v1/hooks/leads", &keyed, r#"{"name":"Ada"}"#);
    assert_eq!((status, again["run"].as_str(), again["repeated"].as_bool()), (200, Some(id.as_str()), Some(true)));
    let run = wait_for_run(server.addr, &auth, &id);
    assert_eq!(run["trigger"], "webhook");
    assert_eq!(run["steps"]["take"]["output"], json!({"lead": "Ada"}));
    let (status, missing) = http(server.addr, "POST", "/api/v1/hooks/nobody", &auth, "{}");
    assert_eq!(status, 404, "{missing}");
    assert_eq!(http(server.addr, "POST", "/api/v1/hooks/leads", &auth, "not json").0, 400);

    // An inbox file dropped while the server runs starts a run.
    std::fs::write(path.join("inbox/hello.txt"), "Hello from the inbox").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let inbox_run = loop {
        let (_, runs) = http(server.addr, "GET", "/api/v1/runs", &auth, "");
        if let Some(run) = runs.as_array().unwrap().iter().find(|r| r["workflow"] == "inbox") {
            break run["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the inbox file started no run");
        std::thread::sleep(Duration::from_millis(200));
    };
    let run = wait_for_run(server.addr, &auth, &inbox_run);
    assert_eq!(run["steps"]["read"]["output"], json!({"text": "Hello from the inbox"}));

    // SIGTERM: a clean stop.
    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    server.child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    assert!(rest.contains("keel serve: stopped"), "{rest}");
    let verify = common::keel(&path, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", common::stdout(&verify));
}

#[tokio::test]
async fn a_changed_policy_takes_effect_and_a_broken_one_changes_nothing() {
    let (_dir, path) = common::workspace();
    let ws = Workspace::open(&path).unwrap();
    let runtime = ws.runtime().unwrap();
    let mut watch = keel_host::serve::reload::PolicyWatch::new(&path);
    assert!(!watch.check(&runtime).await, "nothing changed yet");

    let config = std::fs::read_to_string(path.join("keel.toml")).unwrap();
    let stricter = format!("{config}\n[policy.approval]\nkinds = [\"payments.charge\"]\n");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path.join("keel.toml"), &stricter).unwrap();
    assert!(watch.check(&runtime).await, "the new policy is applied");
    assert_eq!(runtime.kernel().policy().approval.kinds, ["payments.charge"]);
    let audit = ws.store().audit_tail(3).unwrap();
    assert!(audit.iter().any(|e| e.operation == "policy.reload" && e.actor == "operator"), "{audit:?}");

    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path.join("keel.toml"), format!("{stricter}\n[policy.budget]\ndaily = -5\n")).unwrap();
    assert!(!watch.check(&runtime).await, "a config that does not load changes nothing");
    assert_eq!(runtime.kernel().policy().approval.kinds, ["payments.charge"], "the running policy stays");
}
