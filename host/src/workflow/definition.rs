//! Workflow definitions: the files `workflows/NAME.toml` in a workspace,
//! parsed and validated once at load. Every error names the file, the
//! line and the field, and says what to do:
//!
//! ```text
//! workflows/leads.toml:14: steps[2].agent: no installed agent named `planer`: see `keel list`
//! ```
//!
//! # The file
//!
//! ```toml
//! description = "Inbound lead to personal reply"   # optional
//!
//! [trigger]
//! kind = "webhook"
//! path = "leads"
//!
//! [limits]
//! concurrency = 4
//!
//! [[steps]]
//! id = "extract"
//! agent = "extractor"
//! input = { email = "$.trigger.body", run = "$.run.id" }
//! retry = { attempts = 3, backoff_ms = 500, max_backoff_ms = 30000 }
//!
//! [[steps]]
//! id = "qualify"
//! agent = "qualifier"
//! branch = { on = "qualified", cases = { "true" = "outreach" }, default = "archive" }
//!
//! [[steps]]
//! id = "outreach"
//! agent = "writer"
//! input = { contact = "$.item", lead = "$.steps.extract.output" }
//! for_each = "$.steps.extract.output.contacts"
//! max_parallel = 8
//! next = "end"
//!
//! [[steps]]
//! id = "archive"
//! agent = "archiver"
//! input = "$.steps.qualify.output"
//! ```
//!
//! The workflow's name is the file's stem: 1 to [`MAX_NAME_LEN`]
//! lowercase letters, digits and `-`, not starting with `-`. Unknown fields
//! anywhere are errors, as are values of the wrong type.
//!
//! Top level: `description` (optional string), `[trigger]` (optional),
//! `[limits]` (optional), `[[steps]]` (at least one, at most [`MAX_STEPS`]).
//!
//! ## `[trigger]`: what starts a run
//!
//! Without the table, `kind = "manual"`. With it, `kind` is required and
//! only the fields of that kind are accepted:
//!
//! * `kind = "manual"`: started by `keel run NAME --input JSON`; no fields.
//! * `kind = "schedule"`: `cron` (required, non-empty, e.g.
//!   `"0 9 * * MON-FRI"`), `timezone` (default `"UTC"`, non-empty), `input`
//!   (any TOML value, converted to JSON as for step inputs; default `{}`):
//!   the run's input. The cron and timezone strings are stored as written
//!   and interpreted by the scheduler.
//! * `kind = "webhook"`: `path` (required): `POST /api/v1/hooks/PATH` under
//!   `keel serve` starts a run with the request body. Segments of lowercase
//!   letters, digits and `-`, separated by single `/` (`"leads"`,
//!   `"crm/leads"`).
//! * `kind = "inbox"`: `folder` (required): a folder relative to the
//!   workspace, inside it (not absolute, no `..`, not the workspace
//!   itself; `.` segments are dropped); `pattern` (default `"*"`): a glob
//!   matched against file names (not paths, so no `/`). A new file there
//!   starts a run.
//! * `kind = "record"`: `collection` (required, a valid collection name):
//!   a record created or updated in it starts a run with input
//!   `{collection, id, version, data}`.
//!
//! ## `[limits]`
//!
//! * `concurrency`: runs of this workflow at once, 1 to
//!   [`MAX_CONCURRENCY`] (default [`DEFAULT_CONCURRENCY`]).
//! * `run_timeout_ms`: optional, at least 1: how long a run may take.
//!
//! ## `[[steps]]`: run in file order unless `next` or `branch` says otherwise
//!
//! * `id` (required): unique, 1 to [`MAX_STEP_ID_LEN`] of lowercase letters,
//!   digits, `_` and `-`; not `end`.
//! * `agent` (required): an installed plugin of world `agent`.
//! * `input` (optional): the step's input, any TOML value converted to JSON
//!   (datetimes become RFC 3339 strings; nan and inf are errors). Every
//!   string in it that starts with `$` is a reference, replaced by the JSON
//!   it names; a string starting with `$$` is literal text minus its first
//!   `$` (`"$$5"` is `"$5"`). Object keys are never references. When absent,
//!   the input is, made explicit at load: `$.item` for a `for_each` step,
//!   `$.trigger` for the first step, otherwise the previous step's output in
//!   file order (`$.steps.PREV.output`, or `.outputs` if PREV is a
//!   `for_each` step), which must pass the same checks as a written one.
//! * `timeout_ms` (optional): 1 to [`MAX_STEP_TIMEOUT_MS`] per attempt;
//!   default: the workspace's `limits.call_timeout_ms`.
//! * `retry` (optional table): `attempts` 1 to [`MAX_ATTEMPTS`] (default 1:
//!   no retry), `backoff_ms` 0 to [`MAX_BACKOFF_MS`] (default
//!   [`DEFAULT_BACKOFF_MS`]), `max_backoff_ms` from `backoff_ms` to
//!   [`MAX_BACKOFF_MS`] (default the larger of [`DEFAULT_MAX_BACKOFF_MS`]
//!   and `backoff_ms`). The wait after failed attempt n is
//!   `backoff_ms * 2^(n-1)`, capped at `max_backoff_ms`.
//! * `next` (optional): the id of the step that follows, or `"end"` to end
//!   the run. Default: the next step in file order; after the last step,
//!   the run ends.
//! * `branch` (optional, not with `next`): `{ on, cases, default }`. `on`
//!   is a path into this step's output (`"qualified"`, `"score.band"`;
//!   `""` is the whole output); the value there is rendered as text (a
//!   string without quotes, `true`/`false`, a number as JSON writes it,
//!   `null`, other values as compact JSON) and looked up among the keys of
//!   `cases` (at least one; values are step ids or `"end"`). `default`
//!   (required) is taken when nothing matches or the path is missing.
//! * `for_each` (optional): a reference to an array (not `$.item` or
//!   `$.run.id`). The agent runs once per element, with `$.item` bound to
//!   it; the outputs, in element order, are the step's result, read as
//!   `$.steps.ID.outputs` and the value a `branch` on this step looks at.
//! * `max_parallel` (only with `for_each`): elements run at once, 1 to
//!   [`MAX_PARALLEL`] (default [`DEFAULT_MAX_PARALLEL`]).
//!
//! ## References
//!
//! `$.trigger[.PATH]` (the run's input), `$.steps.ID.output[.PATH]` (a
//! step's output), `$.steps.ID.outputs[.PATH]` (the array of outputs of a
//! `for_each` step), `$.item[.PATH]` (only in a `for_each` step's `input`)
//! and `$.run.id`. PATH is dot-separated segments: a segment of digits
//! without a leading zero is an index into an array (or, on an object, the
//! key spelled that way), any other segment a key
//! (`$.steps.plan.output.leads.0.name`). Keys containing `.` cannot be
//! named. `$.steps.ID` must name a step that runs before this one on every
//! path from the first step (so its output always exists), and reads
//! `.outputs` exactly when ID is a `for_each` step.
//!
//! ## The step graph
//!
//! Edges go from each step to its `next`, every `branch` target, or its
//! implicit successor in file order. The graph must be acyclic (a cycle is
//! reported as `a -> b -> a`) and every step reachable from the first.

mod graph;
mod locate;
mod raw;
mod reference;
mod steps;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use reference::{
    PathSegment, RefContext, RefRoot, Reference, lookup, render_branch_value, resolve, resolve_reference,
};

/// The folder of a workspace that holds workflow files.
pub const WORKFLOWS_DIR: &str = "workflows";
/// The `next` (or branch target) that ends a run; no step may use it as id.
pub const END: &str = "end";
/// Longest workflow name: names appear in URLs, logs and run ids.
pub const MAX_NAME_LEN: usize = 64;
/// Longest step id: ids appear in references, task ids and outbox keys.
pub const MAX_STEP_ID_LEN: usize = 64;
/// Most steps in one workflow: bounds the (quadratic) graph checks at load
/// and the size of every run record.
pub const MAX_STEPS: usize = 256;
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// Most runs of one workflow at once: protects the host from one noisy
/// trigger.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Longest step attempt, as for any plugin call.
pub const MAX_STEP_TIMEOUT_MS: u64 = crate::workspace::config::MAX_CALL_TIMEOUT_MS;
/// Most attempts of a step: bounds how long a failing step keeps retrying.
pub const MAX_ATTEMPTS: u32 = 20;
pub const DEFAULT_BACKOFF_MS: u64 = 1000;
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;
/// Longest wait between attempts: a retry an hour later is a new run.
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;
pub const DEFAULT_MAX_PARALLEL: u32 = 4;
/// Most elements of a `for_each` step at once: bounds the instances one
/// step holds.
pub const MAX_PARALLEL: u32 = 64;

/// A validated workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    /// The file's stem.
    pub name: String,
    pub description: Option<String>,
    pub trigger: Trigger,
    pub limits: WorkflowLimits,
    /// In file order; the first is the entry.
    pub steps: Vec<StepDef>,
    /// The file it was read from, as given to [`parse`].
    pub source: PathBuf,
}

impl WorkflowDef {
    /// The id of the step a run starts with (the first in the file); `end`
    /// for a definition without steps, which [`parse`] never returns.
    pub fn entry(&self) -> &str {
        self.steps.first().map_or(END, |step| &step.id)
    }

    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|step| step.id == id)
    }
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Schedule {
        cron: String,
        timezone: String,
        input: Value,
    },
    Webhook {
        path: String,
    },
    /// `folder` is relative to the workspace and stays inside it.
    Inbox {
        folder: PathBuf,
        pattern: String,
    },
    Record {
        collection: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowLimits {
    pub concurrency: u32,
    pub run_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    pub id: String,
    pub agent: String,
    /// The input template; always `Some` after [`parse`]: the default is
    /// made explicit (see the module docs).
    pub input: Option<Value>,
    /// Per attempt; `None`: the workspace's call timeout.
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub next: Next,
    pub for_each: Option<Reference>,
    /// Elements run at once; 1 for a step without `for_each`.
    pub max_parallel: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all; 1 means no retry.
    pub attempts: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based; 0 counts as 1):
    /// `backoff_ms * 2^(attempt-1)`, capped at `max_backoff_ms`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        Duration::from_millis(self.backoff_ms.saturating_mul(factor).min(self.max_backoff_ms))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 1, backoff_ms: DEFAULT_BACKOFF_MS, max_backoff_ms: DEFAULT_MAX_BACKOFF_MS }
    }
}

/// Where a run goes after a step. The implicit successor in file order is
/// made explicit at load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    Step(String),
    End,
    /// Targets are step ids or [`END`].
    Branch {
        on: Vec<PathSegment>,
        cases: BTreeMap<String, String>,
        default: String,
    },
}

/// What the caller knows about a plugin name.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentCheck {
    /// An installed plugin of world `agent`.
    Agent,
    /// An installed plugin of another world (named).
    NotAnAgent(String),
    Missing,
}

/// Why a workflow file could not be used. Only the first problem in a file
/// is reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    #[error("cannot read {}: {source}: check that it exists and is readable UTF-8", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: `{name}` is not a valid workflow name (the file name without `.toml`): \
         use 1 to {MAX_NAME_LEN} lowercase letters, digits and '-', not starting with '-', and rename the file",
        path.display()
    )]
    BadName { path: PathBuf, name: String },
    /// The TOML did not parse, or did not fit the format (unknown field,
    /// wrong type, missing field); `field` is absent for syntax errors.
    #[error("{}:{line}:{column}: {}{message}", path.display(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Toml { path: PathBuf, line: usize, column: usize, field: Option<String>, message: String },
    /// A value that parsed but is not valid.
    #[error("{}:{line}: {field}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, field: String, message: String },
}

impl DefinitionError {
    /// The 1-based line the error is on, if it is about a place in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            DefinitionError::Toml { line, .. } | DefinitionError::Invalid { line, .. } => Some(*line),
            DefinitionError::Io { .. } | DefinitionError::BadName { .. } => None,
        }
    }

    /// The field the error is about (`steps[2].agent`), if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            DefinitionError::Toml { field, .. } => field.as_deref(),
            DefinitionError::Invalid { field, .. } => Some(field),
            DefinitionError::Io { .. } | DefinitionError::BadName { .. } => None,
        }
    }
}

/// Parses and validates the workflow file `path` whose content is `text`;
/// `agents` says what each plugin name the file uses is.
pub fn parse(path: &Path, text: &str, agents: &dyn Fn(&str) -> AgentCheck) -> Result<WorkflowDef, DefinitionError> {
    let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    if !valid_name(&name) {
        return Err(DefinitionError::BadName { path: path.to_owned(), name });
    }
    let raw: raw::RawFile = toml::from_str(text).map_err(|e| validate::toml_error(path, text, &e))?;
    validate::build(path, text, name, raw, agents)
}

/// Loads every `*.toml` file in `dir` (a workspace's [`WORKFLOWS_DIR`]),
/// sorted by name; a missing folder holds no workflows. Stops at the first
/// invalid file.
pub fn load_dir(dir: &Path, agents: &dyn Fn(&str) -> AgentCheck) -> Result<Vec<WorkflowDef>, DefinitionError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_stem().cmp(&b.file_stem()));
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            parse(path, &text, agents)
        })
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DefinitionError + '_ {
    move |source| DefinitionError::Io { path: path.to_owned(), source }
}

fn valid_name(name: &str) -> bool {
    let chars_ok = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    !name.is_empty() && name.len() <= MAX_NAME_LEN && chars_ok && !name.starts_with('-')
}

/// Checks a step id's spelling (not whether it is taken, or `end`).
fn check_step_id(id: &str) -> Result<(), String> {
    let chars_ok = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if id.is_empty() || id.len() > MAX_STEP_ID_LEN || !chars_ok {
        return Err(format!(
            "`{id}` is not a valid step id: use 1 to {MAX_STEP_ID_LEN} lowercase letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}
