//! When a run fails or is cancelled: its actions that were not executed yet
//! are withdrawn, and the executed ones whose kinds declare a compensation
//! are undone in reverse order, each once (see `runtime::compensate`).
//! Also the operator's controls: pause, resume, cancel.

use super::WorkflowError;
use super::engine::update_run;
use super::runs::{Run, RunState, StepStatus};
use crate::kernel::outbox::{self, Intent, IntentState};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::runtime::Runtime;
use crate::runtime::compensate::Undo;

/// The order actions were taken in: step order in the run, then item, then
/// proposal number. Compensation goes backwards through it.
fn taken_order(run: &Run, intent: &Intent) -> (usize, u64, u64) {
    let rest = intent.key.strip_prefix(&format!("{}/", run.id)).unwrap_or_default();
    let (task, n) = rest.rsplit_once('/').unwrap_or((rest, "0"));
    let (step, item) = task.split_once('.').unwrap_or((task, "0"));
    let position = run.order.iter().position(|s| s == step).unwrap_or(usize::MAX);
    (position, item.parse().unwrap_or(0), n.parse().unwrap_or(0))
}

impl Runtime {
    /// Records that `step` failed for good and starts compensating the run.
    pub(super) async fn fail_run(&self, id: &str, step: &str, why: String) -> Result<(), WorkflowError> {
        tracing::warn!(run = id, step, %why, "run failed");
        let (step_id, note) = (step.to_owned(), why.clone());
        let mutation = update_run("workflow.fail", id, move |run| {
            if let Some(s) = run.steps.get_mut(&step_id) {
                s.status = StepStatus::Failed;
                s.error = Some(note.clone());
            }
            if !run.state.is_finished() {
                run.state = RunState::Compensating;
                run.finishing_as = Some(RunState::Failed);
                run.error = Some(note.clone());
                run.cursor = None;
            }
        });
        let entry = AuditEntry::denied("host", "workflow.step", format!("{id} {step}"), why);
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        Ok(())
    }

    /// Withdraws the run's actions that did not execute, undoes the
    /// executed ones newest first, then finishes the run as it was meant
    /// to (failed or cancelled). Stops early, leaving the run compensating,
    /// while the kill switch is on.
    pub async fn compensate_run(&self, id: &str) -> Result<Run, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if run.state != RunState::Compensating {
            return Ok(run);
        }
        let mut intents = self.store().intents_with_prefix(&format!("{id}/"))?;
        self.withdraw(&intents).await?;
        intents.retain(|i| i.state == IntentState::Executed);
        intents.sort_by_key(|i| std::cmp::Reverse(taken_order(&run, i)));
        let mut failures = Vec::new();
        let mut undone = 0;
        for intent in &intents {
            match self.compensate(&intent.key).await? {
                Undo::Done => undone += 1,
                Undo::NothingToUndo => {}
                Undo::Blocked => {
                    tracing::warn!(run = id, "compensation waits for the kill switch to be lifted");
                    return Ok(run);
                }
                Undo::Failed(why) => failures.push(why),
            }
        }
        let end = match run.finishing_as.unwrap_or(RunState::Failed) {
            RunState::Failed if undone > 0 && failures.is_empty() => RunState::Compensated,
            end => end,
        };
        let error = match (run.error.clone(), failures.is_empty()) {
            (error, true) => error,
            (error, false) => Some(format!(
                "{}compensation incomplete: {} (see `keel outbox`)",
                error.map(|e| format!("{e}; ")).unwrap_or_default(),
                failures.join("; ")
            )),
        };
        self.finish_run(&run, end, error).await
    }

    /// Rejects intents of a stopping run that have not started, so nothing
    /// more happens on its behalf.
    async fn withdraw(&self, intents: &[Intent]) -> Result<(), WorkflowError> {
        let open: Vec<String> = intents
            .iter()
            .filter(|i| matches!(i.state, IntentState::AwaitingApproval | IntentState::Ready))
            .map(|i| i.key.clone())
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let keys = open.clone();
        let apply = std::sync::Arc::new(move |txn: &redb::WriteTransaction| {
            for key in &keys {
                outbox::transition_in(
                    txn,
                    key,
                    &[IntentState::AwaitingApproval, IntentState::Ready],
                    IntentState::Rejected,
                    |i| i.note = Some("withdrawn: its run failed or was cancelled".into()),
                )?;
            }
            Ok(())
        });
        let mutation = Mutation::Custom(CustomMutation { label: "outbox.withdraw", apply });
        let entries = open
            .iter()
            .map(|k| AuditEntry::allowed("host", "actions.withdraw", k.as_str()).with_reason("its run is stopping"))
            .collect();
        self.store().commit(Batch { mutations: vec![mutation], audit: entries }).await?;
        Ok(())
    }

    /// Cancels run `id`: its pending actions are withdrawn and executed
    /// ones compensated. Audited.
    pub async fn cancel_run(&self, id: &str, reason: &str) -> Result<Run, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if run.state.is_finished() {
            return Err(WorkflowError::Finished { id: id.to_owned(), state: run.state });
        }
        let mutation = update_run("workflow.cancel", id, |run| {
            if !run.state.is_finished() {
                run.state = RunState::Compensating;
                run.finishing_as = Some(RunState::Cancelled);
                run.cursor = None;
                run.paused_from = None;
            }
        });
        let entry = AuditEntry::allowed("operator", "workflow.cancel", id).with_reason(reason);
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        self.compensate_run(id).await
    }

    /// Pauses run `id` after its current step. Audited.
    pub async fn pause_run(&self, id: &str) -> Result<Run, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if !matches!(run.state, RunState::Running | RunState::WaitingApproval) {
            return Err(WorkflowError::NotPausable { id: id.to_owned(), state: run.state });
        }
        let mutation = update_run("workflow.pause", id, |run| {
            if matches!(run.state, RunState::Running | RunState::WaitingApproval) {
                run.paused_from = Some(run.state);
                run.state = RunState::Paused;
            }
        });
        let entry = AuditEntry::allowed("operator", "workflow.pause", id);
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        Ok(self.store().run(id)?.unwrap_or(run))
    }

    /// Resumes a paused run where it stopped and drives it. Audited.
    pub async fn resume_run(&self, id: &str) -> Result<Run, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if run.state != RunState::Paused {
            return Err(WorkflowError::NotPaused { id: id.to_owned(), state: run.state });
        }
        let mutation = update_run("workflow.resume", id, |run| {
            if run.state == RunState::Paused {
                run.state = run.paused_from.take().unwrap_or(RunState::Running);
            }
        });
        let entry = AuditEntry::allowed("operator", "workflow.resume", id);
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        self.drive_run(id).await
    }
}
