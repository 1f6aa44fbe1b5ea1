//! The journal of a workflow step: every host call the step's agent made,
//! with its request and result, in order, including what it read from the
//! WASI clocks and random generators. It lands with the step's output, so a
//! finished step can be replayed deterministically and explained later.
//!
//! Model calls are also kept at once in a memo (money was spent on them):
//! if the process dies mid-step, the step runs again and gets the recorded
//! answers back instead of paying twice. A step's memo is dropped when the
//! step commits or an attempt fails.
//!
//! Secrets are never journaled: `config.get-secret` is recorded without its
//! value.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError};

/// (run, task, seq) -> entry (JSON). `task` is `step` or `step.item`.
const JOURNAL: TableDefinition<(&str, &str, u32), &str> = TableDefinition::new("workflow_journal");
/// (run, task, seq) -> entry: model calls of a step not committed yet.
const MEMO: TableDefinition<(&str, &str, u32), &str> = TableDefinition::new("workflow_memo");
/// (run, task) -> the input the task was given, for replays.
const INPUTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("workflow_inputs");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(JOURNAL)?;
    txn.open_table(MEMO)?;
    txn.open_table(INPUTS)?;
    Ok(())
}

/// One host call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u32,
    /// e.g. `memory.get`, `model.complete`, `clock.wall`, `random.bytes`.
    pub op: String,
    pub request: Value,
    pub result: Value,
}

/// Operations whose results are memoized while the step runs.
fn memoized(op: &str) -> bool {
    op.starts_with("model.")
}

/// The journal of one attempt of one step (or fan-out item).
#[derive(Debug)]
pub struct StepJournal {
    run: String,
    task: String,
    entries: Vec<JournalEntry>,
    /// Model answers of an earlier, interrupted attempt, in order.
    memo: VecDeque<JournalEntry>,
    /// Memo writes to land at once (money was spent).
    pending_memo: Vec<JournalEntry>,
    /// The step has memo rows to drop when it commits: an earlier
    /// attempt's, or this one's.
    has_memo: bool,
    /// Replaying a recorded journal instead of recording one.
    replay: Option<Replay>,
}

/// A recorded journal being fed back to a fresh instance.
#[derive(Debug)]
struct Replay {
    recorded: Vec<JournalEntry>,
    next: usize,
    divergence: Option<Divergence>,
    /// Tier -> `provider/model` asked live instead (a counterfactual).
    models: BTreeMap<String, String>,
    /// What the live models answered, next to what was recorded.
    answers: Vec<ModelAnswer>,
}

/// A model call a counterfactual replay made live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelAnswer {
    pub tier: String,
    pub model: String,
    /// What the original call got (none: it made no such call there).
    pub recorded: Option<Value>,
    pub now: Value,
}

/// Where a replayed step first did something other than what was recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The call's position in the journal.
    pub seq: u32,
    /// What was recorded there (none: the original made no more calls).
    pub expected: Option<JournalEntry>,
    pub actual_op: String,
    pub actual_request: Value,
}

/// Host calls with effects (writes, proposals, money). After a replay
/// diverges they are not made: the guest gets `unavailable`.
pub fn has_effects(op: &str) -> bool {
    matches!(
        op,
        "memory.put"
            | "memory.put-expiring"
            | "memory.delete"
            | "memory.put-record"
            | "memory.delete-record"
            | "memory.remember"
            | "memory.forget"
            | "actions.propose"
    ) || op.starts_with("model.")
}

/// Shared by the host state and the WASI clocks and generators of a call.
pub type SharedJournal = Arc<Mutex<StepJournal>>;

impl StepJournal {
    /// A journal for task `task` of run `run`, fed the memo of an earlier
    /// interrupted attempt.
    pub fn new(run: &str, task: &str, memo: Vec<JournalEntry>) -> StepJournal {
        StepJournal {
            run: run.to_owned(),
            task: task.to_owned(),
            entries: Vec::new(),
            has_memo: !memo.is_empty(),
            memo: memo.into(),
            pending_memo: Vec::new(),
            replay: None,
        }
    }

    /// A journal that feeds `recorded` back to a replayed step; model
    /// calls of the tiers in `models` are made live on the given model.
    pub fn replaying(
        run: &str,
        task: &str,
        recorded: Vec<JournalEntry>,
        models: BTreeMap<String, String>,
    ) -> StepJournal {
        let mut journal = StepJournal::new(run, task, Vec::new());
        journal.replay = Some(Replay { recorded, next: 0, divergence: None, models, answers: Vec::new() });
        journal
    }

    /// In a counterfactual replay: the model to ask live for `tier`. The
    /// recorded call at this point, if it is this one, is passed over.
    pub fn live_model(&mut self, op: &str, tier: &str, request: &Value) -> Option<(String, Option<Value>)> {
        let replay = self.replay.as_mut()?;
        let model = replay.models.get(tier)?.clone();
        let mut recorded = None;
        if replay.divergence.is_none()
            && let Some(e) = replay.recorded.get(replay.next).filter(|e| e.op == op && &e.request == request)
        {
            recorded = Some(e.result.clone());
            replay.next += 1;
        }
        Some((model, recorded))
    }

    /// Notes what a live model answered in a counterfactual replay.
    pub fn note_answer(&mut self, answer: ModelAnswer, request: Value) {
        let result = answer.now.clone();
        if let Some(replay) = self.replay.as_mut() {
            replay.answers.push(answer);
        }
        self.push("model.complete", request, result, false);
    }

    /// What live models answered in a counterfactual replay.
    pub fn model_answers(&self) -> Vec<ModelAnswer> {
        self.replay.as_ref().map(|r| r.answers.clone()).unwrap_or_default()
    }

    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    /// In a replay: the recorded result of this call if it is the call
    /// recorded next; otherwise notes the first divergence and returns
    /// `None` (the call is then answered live, or stubbed if it has
    /// effects).
    pub fn replayed(&mut self, op: &str, request: &Value) -> Option<Value> {
        let seq = self.entries.len() as u32;
        let replay = self.replay.as_mut()?;
        if replay.divergence.is_none() {
            let expected = replay.recorded.get(replay.next);
            if expected.is_some_and(|e| e.op == op && &e.request == request) {
                let result = expected.map(|e| e.result.clone());
                replay.next += 1;
                self.push(op, request.clone(), result.clone().unwrap_or_default(), false);
                return result;
            }
            replay.divergence = Some(Divergence {
                seq,
                expected: expected.cloned(),
                actual_op: op.to_owned(),
                actual_request: request.clone(),
            });
        }
        None
    }

    /// The first divergence of a replay, or one at the end if the
    /// original made calls the replay did not.
    pub fn divergence(&self) -> Option<Divergence> {
        let replay = self.replay.as_ref()?;
        replay.divergence.clone().or_else(|| {
            replay.recorded.get(replay.next).map(|missing| Divergence {
                seq: replay.next as u32,
                expected: Some(missing.clone()),
                actual_op: "(no further call)".into(),
                actual_request: Value::Null,
            })
        })
    }

    pub fn shared(self) -> SharedJournal {
        Arc::new(Mutex::new(self))
    }

    /// The recorded result of this call if an interrupted attempt made the
    /// same call at this point; it is journaled again as made now.
    pub fn memo_for(&mut self, op: &str, request: &Value) -> Option<Value> {
        if !memoized(op) {
            return None;
        }
        let next = self.memo.front()?;
        if next.op != op || &next.request != request {
            // The step took another path this time: answers from here on
            // are live.
            self.memo.clear();
            return None;
        }
        let entry = self.memo.pop_front()?;
        self.push(op, request.clone(), entry.result.clone(), false);
        Some(entry.result)
    }

    /// Records a call made now.
    pub fn record(&mut self, op: &str, request: Value, result: Value) {
        self.push(op, request, result, memoized(op));
    }

    fn push(&mut self, op: &str, request: Value, result: Value, memo: bool) {
        let entry = JournalEntry { seq: self.entries.len() as u32, op: op.to_owned(), request, result };
        if memo {
            self.pending_memo.push(entry.clone());
        }
        self.entries.push(entry);
    }

    /// The memo writes of calls made since the last take.
    pub fn take_memo(&mut self) -> Option<Batch> {
        if self.pending_memo.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut self.pending_memo);
        self.has_memo = true;
        let (run, task) = (self.run.clone(), self.task.clone());
        let apply = Arc::new(move |txn: &WriteTransaction| {
            let mut memo = txn.open_table(MEMO)?;
            for e in &rows {
                let json = serde_json::to_string(e).expect("entries serialize");
                memo.insert((run.as_str(), task.as_str(), e.seq), json.as_str())?;
            }
            Ok(())
        });
        Some(Batch {
            mutations: vec![Mutation::Custom(CustomMutation { label: "workflow.memo", apply })],
            audit: vec![],
        })
    }

    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// The write that stores this journal and the task's `input`, and
    /// drops the memo: for the step's commit. The entries are serialized
    /// here, off the committer's thread.
    pub fn commit(&self, input: &str) -> Mutation {
        let (run, task) = (self.run.clone(), self.task.clone());
        let entries: Vec<(u32, String)> =
            self.entries.iter().map(|e| (e.seq, serde_json::to_string(e).expect("entries serialize"))).collect();
        let (input, has_memo) = (input.to_owned(), self.has_memo);
        let apply = Arc::new(move |txn: &WriteTransaction| {
            txn.open_table(INPUTS)?.insert((run.as_str(), task.as_str()), input.as_str())?;
            let mut journal = txn.open_table(JOURNAL)?;
            for (seq, json) in &entries {
                journal.insert((run.as_str(), task.as_str(), *seq), json.as_str())?;
            }
            if has_memo { clear_memo_in(txn, &run, &task) } else { Ok(()) }
        });
        Mutation::Custom(CustomMutation { label: "workflow.journal", apply })
    }
}

fn clear_memo_in(txn: &WriteTransaction, run: &str, task: &str) -> Result<(), StoreError> {
    let mut memo = txn.open_table(MEMO)?;
    let seqs: Vec<u32> = memo
        .range((run, task, 0)..=(run, task, u32::MAX))?
        .map(|r| r.map(|(k, _)| k.value().2))
        .collect::<Result<_, _>>()?;
    for seq in seqs {
        memo.remove((run, task, seq))?;
    }
    Ok(())
}

/// The write that drops the memo of `task` (an attempt failed: the next
/// one asks afresh).
pub fn clear_memo(run: &str, task: &str) -> Mutation {
    let (run, task) = (run.to_owned(), task.to_owned());
    let apply = Arc::new(move |txn: &WriteTransaction| clear_memo_in(txn, &run, &task));
    Mutation::Custom(CustomMutation { label: "workflow.memo.clear", apply })
}

fn read(
    store: &Store,
    table: TableDefinition<(&str, &str, u32), &str>,
    run: &str,
    task: &str,
) -> Result<Vec<JournalEntry>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(table)?;
    let mut out = Vec::new();
    for item in table.range((run, task, 0)..=(run, task, u32::MAX))? {
        let (k, v) = item?;
        out.push(serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
            what: format!("journal entry {run}/{task}#{}", k.value().2),
            detail: e.to_string(),
        })?);
    }
    Ok(out)
}

impl Store {
    /// The journal of `task` (`step` or `step.item`) of run `run`.
    pub fn journal(&self, run: &str, task: &str) -> Result<Vec<JournalEntry>, StoreError> {
        read(self, JOURNAL, run, task)
    }

    /// The input task `task` of run `run` was given.
    pub fn step_input(&self, run: &str, task: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(INPUTS)?.get((run, task))?.map(|v| v.value().to_owned()))
    }

    /// Model calls an interrupted attempt of `task` made.
    pub fn memo(&self, run: &str, task: &str) -> Result<Vec<JournalEntry>, StoreError> {
        read(self, MEMO, run, task)
    }
}

fn lock(journal: &SharedJournal) -> std::sync::MutexGuard<'_, StepJournal> {
    journal.lock().unwrap_or_else(|e| e.into_inner())
}

/// `wasi:clocks/wall-clock`, journaled.
pub struct JournaledWallClock(pub SharedJournal);

impl wasmtime_wasi::HostWallClock for JournaledWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let mut journal = lock(&self.0);
        if let Some(nanos) = journal.replayed("clock.wall", &Value::Null).and_then(|v| v.as_u64()) {
            return Duration::from_nanos(nanos);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        journal.record("clock.wall", Value::Null, Value::from(now.as_nanos() as u64));
        now
    }
}

/// `wasi:clocks/monotonic-clock`, journaled.
pub struct JournaledMonotonicClock {
    pub journal: SharedJournal,
    pub start: std::time::Instant,
}

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let mut journal = lock(&self.journal);
        if let Some(now) = journal.replayed("clock.monotonic", &Value::Null).and_then(|v| v.as_u64()) {
            return now;
        }
        let now = self.start.elapsed().as_nanos() as u64;
        journal.record("clock.monotonic", Value::Null, Value::from(now));
        now
    }
}

/// `wasi:random`, journaled: every value handed out is recorded.
pub struct JournaledRandom<R> {
    pub journal: SharedJournal,
    pub inner: R,
    pub op: &'static str,
}

impl<R: rand_core::Rng> rand_core::TryRng for JournaledRandom<R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut journal = lock(&self.journal);
        let recorded = journal.replayed(self.op, &Value::from("u32")).and_then(|v| v.as_u64());
        if let Some(v) = recorded.and_then(|v| u32::try_from(v).ok()) {
            return Ok(v);
        }
        let v = self.inner.next_u32();
        journal.record(self.op, Value::from("u32"), Value::from(v));
        Ok(v)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut journal = lock(&self.journal);
        if let Some(v) = journal.replayed(self.op, &Value::from("u64")).and_then(|v| v.as_u64()) {
            return Ok(v);
        }
        let v = self.inner.next_u64();
        journal.record(self.op, Value::from("u64"), Value::from(v));
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let mut journal = lock(&self.journal);
        let recorded = journal.replayed(self.op, &Value::from(dst.len()));
        let bytes = recorded.as_ref().and_then(Value::as_str).and_then(|h| hex::decode(h).ok());
        if let Some(bytes) = bytes.filter(|b| b.len() == dst.len()) {
            dst.copy_from_slice(&bytes);
            return Ok(());
        }
        self.inner.fill_bytes(dst);
        journal.record(self.op, Value::from(dst.len()), Value::from(hex::encode(&*dst)));
        Ok(())
    }
}
