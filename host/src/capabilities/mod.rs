//! One module per WIT interface: a borrowed view of the per-call state that
//! implements the bindgen `Host` trait, and `add_to_linker`. Each host
//! method opens a `keel.<capability>.<function>` span and asks the gate
//! before doing anything.

pub mod actions;
pub mod config;
pub mod log;
pub mod memory;
pub mod model;
pub mod model_stream;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};

use crate::runtime::HostState;
use crate::workflow::journal::SharedJournal;

/// Runs `call` and, for a workflow step, records `op` with its request and
/// result in the step's journal (or answers from the memo of an attempt a
/// crash interrupted; see `workflow::journal`).
/// `request` is the call's arguments as JSON, computed only when there is a
/// journal.
pub(crate) fn journaled<T: Serialize + DeserializeOwned + Stub>(
    journal: Option<&SharedJournal>,
    op: &str,
    request: Option<Value>,
    call: impl FnOnce() -> T,
) -> T {
    let (Some(journal), Some(request)) = (journal, request) else { return call() };
    if let Some(answer) = recorded_answer(journal, op, &request) {
        return answer;
    }
    let result = call();
    lock(journal).record(op, request, serde_json::to_value(&result).unwrap_or(Value::Null));
    result
}

/// [`journaled`] for host calls that wait.
pub(crate) async fn journaled_async<T: Serialize + DeserializeOwned + Stub, F: Future<Output = T>>(
    journal: Option<&SharedJournal>,
    op: &str,
    request: Option<Value>,
    call: impl FnOnce() -> F,
) -> T {
    let (Some(journal), Some(request)) = (journal, request) else { return call().await };
    if let Some(answer) = recorded_answer(journal, op, &request) {
        return answer;
    }
    let result = call().await;
    lock(journal).record(op, request, serde_json::to_value(&result).unwrap_or(Value::Null));
    result
}

/// A host call's answer that does not come from making it: replayed from
/// the journal, stubbed (a replay that diverged makes no effects), or
/// memoized from an interrupted attempt.
fn recorded_answer<T: DeserializeOwned + Stub>(journal: &SharedJournal, op: &str, request: &Value) -> Option<T> {
    let mut journal = lock(journal);
    if journal.is_replay() {
        if let Some(result) = journal.replayed(op, request) {
            return Some(serde_json::from_value(result).unwrap_or_else(|_| T::stub(op)));
        }
        return crate::workflow::journal::has_effects(op).then(|| T::stub(op));
    }
    journal.memo_for(op, request).and_then(|v| serde_json::from_value(v).ok())
}

/// What a host call answers when a replay does not make it.
pub(crate) trait Stub {
    fn stub(op: &str) -> Self;
}

impl<T> Stub for Result<T, crate::bindings::GuestError> {
    fn stub(op: &str) -> Self {
        Err(crate::bindings::GuestError::Unavailable(format!(
            "replay: `{op}` has effects, and a replay makes none once it leaves the recorded path"
        )))
    }
}

fn lock(journal: &SharedJournal) -> std::sync::MutexGuard<'_, crate::workflow::journal::StepJournal> {
    journal.lock().unwrap_or_else(|e| e.into_inner())
}

impl crate::bindings::keel::plugin::types::Host for HostState {}

/// Links every keel interface and WASI p2 into `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    crate::bindings::keel::plugin::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    log::add_to_linker(linker)?;
    memory::add_to_linker(linker)?;
    model::add_to_linker(linker)?;
    actions::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    Ok(())
}
