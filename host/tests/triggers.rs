//! Workflow triggers fired by ticks, against real files and records in a
//! throwaway workspace, with the `echo` agent as the only step (its output
//! is the run's input): inbox files (one run per name and content, never
//! again, non-matching names ignored), schedules (nothing at first sight,
//! one run per due time, missed fires coalesced), records (nothing for what
//! was there, one run per create or update), paused workflows skipped, the
//! concurrency cap, SIGKILL while firing (each file still starts exactly
//! one run), the loop, and `keel triggers` itself.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_host::memory::audit::AuditEntry;
use keel_host::memory::committer::{Batch, Mutation};
use keel_host::memory::records::RecordWrite;
use keel_host::runtime::Runtime;
use keel_host::workflow::runs::{Run, RunState};
use keel_host::workflow::triggers::{self, LoopEvent, TickReport};
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ws: Workspace,
    rt: Runtime,
}

/// A workspace with `echo` installed and `workflows` written.
fn host(workflows: &[(&str, &str)]) -> Host {
    let (dir, root) = common::workspace();
    write_workflows(&root, workflows);
    let ws = Workspace::open(&root).unwrap();
    let rt = ws.runtime().unwrap();
    common::install(&ws, &rt, common::guests::ECHO);
    Host { _dir: dir, root, ws, rt }
}

fn write_workflows(root: &Path, workflows: &[(&str, &str)]) {
    let dir = root.join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in workflows {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
}

async fn tick_at(h: &Host, now_ms: u64) -> TickReport {
    let defs = h.ws.workflows().unwrap();
    triggers::tick(&h.rt, &h.root, &defs, now_ms).await.unwrap()
}

async fn tick(h: &Host) -> TickReport {
    tick_at(h, keel_host::memory::now_ms()).await
}

/// Drives every run `report` fired; each must succeed.
async fn drive(h: &Host, report: &TickReport) -> Vec<Run> {
    let mut runs = Vec::new();
    for fired in &report.fired {
        let run = h.rt.drive_run(&fired.run_id).await.unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        runs.push(run);
    }
    runs
}

fn all_runs(h: &Host) -> Vec<Run> {
    h.ws.store().recent_runs(usize::MAX).unwrap()
}

const LEADS: &str = r#"
[trigger]
kind = "inbox"
folder = "inbox/leads"
pattern = "*.txt"

[[steps]]
id = "read"
agent = "echo"
"#;

fn sha(text: &str) -> String {
    keel_host::runtime::sha256_hex(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_inbox_file_starts_one_run_per_content() {
    let h = host(&[("leads", LEADS)]);
    let inbox = h.root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a.txt"), "alpha").unwrap();
    std::fs::write(inbox.join("b.txt"), "bravo").unwrap();
    std::fs::write(inbox.join("notes.csv"), "not for this workflow").unwrap();
    std::fs::write(inbox.join(".b.txt.swp"), "an editor's").unwrap();
    std::fs::create_dir_all(inbox.join("sub.txt")).unwrap();

    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 2, "{report:?}");
    assert!(report.fired.iter().all(|f| f.kind == "inbox" && f.workflow == "leads" && !f.recovered));
    let runs = drive(&h, &report).await;
    let mut outputs: Vec<Value> = runs.iter().map(|r| r.output().unwrap().clone()).collect();
    outputs.sort_by_key(|o| o["file"].as_str().unwrap().to_owned());
    assert_eq!(
        outputs,
        [
            json!({"file": "a.txt", "path": "inbox/leads/a.txt", "size": 5, "text": "alpha", "sha256": sha("alpha")}),
            json!({"file": "b.txt", "path": "inbox/leads/b.txt", "size": 5, "text": "bravo", "sha256": sha("bravo")}),
        ]
    );
    assert!(runs.iter().all(|r| r.trigger == "inbox"));

    let again = tick(&h).await;
    assert!(again.fired.is_empty(), "processed files never start a run again: {again:?}");

    std::fs::write(inbox.join("a.txt"), "alpha, second edition").unwrap();
    let changed = tick(&h).await;
    assert_eq!(changed.fired.len(), 1, "{changed:?}");
    let run = &drive(&h, &changed).await[0];
    assert_eq!(run.output().unwrap()["text"], "alpha, second edition");
    assert_eq!(run.output().unwrap()["sha256"], sha("alpha, second edition"));

    assert!(tick(&h).await.fired.is_empty());
    assert_eq!(all_runs(&h).len(), 3);
    for name in ["a.txt", "b.txt", "notes.csv", ".b.txt.swp"] {
        assert!(inbox.join(name).exists(), "user files are never moved or deleted: {name}");
    }
    let audit = h.ws.store().audit_tail(100).unwrap();
    assert_eq!(audit.iter().filter(|e| e.operation == "trigger.fire").count(), 3);
    assert_eq!(audit.iter().filter(|e| e.operation == "workflow.start").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_and_binary_files_come_without_text_and_a_missing_folder_is_a_note() {
    let other = LEADS.replace("inbox/leads", "inbox/missing");
    let h = host(&[("leads", LEADS), ("other", &other)]);
    let inbox = h.root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();
    let big = "x".repeat(triggers::MAX_INBOX_TEXT_BYTES as usize + 1);
    std::fs::write(inbox.join("big.txt"), &big).unwrap();
    std::fs::write(inbox.join("bin.txt"), [0xff, 0x00, 0xfe]).unwrap();

    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 2, "{report:?}");
    let notes: Vec<&str> = report.notes.iter().filter(|n| n.workflow == "other").map(|n| n.message.as_str()).collect();
    assert_eq!(notes.len(), 1, "{report:?}");
    assert!(notes[0].contains("inbox/missing does not exist"), "{notes:?}");
    assert!(!h.root.join("inbox/missing").exists(), "nothing is created");

    let runs = drive(&h, &report).await;
    let by_file: BTreeMap<String, Value> =
        runs.iter().map(|r| (r.input["file"].as_str().unwrap().to_owned(), r.input.clone())).collect();
    assert_eq!(by_file["big.txt"]["text"], Value::Null);
    assert_eq!(by_file["big.txt"]["size"], big.len());
    assert_eq!(by_file["big.txt"]["sha256"], sha(&big));
    assert!(by_file["big.txt"]["note"].as_str().unwrap().contains("larger than"));
    assert_eq!(by_file["bin.txt"]["text"], Value::Null);
    assert!(by_file["bin.txt"]["note"].as_str().unwrap().contains("not UTF-8"));
}

const HOURLY: &str = r#"
[trigger]
kind = "schedule"
cron = "0 * * * *"
input = { report = "hourly" }

[[steps]]
id = "report"
agent = "echo"
"#;

/// 2026-01-01T00:00:00Z.
const JAN_1: u64 = 1_767_225_600_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_due_time_and_coalesces_missed_fires() {
    let h = host(&[("hourly", HOURLY)]);
    assert!(tick_at(&h, JAN_1 + 30 * MINUTE).await.fired.is_empty(), "first sight does not fire the past");
    assert!(tick_at(&h, JAN_1 + 50 * MINUTE).await.fired.is_empty());

    let report = tick_at(&h, JAN_1 + HOUR + 30_000).await;
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert_eq!(report.fired[0].detail, "scheduled at 2026-01-01T01:00:00Z");
    let run = &drive(&h, &report).await[0];
    assert_eq!(run.trigger, "schedule");
    assert_eq!(run.output().unwrap(), &json!({"report": "hourly", "scheduled_at_ms": JAN_1 + HOUR}));
    assert!(tick_at(&h, JAN_1 + HOUR + 10 * MINUTE).await.fired.is_empty());

    // Down from 01:10 to 04:05: 02:00, 03:00 and 04:00 were missed.
    let report = tick_at(&h, JAN_1 + 4 * HOUR + 5 * MINUTE).await;
    assert_eq!(report.fired.len(), 1, "missed fires are coalesced into one run: {report:?}");
    assert!(report.fired[0].detail.contains("3 missed fires coalesced into one run"), "{report:?}");
    let run = &drive(&h, &report).await[0];
    assert_eq!(run.input["scheduled_at_ms"], JAN_1 + 4 * HOUR);
    assert!(tick_at(&h, JAN_1 + 4 * HOUR + 6 * MINUTE).await.fired.is_empty());
    assert_eq!(all_runs(&h).len(), 2);

    let statuses = triggers::statuses(h.ws.store(), &h.ws.workflows().unwrap(), JAN_1 + 4 * HOUR + 6 * MINUTE).unwrap();
    let json = serde_json::to_value(&statuses).unwrap();
    assert_eq!(json[0]["progress"]["next_fire_ms"], JAN_1 + 5 * HOUR, "{json}");
}

const CRM: &str = r#"
[trigger]
kind = "record"
collection = "leads"

[[steps]]
id = "react"
agent = "echo"
"#;

/// Writes records as the operator, the way `keel memory` commits.
async fn write_records(h: &Host, writes: Vec<RecordWrite>) {
    let collections = h.rt.plane().collections.clone();
    let audit = writes
        .iter()
        .map(|w| AuditEntry::allowed("operator", "memory.record", format!("{}/{}", w.collection(), w.id())))
        .collect();
    let batch = Batch { mutations: vec![Mutation::Records { collections, writes, writer: None }], audit };
    h.ws.store().commit(batch).await.unwrap();
}

fn put(id: &str, data: Value) -> RecordWrite {
    RecordWrite::Put { collection: "leads".into(), id: id.into(), data, expected_version: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_and_updated_records_start_runs_after_the_first_look() {
    let h = host(&[("crm", CRM)]);
    write_records(&h, vec![put("ada", json!({"name": "Ada", "value": 500}))]).await;
    assert!(tick(&h).await.fired.is_empty(), "records already there when the trigger appears do not fire");
    assert!(tick(&h).await.fired.is_empty());

    write_records(&h, vec![put("bob", json!({"name": "Bob", "value": 20}))]).await;
    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert_eq!(report.fired[0].detail, "record leads/bob version 1");
    let run = &drive(&h, &report).await[0];
    assert_eq!(
        run.output().unwrap(),
        &json!({"collection": "leads", "id": "bob", "version": 1, "data": {"name": "Bob", "value": 20}})
    );
    assert!(tick(&h).await.fired.is_empty(), "an unchanged record starts nothing");

    write_records(&h, vec![put("ada", json!({"name": "Ada", "value": 900}))]).await;
    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 1, "{report:?}");
    let run = &drive(&h, &report).await[0];
    assert_eq!(run.input["version"], 2);
    assert_eq!(run.input["data"]["value"], 900);
    assert!(tick(&h).await.fired.is_empty());

    // Deleted and created again: version 1 once more, still a new record.
    let delete = RecordWrite::Delete { collection: "leads".into(), id: "bob".into(), expected_version: None };
    write_records(&h, vec![delete]).await;
    assert!(tick(&h).await.fired.is_empty(), "a delete starts nothing");
    tokio::time::sleep(Duration::from_millis(5)).await;
    write_records(&h, vec![put("bob", json!({"name": "Bob", "value": 21}))]).await;
    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert_eq!(drive(&h, &report).await[0].input["data"]["value"], 21);
    assert_eq!(all_runs(&h).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workflow_is_skipped_until_resumed() {
    let h = host(&[("leads", LEADS)]);
    let inbox = h.root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();
    h.rt.pause_workflow("leads", "operator", "too costly").await.unwrap();
    std::fs::write(inbox.join("a.txt"), "alpha").unwrap();

    let report = tick(&h).await;
    assert!(report.fired.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].workflow, "leads");
    assert!(report.skipped[0].reason.contains("too costly"), "{report:?}");
    assert!(all_runs(&h).is_empty());

    h.rt.resume_workflow("leads").await.unwrap();
    let report = tick(&h).await;
    assert_eq!(report.fired.len(), 1, "what arrived meanwhile fires once resumed: {report:?}");
    assert!(report.skipped.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_caps_the_runs_a_flood_of_files_starts() {
    let capped = format!("[limits]\nconcurrency = 2\n{LEADS}");
    let h = host(&[("leads", &capped)]);
    let inbox = h.root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();
    for i in 0..5 {
        std::fs::write(inbox.join(format!("{i}.txt")), format!("lead {i}")).unwrap();
    }
    let first = tick(&h).await;
    assert_eq!(first.fired.len(), 2, "{first:?}");
    assert!(first.notes.iter().any(|n| n.message.contains("wait for a later tick")), "{first:?}");
    let blocked = tick(&h).await;
    assert!(blocked.fired.is_empty(), "two runs are unfinished: {blocked:?}");
    drive(&h, &first).await;
    let second = tick(&h).await;
    assert_eq!(second.fired.len(), 2, "{second:?}");
    drive(&h, &second).await;
    let third = tick(&h).await;
    assert_eq!(third.fired.len(), 1, "{third:?}");
    drive(&h, &third).await;
    assert!(tick(&h).await.fired.is_empty());
    let mut texts: Vec<String> = all_runs(&h).iter().map(|r| r.input["text"].as_str().unwrap().to_owned()).collect();
    texts.sort();
    assert_eq!(texts, (0..5).map(|i| format!("lead {i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_fires_and_drives_until_stopped() {
    let h = host(&[("leads", LEADS)]);
    let inbox = h.root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();
    let Host { _dir, root, ws, rt } = h;
    let rt = Arc::new(rt);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let looping = triggers::run_loop_with(
        rt.clone(),
        root.clone(),
        || ws.workflows(),
        Duration::from_millis(50),
        stopped,
        move |event| {
            events.send(event).ok();
        },
    );
    let operator = async {
        tokio::time::sleep(Duration::from_millis(120)).await;
        std::fs::write(inbox.join("late.txt"), "arrived while the loop ran").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut fired = Vec::new();
        let finished = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, seen.recv()).await.expect("the run finishes in time") {
                Some(LoopEvent::Ticked(report)) => fired.extend(report.fired),
                Some(LoopEvent::RunStopped(run)) => break *run,
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("the loop ended early"),
            }
        };
        stop.send(true).unwrap();
        (fired, finished)
    };
    let ((), (fired, finished)) = tokio::join!(looping, operator);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(finished.id, fired[0].run_id);
    assert_eq!(finished.state, RunState::Succeeded);
    assert_eq!(finished.output().unwrap()["text"], "arrived while the loop ran");
}

#[test]
fn keel_triggers_tick_fires_an_inbox_workflow_and_list_shows_it() {
    let h = host(&[("leads", LEADS)]);
    let root = h.root.clone();
    let Host { _dir: dir, ws, rt, .. } = h;
    // One process at a time may open the workspace.
    drop(rt);
    drop(ws);
    std::fs::create_dir_all(root.join("inbox/leads")).unwrap();
    std::fs::write(root.join("inbox/leads/a.txt"), "alpha").unwrap();

    let out = common::keel(&root, &["triggers", "tick"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("fired inbox of leads: file inbox/leads/a.txt (5 bytes"), "{text}");
    assert!(text.contains("of leads: succeeded"), "{text}");

    let out = common::keel(&root, &["triggers", "tick", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fired"], json!([]), "{report}");

    let out = common::keel(&root, &["triggers", "list"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("leads") && text.contains("1 file(s) processed"), "{text}");
    let out = common::keel(&root, &["triggers", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["progress"], json!({"kind": "inbox", "files_processed": 1}), "{list}");
    drop(dir);
}

// --- SIGKILL while firing -------------------------------------------------

const CHILD_ENV: &str = "KEEL_TRIGGERS_CRASH_CHILD";
const CRASH_TEST: &str = "sigkill_while_firing_starts_each_file_exactly_once";
const CRASH_ROUNDS: usize = 12;
const FILES_PER_ROUND: usize = 6;

/// The child: ticks forever without driving, printing each fire.
fn child(workspace: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let ws = Workspace::open(Path::new(workspace)).expect("the child opens the workspace");
        let runtime = ws.runtime().unwrap();
        println!("ready");
        loop {
            let defs = ws.workflows().unwrap();
            let report = triggers::tick(&runtime, ws.root(), &defs, keel_host::memory::now_ms()).await.unwrap();
            for f in &report.fired {
                println!("fired {} recovered={}", f.run_id, f.recovered);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[test]
fn sigkill_while_firing_starts_each_file_exactly_once() {
    if let Ok(workspace) = std::env::var(CHILD_ENV) {
        child(&workspace);
    }
    // Room for every file at once: only the kills interrupt the firing.
    let roomy = format!("[limits]\nconcurrency = 1000\n{LEADS}");
    let h = host(&[("leads", &roomy)]);
    let Host { _dir: dir, root, ws, rt } = h;
    drop(rt);
    drop(ws);
    let inbox = root.join("inbox/leads");
    std::fs::create_dir_all(&inbox).unwrap();

    let mut files = BTreeMap::new();
    let mut recovered = 0;
    for round in 0..CRASH_ROUNDS {
        for i in 0..FILES_PER_ROUND {
            let (name, text) = (format!("r{round:02}-{i}.txt"), format!("round {round} file {i}"));
            std::fs::write(inbox.join(&name), &text).unwrap();
            files.insert(name, sha(&text));
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx.recv_timeout(Duration::from_secs(60)).expect("the child gets ready");
            if line.ends_with("ready") {
                break;
            }
        }
        // Kill at varying moments of the first tick: before, between and
        // after the commits of a start.
        std::thread::sleep(Duration::from_millis((round as u64 * 7) % 45));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        recovered += rx.try_iter().filter(|l| l.ends_with("recovered=true")).count();
    }
    eprintln!("{recovered} start(s) settled after a kill");

    // A last, unkilled pass finishes whatever was left.
    let ws = Workspace::open(&root).unwrap();
    let rt = ws.runtime().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async {
        for _ in 0..3 {
            let defs = ws.workflows().unwrap();
            triggers::tick(&rt, ws.root(), &defs, keel_host::memory::now_ms()).await.unwrap();
        }
    });
    let runs = ws.store().recent_runs(usize::MAX).unwrap();
    let mut per_file: BTreeMap<(String, String), usize> = BTreeMap::new();
    for run in &runs {
        let key = (run.input["file"].as_str().unwrap().to_owned(), run.input["sha256"].as_str().unwrap().to_owned());
        *per_file.entry(key).or_default() += 1;
    }
    for (name, sha) in &files {
        assert_eq!(per_file.get(&(name.clone(), sha.clone())), Some(&1), "file {name}: {per_file:?}");
    }
    assert_eq!(runs.len(), files.len(), "no run for anything else");
    let statuses = triggers::statuses(ws.store(), &ws.workflows().unwrap(), keel_host::memory::now_ms()).unwrap();
    assert_eq!(statuses[0].starting, 0, "no start left recorded");
    drop(dir);
}
