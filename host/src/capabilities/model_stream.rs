//! `completion-stream` (`model.wit`): a completion read piece by piece.
//!
//! Outside workflow steps the completion runs in a task of its own, which
//! passes each piece through a channel as the provider's server-sent events
//! arrive; `next` reads them. The task is
//! [`ModelService::complete_streamed`](crate::model::ModelService::complete_streamed):
//! the same routing, budgets, cache and costs as `complete`. What it spent
//! is recorded once, by the `next` that finds the end or by `finish`; a
//! stream dropped before that is recorded when its task ends.
//!
//! In a workflow step the answer is the journaled `complete` (so replays
//! and resumes see the recorded answer), handed out as one piece.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::model::Completion;
use crate::kernel::{Caller, Gate};
use crate::memory::Store;
use crate::model::{Completed, Metered};

/// The host side of one `completion-stream`.
pub struct CompletionStream {
    pieces: mpsc::UnboundedReceiver<String>,
    /// The completion's task, until its outcome is taken.
    task: Option<JoinHandle<Metered<Completed>>>,
    /// The outcome, once known (its spend already handed to the gate).
    outcome: Option<Result<Completion, GuestError>>,
    /// Whose spend it is, and where a dropped stream's spend goes.
    caller: Caller,
    store: Arc<Store>,
}

impl CompletionStream {
    /// A stream fed by `task` through the channel whose receiver is `pieces`.
    pub fn live(
        pieces: mpsc::UnboundedReceiver<String>,
        task: JoinHandle<Metered<Completed>>,
        caller: Caller,
        store: Arc<Store>,
    ) -> CompletionStream {
        CompletionStream { pieces, task: Some(task), outcome: None, caller, store }
    }

    /// A stream of an answer known at once: its text as one piece.
    pub fn whole(outcome: Result<Completion, GuestError>, caller: Caller, store: Arc<Store>) -> CompletionStream {
        let (tx, pieces) = mpsc::unbounded_channel();
        if let Ok(completion) = &outcome
            && !completion.text.is_empty()
        {
            let _ = tx.send(completion.text.clone());
        }
        CompletionStream { pieces, task: None, outcome: Some(outcome), caller, store }
    }

    /// The next piece; `None` at the end, or the completion's error.
    pub async fn next_piece(&mut self, gate: &Gate) -> Result<Option<String>, GuestError> {
        if let Some(piece) = self.pieces.recv().await {
            return Ok(Some(piece));
        }
        self.settle(gate).await.map(|_| None)
    }

    /// The whole completion, waiting for the task if it still runs.
    pub async fn finish(&mut self, gate: &Gate) -> Result<Completion, GuestError> {
        self.settle(gate).await
    }

    async fn settle(&mut self, gate: &Gate) -> Result<Completion, GuestError> {
        if let Some(task) = self.task.take() {
            let outcome = match task.await {
                Ok(metered) => {
                    gate.record_now(self.caller.stamp(metered.record));
                    metered.result.map(super::model::completion)
                }
                Err(e) => Err(GuestError::Unavailable(format!("the completion stopped: {e}"))),
            };
            self.outcome = Some(outcome);
        }
        self.outcome.clone().unwrap_or_else(|| Err(GuestError::Unavailable("the completion stopped".into())))
    }
}

impl Drop for CompletionStream {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let (caller, store) = (self.caller.clone(), self.store.clone());
        match tokio::runtime::Handle::try_current() {
            // The model keeps answering; what it used is charged when it is done.
            Ok(runtime) => drop(runtime.spawn(async move {
                if let Ok(metered) = task.await {
                    store.enqueue(caller.stamp(metered.record));
                }
            })),
            Err(_) => task.abort(),
        }
    }
}
