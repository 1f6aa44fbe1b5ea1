//! Driving runs: each step is one agent call whose output, next-step
//! pointer and audit entry land in the same commit as the step's own
//! writes and proposals, so a crash leaves a step either done (with all its
//! effects queued) or not done at all. A run picked up after a restart
//! continues at its cursor; a step that was running is run again under the
//! same task id, so its proposals keep their keys.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::WriteTransaction;
use serde_json::Value;

use super::WorkflowError;
use super::definition::{self, AgentCheck, Next, RefContext, StepDef, WorkflowDef};
use super::journal::{self, StepJournal};
use super::runs::{self, Run, RunState, StepRun, StepStatus};
use crate::bindings::{Outcome, Task};
use crate::kernel::outbox::IntentState;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{AuditedMutation, Batch, CustomMutation, Mutation};
use crate::memory::now_ms;
use crate::runtime::{CallError, Runtime, StepContext};

/// The definition a run started with.
pub fn definition_of(store: &crate::memory::Store, run: &Run) -> Result<WorkflowDef, WorkflowError> {
    let text = store.run_definition(run)?;
    definition::parse(Path::new(&run.source), &text, &|_| AgentCheck::Agent)
        .map_err(|e| WorkflowError::Definition(e.to_string()))
}

/// Most parsed definitions a runtime keeps; past it the cache starts over.
const MAX_PARSED_DEFINITIONS: usize = 256;

/// A step's output as JSON (text that is not JSON becomes a JSON string).
fn output_value(outcome: &Outcome) -> Value {
    serde_json::from_str(&outcome.output).unwrap_or_else(|_| Value::String(outcome.output.clone()))
}

/// Changes run `id` inside the committing transaction.
pub(super) fn update_run(label: &'static str, id: &str, change: impl Fn(&mut Run) + Send + Sync + 'static) -> Mutation {
    let id = id.to_owned();
    let apply = Arc::new(move |txn: &WriteTransaction| {
        runs::update_in(txn, &id, |run| {
            change(run);
            run.updated_at_ms = now_ms();
        })
        .map(drop)
    });
    Mutation::Custom(CustomMutation { label, apply })
}

/// The step after `step` given its output.
fn next_step(step: &StepDef, output: &Value) -> Option<String> {
    let target = match &step.next {
        Next::End => return None,
        Next::Step(id) => id.clone(),
        Next::Branch { on, cases, default } => {
            let value = definition::lookup(output, on);
            let key = value.map(definition::render_branch_value);
            key.and_then(|k| cases.get(&k).cloned()).unwrap_or_else(|| default.clone())
        }
    };
    (target != "end").then_some(target)
}

impl Runtime {
    /// Records a new run of `def` (read from `text`) and returns it; drive
    /// it with [`Runtime::drive_run`].
    pub async fn start_run(
        &self,
        def: &WorkflowDef,
        text: &str,
        input: Value,
        trigger: &str,
        actor: &str,
    ) -> Result<Run, WorkflowError> {
        if trigger != "manual"
            && let Some(paused) = self.store().paused_workflows()?.remove(&def.name)
        {
            return Err(WorkflowError::Paused { name: def.name.clone(), reason: paused.reason });
        }
        let now = now_ms();
        let run = Run {
            id: runs::new_run_id(),
            workflow: def.name.clone(),
            definition: String::new(),
            definition_sha256: Some(crate::runtime::sha256_hex(text.as_bytes())),
            source: def.source.display().to_string(),
            trigger: trigger.to_owned(),
            input,
            state: RunState::Running,
            cursor: Some(def.entry().to_owned()),
            order: Vec::new(),
            steps: BTreeMap::new(),
            error: None,
            paused_from: None,
            finishing_as: None,
            waiting_on: Vec::new(),
            created_at_ms: now,
            updated_at_ms: now,
            finished_at_ms: None,
        };
        let entry = AuditEntry::allowed(actor, "workflow.start", format!("{} {}", def.name, run.id))
            .with_reason(format!("trigger: {trigger}"));
        let sha256 = run.definition_sha256.clone().expect("set above");
        let mutations = vec![runs::put_definition(sha256, text.to_owned()), runs::put(run.clone())];
        self.store().commit(Batch { mutations, audit: vec![entry] }).await?;
        Ok(run)
    }

    /// Runs run `id` until it finishes, waits for the operator, or is
    /// paused or cancelled; returns it as it is then. Its steps' spans are
    /// children of one `keel.workflow.run` span (one trace over OTLP).
    #[tracing::instrument(name = "keel.workflow.run", skip_all, fields(run = %id))]
    pub async fn drive_run(&self, id: &str) -> Result<Run, WorkflowError> {
        // A run's definition never changes: parse it once.
        let mut def: Option<Arc<WorkflowDef>> = None;
        let mut stepped = false;
        loop {
            let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
            match run.state {
                RunState::Running => {}
                RunState::Compensating => return self.compensate_run(id).await,
                RunState::WaitingApproval => return self.continue_if_decided(id).await,
                // The last step's commit finished the run (see `finish_step`).
                RunState::Succeeded if stepped => {
                    self.after_finish(&run).await?;
                    return Ok(run);
                }
                _ => return Ok(run),
            }
            // The last finished step's actions are settled before the run
            // moves on, also when the process that ran it died right after
            // its commit.
            let last =
                run.order.last().filter(|s| run.steps.get(*s).is_some_and(|s| s.status == StepStatus::Succeeded));
            if let Some(last) = last {
                match self.after_step(id, last).await? {
                    Settled::NoActions => {}
                    Settled::Waiting(run) => return Ok(*run),
                    // Executing may have failed the run: look again.
                    Settled::Executed => {
                        if self.store().run(id)?.map(|r| r.state) != Some(RunState::Running) {
                            continue;
                        }
                    }
                }
            }
            let Some(cursor) = run.cursor.clone() else {
                return self.finish_run(&run, RunState::Succeeded, None).await;
            };
            if def.is_none() {
                def = Some(self.run_definition(&run)?);
            }
            let step = def
                .as_ref()
                .expect("parsed above")
                .step(&cursor)
                .ok_or_else(|| {
                    WorkflowError::Definition(format!("run {id} points at step `{cursor}`, which its definition lacks"))
                })?
                .clone();
            stepped = true;
            if let Err(why) = self.run_step(&run, &step).await {
                self.fail_run(id, &step.id, why).await?;
            }
        }
    }

    /// The definition `run` started with, parsed once per process (runs
    /// name theirs by sha256, so many runs share one).
    fn run_definition(&self, run: &Run) -> Result<Arc<WorkflowDef>, WorkflowError> {
        let Some(sha256) = &run.definition_sha256 else { return definition_of(self.store(), run).map(Arc::new) };
        let key = format!("{sha256} {}", run.source);
        let cache = self.parsed_definitions();
        if let Some(def) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(def.clone());
        }
        let def = Arc::new(definition_of(self.store(), run)?);
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_PARSED_DEFINITIONS {
            cache.clear();
        }
        cache.insert(key, def.clone());
        Ok(def)
    }

    /// Runs `step` of `run` with its retries; its success is committed by
    /// the call itself. Returns why it failed for good.
    async fn run_step(&self, run: &Run, step: &StepDef) -> Result<(), String> {
        let outputs: BTreeMap<String, Value> =
            run.steps.iter().filter_map(|(id, s)| s.output.clone().map(|o| (id.clone(), o))).collect();
        let ctx = RefContext { trigger: &run.input, outputs: &outputs, item: None, run_id: &run.id };
        let Some(each) = &step.for_each else {
            let input = Self::step_input(step, &ctx)?;
            return self.attempts(run, step, None, input).await;
        };
        let items = match definition::resolve_reference(each, &ctx)? {
            Value::Array(items) => items,
            other => return Err(format!("step `{}`: for_each must name an array, got {other}", step.id)),
        };
        let done = run.steps.get(&step.id).map(|s| s.items.clone()).unwrap_or_default();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(step.max_parallel as usize));
        let mut pending = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let index = index as u32;
            if done.contains_key(&index) {
                continue;
            }
            let ctx = RefContext { item: Some(item), ..ctx };
            let input = Self::step_input(step, &ctx)?;
            let semaphore = semaphore.clone();
            pending.push(async move {
                let _permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
                self.attempts(run, step, Some(index), input).await
            });
        }
        for result in futures::future::join_all(pending).await {
            result?;
        }
        // Every item is in: the step's output is their outputs, in order.
        let total = items.len() as u32;
        let step_def = step.clone();
        let mutation = update_run("workflow.fan-in", &run.id, move |run| {
            let Some(s) = run.steps.get_mut(&step_def.id) else { return };
            let outputs: Vec<Value> = (0..total).filter_map(|i| s.items.get(&i).cloned()).collect();
            let output = Value::Array(outputs);
            s.status = StepStatus::Succeeded;
            s.finished_at_ms = Some(now_ms());
            if run.state == RunState::Running || run.state == RunState::Paused {
                run.cursor = next_step(&step_def, &output);
            }
            s.output = Some(output);
        });
        let entry = AuditEntry::allowed("host", "workflow.step", format!("{} {}", run.id, step.id))
            .with_reason(format!("{total} items done"));
        self.store()
            .commit(Batch { mutations: vec![mutation], audit: vec![entry] })
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The step's input: its template (made explicit at load) resolved.
    fn step_input(step: &StepDef, ctx: &RefContext<'_>) -> Result<String, String> {
        let template = step.input.as_ref().ok_or_else(|| format!("step `{}` has no input template", step.id))?;
        let value = definition::resolve(template, ctx).map_err(|e| format!("step `{}` input: {e}", step.id))?;
        Ok(value.to_string())
    }

    /// Attempts one call (of a step, or one item of a fan-out step) until
    /// it succeeds or its retries are used up.
    async fn attempts(&self, run: &Run, step: &StepDef, item: Option<u32>, input: String) -> Result<(), String> {
        let task_key = match item {
            None => step.id.clone(),
            Some(i) => format!("{}.{i}", step.id),
        };
        let task_id = format!("{}/{task_key}", run.id);
        let mut last = String::new();
        let mut version = String::new();
        for attempt in 1..=step.retry.attempts {
            if attempt > 1 {
                tokio::time::sleep(step.retry.delay(attempt - 1)).await;
            }
            let plugin = self.prepare(&step.agent, &()).map_err(|e| e.to_string())?;
            version.clone_from(&plugin.record.version);
            let started = StepAttempt { version: version.clone(), attempt, at_ms: now_ms() };
            let finish = finish_step(&run.id, step.clone(), item, started);
            let task = Task { id: task_id.clone(), input: input.clone(), run_id: Some(run.id.clone()) };
            // Model answers of an attempt a crash interrupted are fed back.
            let memo = self.store().memo(&run.id, &task_key).map_err(|e| e.to_string())?;
            let journal = StepJournal::new(&run.id, &task_key, memo).shared();
            let recorded = journal.clone();
            let finish_and_journal = |outcome: &Outcome| {
                let journal = recorded.lock().unwrap_or_else(|e| e.into_inner());
                // A step that proposed actions settles them before the run
                // may finish.
                let proposed = journal.entries().iter().any(|e| e.op == "actions.propose");
                let (mut mutations, entry) = finish(outcome, proposed);
                mutations.push(journal.commit(&input));
                (mutations, entry)
            };
            let step_context = StepContext { workflow: run.workflow.clone(), journal, dry_run: false };
            let call = self.call_task(&plugin, task, Some(&finish_and_journal), Some(step_context));
            let result = match step.timeout_ms {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), call).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::Timeout { plugin: step.agent.clone(), limit_ms: u128::from(ms) }),
                },
                None => call.await,
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(run = %run.id, step = %step.id, attempt, error = %e, "step attempt failed");
                    last = format!("attempt {attempt} of {}: {e}", step.retry.attempts);
                    // The next attempt asks the models afresh.
                    let clear = Batch { mutations: vec![journal::clear_memo(&run.id, &task_key)], audit: vec![] };
                    self.store().commit(clear).await.map_err(|e| e.to_string())?;
                }
            }
        }
        let why = format!("step `{}` failed: {last}", step.id);
        // The failure is recorded with the attempts made (a success records
        // them with its output).
        let (id, agent, attempts) = (step.id.clone(), step.agent.clone(), step.retry.attempts);
        let mutation = update_run("workflow.step-attempts", &run.id, move |run| {
            step_entry(run, &id, &agent, &version, now_ms()).attempts = attempts;
        });
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![] }).await.map_err(|e| e.to_string())?;
        Err(why)
    }

    /// After a step committed: executes its allowed actions, fails the run
    /// if one failed, and parks the run if some wait for the operator (or
    /// the kill switch). Returns the run when it stopped there. Safe to
    /// repeat: executed actions are not executed again.
    async fn after_step(&self, id: &str, step: &str) -> Result<Settled, WorkflowError> {
        let keys: Vec<String> = step_intents(self, id, step)?.into_iter().map(|i| i.key).collect();
        if keys.is_empty() {
            return Ok(Settled::NoActions);
        }
        self.execute_keys(&keys).await?;
        let intents = step_intents(self, id, step)?;
        if let Some(failed) =
            intents.iter().find(|i| matches!(i.state, IntentState::Failed | IntentState::NeedsReconcile))
        {
            let why = format!(
                "action {} ({}) is {}: {}",
                failed.key,
                failed.proposal.kind,
                failed.state.as_str(),
                failed.note.clone().unwrap_or_default()
            );
            self.fail_run(id, step, why).await?;
            return Ok(Settled::Executed);
        }
        let waiting: Vec<String> = intents
            .iter()
            .filter(|i| matches!(i.state, IntentState::AwaitingApproval | IntentState::Ready | IntentState::Sending))
            .map(|i| i.key.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(Settled::Executed);
        }
        let keys = waiting.clone();
        let mutation = update_run("workflow.wait", id, move |run| {
            if run.state == RunState::Running {
                run.state = RunState::WaitingApproval;
                run.waiting_on = keys.clone();
            }
        });
        let entry = AuditEntry::allowed("host", "workflow.wait", id)
            .with_reason(format!("waiting for the operator on {}", waiting.join(", ")));
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        match self.store().run(id)? {
            Some(run) => Ok(Settled::Waiting(Box::new(run))),
            None => Err(WorkflowError::NoSuchRun(id.to_owned())),
        }
    }

    /// Continues a run waiting on the operator once every intent it waits
    /// on is decided and executed (a rejected one does not stop the run).
    pub async fn continue_if_decided(&self, id: &str) -> Result<Run, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if run.state != RunState::WaitingApproval {
            return Ok(run);
        }
        self.execute_keys(&run.waiting_on).await?;
        let mut pending = Vec::new();
        for key in &run.waiting_on {
            let Some(intent) = self.store().intent(key)? else { continue };
            match intent.state {
                IntentState::AwaitingApproval | IntentState::Ready | IntentState::Sending => pending.push(key.clone()),
                IntentState::Failed | IntentState::NeedsReconcile => {
                    let step = run.order.last().cloned().unwrap_or_default();
                    let why = format!("action {key} ({}) is {}", intent.proposal.kind, intent.state.as_str());
                    self.fail_run(id, &step, why).await?;
                    return Box::pin(self.drive_run(id)).await;
                }
                IntentState::Executed | IntentState::Rejected => {}
            }
        }
        if !pending.is_empty() {
            return Ok(run);
        }
        let mutation = update_run("workflow.continue", id, |run| {
            if run.state == RunState::WaitingApproval {
                run.state = RunState::Running;
                run.waiting_on.clear();
            }
        });
        let entry = AuditEntry::allowed("host", "workflow.continue", id).with_reason("every awaited action is decided");
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        Box::pin(self.drive_run(id)).await
    }

    /// Continues every unfinished run (after a crash or restart): running
    /// runs from their cursor and compensating ones where they stopped,
    /// concurrently up to each workflow's limit; then waiting runs whose
    /// actions were decided. Returns the runs as they are afterwards.
    pub async fn recover_runs(&self) -> Result<Vec<Run>, WorkflowError> {
        let unfinished = self.unfinished_runs()?;
        self.recover_listed(unfinished).await
    }

    /// The runs [`Runtime::recover_runs`] would continue: running and
    /// compensating ones. `keel serve` lists them before it accepts
    /// requests, so a run a webhook starts is never driven twice.
    pub fn unfinished_runs(&self) -> Result<Vec<Run>, WorkflowError> {
        let mut unfinished = self.store().runs_in(RunState::Running, usize::MAX)?;
        unfinished.extend(self.store().runs_in(RunState::Compensating, usize::MAX)?);
        Ok(unfinished)
    }

    /// [`Runtime::recover_runs`] for the runs listed earlier.
    pub async fn recover_listed(&self, unfinished: Vec<Run>) -> Result<Vec<Run>, WorkflowError> {
        self.settle_interrupted().await?;
        let mut limits: BTreeMap<String, Arc<tokio::sync::Semaphore>> = BTreeMap::new();
        let mut drives = Vec::new();
        for run in &unfinished {
            let limit = self.run_definition(run).map_or(1, |d| d.limits.concurrency as usize);
            let semaphore = limits
                .entry(run.workflow.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit)))
                .clone();
            let id = run.id.clone();
            drives.push(async move {
                let _per_workflow = semaphore.acquire_owned().await;
                let _global = self.run_slot().await;
                tracing::info!(run = %id, "continuing an unfinished run");
                self.drive_run(&id).await
            });
        }
        let mut out = Vec::new();
        for result in futures::future::join_all(drives).await {
            out.push(result?);
        }
        for result in self.continue_waiting_runs(usize::MAX).await? {
            out.push(result?);
        }
        Ok(out)
    }

    /// [`Runtime::continue_if_decided`] for up to `limit` runs waiting on the
    /// operator, oldest first; one result per run, so one run's failure does
    /// not keep the others waiting.
    pub async fn continue_waiting_runs(&self, limit: usize) -> Result<Vec<Result<Run, WorkflowError>>, WorkflowError> {
        let mut out = Vec::new();
        for run in self.store().runs_in(RunState::WaitingApproval, limit)? {
            out.push(self.continue_if_decided(&run.id).await);
        }
        Ok(out)
    }

    /// Marks `run` finished as `state`.
    pub(super) async fn finish_run(
        &self,
        run: &Run,
        state: RunState,
        error: Option<String>,
    ) -> Result<Run, WorkflowError> {
        let note = error.clone();
        let mutation = update_run("workflow.finish", &run.id, move |run| mark_finished(run, state, note.clone()));
        let entry = finish_entry(run, state, error.as_deref());
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        self.after_finish(run).await?;
        self.store().run(&run.id)?.ok_or_else(|| WorkflowError::NoSuchRun(run.id.clone()))
    }

    /// What follows a run's finish: a background workflow is judged on
    /// its spend.
    async fn after_finish(&self, run: &Run) -> Result<(), WorkflowError> {
        if run.trigger != "manual" {
            self.prune_if_costly(&run.workflow).await?;
        }
        Ok(())
    }
}

/// The audit entry of `run` finishing as `state`.
fn finish_entry(run: &Run, state: RunState, error: Option<&str>) -> AuditEntry {
    let target = format!("{} {}", run.workflow, run.id);
    match (state, error) {
        (RunState::Succeeded, _) => AuditEntry::allowed("host", "workflow.finish", target).with_reason("succeeded"),
        (_, Some(why)) => AuditEntry::denied("host", "workflow.finish", target, format!("{}: {why}", state.as_str())),
        (_, None) => AuditEntry::allowed("host", "workflow.finish", target).with_reason(state.as_str()),
    }
}

/// Marks `run` finished as `state`, noting `error` if any.
fn mark_finished(run: &mut Run, state: RunState, error: Option<String>) {
    run.state = state;
    run.cursor = None;
    run.finishing_as = None;
    run.waiting_on.clear();
    run.finished_at_ms = Some(now_ms());
    if error.is_some() {
        run.error = error;
    }
}

/// What settling a finished step's actions left.
enum Settled {
    /// The step proposed nothing.
    NoActions,
    /// Its actions ran (or failed the run): the run may have changed.
    Executed,
    /// The run now waits for the operator.
    Waiting(Box<Run>),
}

/// One attempt of a step: which version of its agent, which attempt, when.
#[derive(Debug, Clone)]
struct StepAttempt {
    version: String,
    attempt: u32,
    at_ms: u64,
}

/// The run's record of step `id`, made (and put in the run's order) on
/// first use: a step is recorded when an attempt ends, not when it starts,
/// which saves a commit per step.
fn step_entry<'r>(run: &'r mut Run, id: &str, agent: &str, version: &str, at_ms: u64) -> &'r mut StepRun {
    if !run.order.iter().any(|s| s == id) {
        run.order.push(id.to_owned());
    }
    run.steps.entry(id.to_owned()).or_insert_with(|| StepRun {
        status: StepStatus::Running,
        agent: agent.to_owned(),
        version: version.to_owned(),
        attempts: 0,
        output: None,
        items: BTreeMap::new(),
        error: None,
        started_at_ms: at_ms,
        finished_at_ms: None,
    })
}

/// The writes that record a successful call of `step` (or of one item of
/// it): its output, the next step, an audit entry. When the step is the
/// run's last and proposed nothing, the same commit also finishes the run
/// (succeeded, with its `workflow.finish` entry) if it is still running
/// then: a pause or cancel that landed during the step keeps it from
/// finishing, as before.
fn finish_step(
    run_id: &str,
    step: StepDef,
    item: Option<u32>,
    started: StepAttempt,
) -> impl Fn(&Outcome, bool) -> (Vec<Mutation>, AuditEntry) + Send + Sync + use<> {
    let run_id = run_id.to_owned();
    move |outcome: &Outcome, proposed: bool| {
        let output = output_value(outcome);
        let next = next_step(&step, &output);
        let finishes = item.is_none() && next.is_none() && !proposed;
        let (step, started, id) = (step.clone(), started.clone(), run_id.clone());
        let target = match item {
            None => format!("{run_id} {}", step.id),
            Some(i) => format!("{run_id} {}.{i}", step.id),
        };
        let record = move |run: &mut Run| {
            let s = step_entry(run, &step.id, &step.agent, &started.version, started.at_ms);
            s.version = started.version.clone();
            s.attempts = s.attempts.max(started.attempt);
            s.started_at_ms = s.started_at_ms.min(started.at_ms);
            match item {
                Some(i) => drop(s.items.insert(i, output.clone())),
                None => {
                    s.status = StepStatus::Succeeded;
                    s.output = Some(output.clone());
                    s.error = None;
                    s.finished_at_ms = Some(now_ms());
                    if matches!(run.state, RunState::Running | RunState::Paused) {
                        run.cursor = next.clone();
                    }
                }
            }
        };
        let mutation = if finishes {
            let apply = Arc::new(move |txn: &WriteTransaction| {
                let mut entry = None;
                runs::update_in(txn, &id, |run| {
                    record(run);
                    run.updated_at_ms = now_ms();
                    if run.state == RunState::Running {
                        mark_finished(run, RunState::Succeeded, None);
                        entry = Some(finish_entry(run, RunState::Succeeded, None));
                    }
                })?;
                Ok(entry.into_iter().collect())
            });
            Mutation::Audited(AuditedMutation { label: "workflow.step", apply })
        } else {
            update_run("workflow.step", &id, record)
        };
        (vec![mutation], AuditEntry::allowed("host", "workflow.step", target).with_reason("succeeded"))
    }
}

/// The intents proposed by `step` of run `id` (its items' too).
pub(super) fn step_intents(
    runtime: &Runtime,
    id: &str,
    step: &str,
) -> Result<Vec<crate::kernel::outbox::Intent>, crate::memory::StoreError> {
    let prefix = format!("{id}/{step}");
    let all = runtime.store().intents_with_prefix(&prefix)?;
    Ok(all.into_iter().filter(|i| matches!(i.key.as_bytes().get(prefix.len()), Some(b'/' | b'.'))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Store;

    const TWO_STEPS: &str = "[[steps]]\nid = \"one\"\nagent = \"a\"\n\n[[steps]]\nid = \"two\"\nagent = \"a\"\n";

    fn store_with_run(state: RunState, cursor: &str) -> (tempfile::TempDir, Store, Run, WorkflowDef) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let def = definition::parse(Path::new("workflows/t.toml"), TWO_STEPS, &|_| AgentCheck::Agent).unwrap();
        let run = Run {
            id: runs::new_run_id(),
            workflow: "t".into(),
            definition: TWO_STEPS.into(),
            definition_sha256: None,
            source: "workflows/t.toml".into(),
            trigger: "manual".into(),
            input: Value::Null,
            state,
            cursor: Some(cursor.into()),
            order: Vec::new(),
            steps: BTreeMap::new(),
            error: None,
            paused_from: (state == RunState::Paused).then_some(RunState::Running),
            finishing_as: None,
            waiting_on: Vec::new(),
            created_at_ms: 1,
            updated_at_ms: 1,
            finished_at_ms: None,
        };
        store.commit_blocking(Batch { mutations: vec![runs::put(run.clone())], audit: vec![] }).unwrap();
        (dir, store, run, def)
    }

    /// Commits step `id`'s success as a call's commit would; returns the
    /// run and the operations audited by that commit.
    fn commit_step(store: &Store, run: &Run, def: &WorkflowDef, id: &str, proposed: bool) -> (Run, Vec<String>) {
        let step = def.step(id).unwrap().clone();
        let started = StepAttempt { version: "1".into(), attempt: 1, at_ms: 2 };
        let finish = finish_step(&run.id, step, None, started);
        let (mutations, entry) = finish(&Outcome { output: "{}".into() }, proposed);
        let receipt = store.commit_blocking(Batch { mutations, audit: vec![entry] }).unwrap();
        let ops = receipt.audit_seqs.iter().map(|s| store.audit_get(*s).unwrap().unwrap().operation).collect();
        (store.run(&run.id).unwrap().unwrap(), ops)
    }

    #[test]
    fn the_last_steps_commit_finishes_a_running_run_with_one_finish_entry() {
        let (_dir, store, run, def) = store_with_run(RunState::Running, "one");
        let (after, ops) = commit_step(&store, &run, &def, "one", false);
        assert_eq!((after.state, after.cursor.as_deref()), (RunState::Running, Some("two")));
        assert_eq!(ops, ["workflow.step"], "not the last step: the run goes on");

        let (after, ops) = commit_step(&store, &after, &def, "two", false);
        assert_eq!((after.state, after.cursor), (RunState::Succeeded, None));
        assert!(after.finished_at_ms.is_some());
        assert_eq!(after.steps["two"].status, StepStatus::Succeeded);
        assert_eq!(ops, ["workflow.step", "workflow.finish"], "step and finish land in one commit, in that order");
        let finish = store.audit_tail(1).unwrap().remove(0);
        assert_eq!((finish.target, finish.reason.as_deref()), (format!("t {}", run.id), Some("succeeded")));
        assert_eq!(store.runs_in(RunState::Succeeded, 10).unwrap().len(), 1, "the state index follows");
        assert!(store.runs_in(RunState::Running, 10).unwrap().is_empty());
    }

    #[test]
    fn a_last_step_that_proposed_or_a_paused_run_does_not_finish_in_the_steps_commit() {
        let (_dir, store, run, def) = store_with_run(RunState::Running, "two");
        let (after, ops) = commit_step(&store, &run, &def, "two", true);
        assert_eq!((after.state, after.cursor), (RunState::Running, None), "its actions are settled first");
        assert_eq!(ops, ["workflow.step"]);

        // Paused (or cancelled) while the last step ran: the step lands,
        // the run stays put, and nothing is audited as finished.
        let (_dir, store, run, def) = store_with_run(RunState::Paused, "two");
        let (after, ops) = commit_step(&store, &run, &def, "two", false);
        assert_eq!((after.state, after.cursor), (RunState::Paused, None));
        assert_eq!(ops, ["workflow.step"]);
    }
}
