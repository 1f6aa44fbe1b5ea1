//! "Write agents in any WebAssembly language", checked: the extractor agent
//! in Rust (`agents/extractor`), Python (`examples/extractor-python`,
//! componentize-py) and JavaScript (`examples/extractor-js`,
//! componentize-js) pass the same contract test.
//!
//! Each runs in a fresh workspace on the offline model and gets the same
//! inputs: the demo's emails (batch 1, then batch 2, in file order), two
//! web-form leads, and malformed inputs. The observable contract is then
//! compared with the Rust agent's:
//! - every output is the same JSON, except `note_id` (a fresh id per note);
//!   numbers compare by value (`25000` is `25000.0`: JavaScript has no
//!   separate integer type). `model` is compared too: all three ask the
//!   same offline provider;
//! - the `leads` records afterwards are the same, with the same versions,
//!   and so are the notes (text, tags, metadata but the task id);
//! - spam is skipped and leaves no record, the second message from a sender
//!   updates the same record (`messages: 2`), a colleague is a new record;
//! - malformed inputs fail with `invalid-input` (for `{}` with the same text).
//!
//! The Python and JS components are built by `bash tests/build-polyglot.sh`
//! (tests/run.sh runs it first); this test fails, naming the script, when
//! they are missing. It packs each with its `plugin.toml` itself, so a
//! manifest edit needs no rebuild. It prints each component's size and how
//! long compiling (at install), the first call, the second call and the
//! first call after reopening the workspace (compile cache hit) took.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_host::bindings::GuestError;
use keel_host::kernel::CapabilitySet;
use keel_host::memory::records;
use keel_host::memory::semantic::storage;
use keel_host::runtime::{CallError, Runtime};
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

/// A call timeout with room for an interpreter's first instantiation on a
/// busy machine; the other limits as in [`common::TEST_CONFIG`].
const CONFIG: &str = "[limits]\ncall_timeout_ms = 30000\nmemory_mib = 256\noutput_kib = 1024\n";

/// One implementation of the extractor.
struct Agent {
    language: &'static str,
    /// The installed plugin's name.
    name: &'static str,
    /// The packed plugin (component plus `plugin.toml`).
    bytes: Vec<u8>,
    /// Where the component came from, for messages and install checks.
    path: PathBuf,
    /// Size of the component in bytes.
    size: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_agent() -> Agent {
    let path = PathBuf::from(common::guests::EXTRACTOR);
    let bytes = std::fs::read(&path).expect("host/build.rs builds the Rust extractor");
    Agent { language: "Rust", name: "extractor", size: bytes.len(), bytes, path }
}

/// The component `tests/build-polyglot.sh` built from `examples/<name>/`,
/// packed with that folder's `plugin.toml`.
fn polyglot_agent(language: &'static str, name: &'static str) -> Agent {
    let polyglot = Path::new(common::guests::GUESTS_DIR).parent().unwrap().join("polyglot");
    let path = polyglot.join(format!("{name}.component.wasm"));
    let component = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the {language} extractor is not built ({}: {e}): run `bash tests/build-polyglot.sh` first \
             (it installs the pinned componentize-py and componentize-js; tests/run.sh runs it)",
            path.display()
        )
    });
    let manifest_path = repo().join("examples").join(name).join("plugin.toml");
    let manifest =
        std::fs::read_to_string(&manifest_path).unwrap_or_else(|e| panic!("reading {}: {e}", manifest_path.display()));
    let bytes = keel_host::plugin::package::pack(&component, &manifest);
    Agent { language, name, size: component.len(), bytes, path }
}

/// The demo's emails, batch 1 then batch 2, each in file-name order.
fn emails() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for batch in ["batch-1", "batch-2"] {
        let dir = repo().join("examples/lead-to-outreach/emails").join(batch);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&file).unwrap()));
        }
    }
    assert_eq!(out.len(), 8, "the demo's eight emails");
    out
}

/// Fields already split out (a web form): a new sender, then a known one
/// whose budget changes.
fn form_inputs() -> Vec<(String, Value)> {
    vec![
        (
            "form: new sender".into(),
            json!({"lead": {"name": "Lena Berg", "email": " Lena.Berg@Fjord-Analytics.NO ", "company": "Fjord Analytics AS",
                            "need": "A churn dashboard for our subscription product!", "budget": 8000, "currency": "NOK",
                            "subject": "Dashboard", "confidence": 0.7}}),
        ),
        (
            "form: known sender".into(),
            json!({"lead": {"email": "dana.whitfield@acme-robotics.com", "need": "Add a data-quality audit to the CRM project.",
                            "budget": 27500.5}}),
        ),
    ]
}

/// Inputs the agent must refuse with `invalid-input`.
const MALFORMED: [&str; 4] = ["{}", r#"{"text": 42}"#, r#""an email""#, r#"{"lead": {"email": 7}}"#];

/// What one agent did with every input.
struct Run {
    /// Per input: its label and the output JSON.
    outputs: Vec<(String, Value)>,
    /// Per malformed input: the error.
    errors: Vec<GuestError>,
    /// The `leads` records afterwards: id, version, data.
    records: Vec<(String, u64, Value)>,
    record_count: u64,
    /// The note of each output that has one: text, tags, metadata.
    notes: Vec<(String, Vec<String>, Value)>,
    timings: Timings,
}

#[derive(Debug)]
struct Timings {
    install: Duration,
    first_call: Duration,
    second_call: Duration,
    after_reopen: Duration,
}

fn install(ws: &Workspace, runtime: &Runtime, agent: &Agent) {
    let candidate = runtime
        .check_candidate(agent.bytes.clone(), &agent.path, None, &())
        .unwrap_or_else(|e| panic!("the {} extractor fails the install checks: {e}", agent.language));
    assert_eq!(candidate.manifest.name, agent.name);
    let grants: CapabilitySet = candidate.manifest.capabilities.clone();
    ws.install(candidate, grants).unwrap_or_else(|e| panic!("installing the {} extractor: {e}", agent.language));
}

async fn call(runtime: &Runtime, agent: &Agent, label: &str, input: &Value) -> Value {
    let out = runtime
        .call(agent.name, input.to_string())
        .await
        .unwrap_or_else(|e| panic!("the {} extractor failed on {label}: {e}", agent.language));
    serde_json::from_str(&out.output).unwrap_or_else(|e| {
        panic!("the {} extractor's output for {label} is not JSON ({e}): {}", agent.language, out.output)
    })
}

async fn run(agent: &Agent) -> Run {
    let (_dir, path) = common::workspace();
    std::fs::write(path.join("keel.toml"), CONFIG).unwrap();
    let mut timings = Timings {
        install: Duration::ZERO,
        first_call: Duration::ZERO,
        second_call: Duration::ZERO,
        after_reopen: Duration::ZERO,
    };
    let mut outputs = Vec::new();
    let mut errors = Vec::new();
    {
        let ws = Workspace::open(&path).unwrap();
        let runtime = ws.runtime().unwrap();
        let started = Instant::now();
        install(&ws, &runtime, agent);
        timings.install = started.elapsed();

        for (i, (file, text)) in emails().into_iter().enumerate() {
            let started = Instant::now();
            let output = call(&runtime, agent, &file, &json!({ "text": text })).await;
            match i {
                0 => timings.first_call = started.elapsed(),
                1 => timings.second_call = started.elapsed(),
                _ => {}
            }
            outputs.push((file, output));
        }
        for (label, input) in form_inputs() {
            let output = call(&runtime, agent, &label, &input).await;
            outputs.push((label, output));
        }
        for input in MALFORMED {
            match runtime.call(agent.name, input.to_owned()).await {
                Err(CallError::Guest { error, .. }) => errors.push(error),
                other => panic!("the {} extractor on {input}: expected an error value, got {other:?}", agent.language),
            }
        }
    }

    // A second start: the compiled component comes from the cache.
    let ws = Workspace::open(&path).unwrap();
    let runtime = ws.runtime().unwrap();
    let started = Instant::now();
    let again = call(&runtime, agent, "the spam email after reopening", &json!({"text": emails()[4].1})).await;
    timings.after_reopen = started.elapsed();
    assert_eq!(again["skipped"], "spam");

    let store = ws.store();
    let record_count = records::stats(store).unwrap().get("leads").map_or(0, |c| c.records);
    let mut ids: Vec<String> = outputs.iter().filter_map(|(_, o)| o["lead_id"].as_str().map(str::to_owned)).collect();
    ids.sort();
    ids.dedup();
    let records = ids
        .iter()
        .map(|id| {
            let entry = records::get(store, "leads", id).unwrap().unwrap_or_else(|| panic!("no record {id}"));
            (id.clone(), entry.version, entry.data)
        })
        .collect();
    let notes = outputs
        .iter()
        .filter_map(|(label, o)| {
            let id = o.get("note_id")?;
            let id = id.as_str().unwrap_or_else(|| panic!("{label}: note_id is not a string: {o}"));
            let note =
                storage::get_note(store, "leads", id).unwrap().unwrap_or_else(|| panic!("{label}: no note {id}"));
            let mut metadata = note.metadata;
            let task = metadata.as_object_mut().unwrap().remove("task");
            assert!(
                task.is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty())),
                "{label}: the note names its task"
            );
            Some((note.text, note.tags, metadata))
        })
        .collect();
    Run { outputs, errors, records, record_count, notes, timings }
}

/// `value` with every number as an f64 (JSON does not tell `1` from `1.0`),
/// and without `note_id`, which is a fresh id per note.
fn comparable(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| k.as_str() != "note_id").map(|(k, v)| (k.clone(), comparable(v))).collect(),
        ),
        other => other.clone(),
    }
}

fn error_case(e: &GuestError) -> (&'static str, &str) {
    match e {
        GuestError::Denied(d) => ("denied", d),
        GuestError::InvalidInput(d) => ("invalid-input", d),
        GuestError::BudgetExceeded(d) => ("budget-exceeded", d),
        GuestError::PendingApproval(d) => ("pending-approval", d),
        GuestError::Unavailable(d) => ("unavailable", d),
    }
}

/// What must hold for any implementation, whatever the others did.
fn check_contract(language: &str, run: &Run) {
    let out = |label: &str| -> &Value {
        &run.outputs.iter().find(|(l, _)| l == label).unwrap_or_else(|| panic!("{language}: no output for {label}")).1
    };
    let spam = out("05-spam.eml");
    assert_eq!(spam, &json!({"skipped": "spam", "label": "spam"}), "{language}: spam is skipped");
    assert!(
        run.records.iter().all(|(id, ..)| !id.contains("seo-rank-boost")),
        "{language}: spam leaves no record: {:?}",
        run.records
    );
    let first = out("01-acme.eml");
    let again = out("06-acme-again.eml");
    assert_eq!((&first["new"], &first["messages"]), (&json!(true), &json!(1)), "{language}: {first}");
    assert_eq!(first["lead_id"], again["lead_id"], "{language}: the same sender is the same record");
    assert_eq!((&again["new"], &again["messages"]), (&json!(false), &json!(2)), "{language}: {again}");
    let colleague = out("07-nordlicht-colleague.eml");
    assert_eq!(colleague["new"], true, "{language}: a colleague is a new record: {colleague}");
    assert_eq!(colleague["company_tag"], out("03-nordlicht.eml")["company_tag"], "{language}: same company tag");
    let dana = run.records.iter().find(|(id, ..)| id == "dana.whitfield@acme-robotics.com").unwrap();
    assert_eq!(dana.1, 3, "{language}: two emails and a form wrote Dana's record");
    assert_eq!((dana.2["messages"].as_u64(), dana.2["budget"].as_f64()), (Some(3), Some(27500.5)), "{language}");
    assert_eq!(run.record_count, run.records.len() as u64, "{language}: one record per lead_id, nothing else");
    assert_eq!(run.record_count, 6, "{language}: 7 senders wrote (one of them spam) and one new form lead");
    for (input, error) in MALFORMED.iter().zip(&run.errors) {
        assert_eq!(error_case(error).0, "invalid-input", "{language} on {input}: {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_javascript_extractors_keep_the_rust_extractors_contract() {
    // All three load before any runs: a missing build fails at once.
    let agents =
        [rust_agent(), polyglot_agent("Python", "extractor-python"), polyglot_agent("JavaScript", "extractor-js")];
    let mut runs = Vec::new();
    for agent in &agents {
        let run = run(agent).await;
        check_contract(agent.language, &run);
        runs.push(run);
    }

    println!(
        "{:<11} {:>9} {:>17} {:>11} {:>12} {:>18}",
        "extractor", "size", "install+compile", "first call", "second call", "call after reopen"
    );
    for (agent, run) in agents.iter().zip(&runs) {
        let t = &run.timings;
        println!(
            "{:<11} {:>6.1} MB {:>15.0?} {:>11.0?} {:>12.0?} {:>18.0?}",
            agent.language,
            agent.size as f64 / 1e6,
            t.install,
            t.first_call,
            t.second_call,
            t.after_reopen
        );
    }

    let (reference, others) = runs.split_first().unwrap();
    for (agent, run) in agents[1..].iter().zip(others) {
        let language = agent.language;
        assert_eq!(run.outputs.len(), reference.outputs.len());
        for ((label, got), (_, want)) in run.outputs.iter().zip(&reference.outputs) {
            assert_eq!(comparable(got), comparable(want), "{language} vs Rust on {label}:\n{got}\n{want}");
        }
        for (got, want) in run.records.iter().zip(&reference.records) {
            assert_eq!((&got.0, got.1), (&want.0, want.1), "{language} vs Rust: record ids and versions");
            assert_eq!(comparable(&got.2), comparable(&want.2), "{language} vs Rust: record {}", got.0);
        }
        assert_eq!(run.records.len(), reference.records.len(), "{language} vs Rust: records");
        assert_eq!(run.record_count, reference.record_count);
        assert_eq!(run.notes.len(), reference.notes.len(), "{language} vs Rust: notes");
        for (got, want) in run.notes.iter().zip(&reference.notes) {
            assert_eq!((&got.0, &got.1), (&want.0, &want.1), "{language} vs Rust: note text and tags");
            assert_eq!(comparable(&got.2), comparable(&want.2), "{language} vs Rust: note metadata");
        }
        let (case, text) = error_case(&run.errors[0]);
        assert_eq!((case, text), error_case(&reference.errors[0]), "{language} vs Rust: the error for `{{}}`");
    }
}
