//! `keel:plugin/model`: language-model calls. The gate checks the tier
//! grant; the workspace's [`ModelService`] routes, meters and caches. What a
//! call spent is recorded whatever becomes of the plugin's call.

use tokio::sync::mpsc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::journaled_async;
use super::model_stream::CompletionStream;
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::model::{self, Completion, CompletionRequest, Role, Usage};
use crate::kernel::{Caller, Gate, Request};
use crate::model::provider::{self, ChatRequest, Message, PieceSink};
use crate::model::{CallScope, Completed, Urgency};
use crate::runtime::HostState;
use crate::workflow::journal::{ModelAnswer, SharedJournal};

pub struct ModelView<'a> {
    pub calls: ModelCalls<'a>,
    /// Holds the plugin's completion streams.
    pub table: &'a mut ResourceTable,
}

/// What a model call needs of the call's state; shared references only, so
/// the futures that hold it across awaits stay `Send` (the resource table
/// is not `Sync`).
#[derive(Clone, Copy)]
pub struct ModelCalls<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub run_id: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub journal: Option<&'a SharedJournal>,
}

struct ModelCapability;

impl HasData for ModelCapability {
    type Data<'a> = ModelView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    model::add_to_linker::<HostState, ModelCapability>(linker, |s| ModelView {
        calls: ModelCalls {
            caller: &s.caller,
            gate: &s.gate,
            run_id: s.run_id.as_deref(),
            workflow: s.workflow.as_deref(),
            journal: s.journal.as_ref(),
        },
        table: &mut s.table,
    })
}

/// The tier `embed` is metered against.
pub const EMBED_TIER: &str = "embed";

fn chat_request(request: CompletionRequest) -> Result<ChatRequest, GuestError> {
    let json_schema = request
        .json_schema
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| GuestError::InvalidInput(format!("json-schema is not JSON: {e}")))?;
    let messages = request
        .messages
        .into_iter()
        .map(|m| Message {
            role: match m.role {
                Role::System => provider::Role::System,
                Role::User => provider::Role::User,
                Role::Assistant => provider::Role::Assistant,
                Role::Tool => provider::Role::Tool,
            },
            content: m.content,
        })
        .collect();
    Ok(ChatRequest {
        model: String::new(),
        messages,
        max_tokens: request.max_tokens,
        temperature_milli: request.temperature_milli,
        json_schema,
    })
}

pub(super) fn completion(c: Completed) -> Completion {
    Completion {
        text: c.text,
        json: c.json,
        usage: Usage { input_tokens: c.usage.input_tokens, output_tokens: c.usage.output_tokens },
        cost_micros: c.cost_micros,
        model: c.model,
        latency_ms: u32::try_from(c.latency.as_millis()).unwrap_or(u32::MAX),
        cached: c.cached,
    }
}

impl ModelCalls<'_> {
    fn scope(&self) -> CallScope<'_> {
        CallScope { plugin: &self.caller.plugin, run_id: self.run_id, workflow: self.workflow }
    }

    /// A counterfactual replay's model call: made live on `model`, noted
    /// next to what the original call got.
    async fn counterfactual(
        &self,
        journal: &SharedJournal,
        request: CompletionRequest,
        json: serde_json::Value,
        model: String,
        before: Option<serde_json::Value>,
    ) -> Result<Completion, GuestError> {
        let tier = request.tier.clone();
        let result = async {
            self.gate.check(self.caller, Request::Model { tier: &tier })?;
            let chat = chat_request(request)?;
            let kernel = self.gate.kernel().clone();
            let metered = kernel.models().complete_on(kernel.store(), self.scope(), &tier, &model, chat).await;
            self.gate.record_now(self.caller.stamp(metered.record));
            metered.result.map(completion)
        }
        .await;
        let now = serde_json::to_value(&result).unwrap_or_default();
        let answer = ModelAnswer { tier, model, recorded: before, now };
        journal.lock().unwrap_or_else(|e| e.into_inner()).note_answer(answer, json);
        result
    }

    async fn complete_now(&self, request: CompletionRequest) -> Result<Completion, GuestError> {
        let tier = request.tier.clone();
        self.gate.check(self.caller, Request::Model { tier: &tier })?;
        let request = chat_request(request)?;
        let kernel = self.gate.kernel().clone();
        let metered = kernel.models().complete(kernel.store(), self.scope(), &tier, request).await;
        self.gate.record_now(self.caller.stamp(metered.record));
        metered.result.map(completion)
    }

    async fn embed_texts(&self, texts: Vec<String>, urgency: Urgency) -> Result<Vec<Vec<f32>>, GuestError> {
        let journal = self.journal;
        let op = match urgency {
            Urgency::Now => "model.embed",
            Urgency::Background => "model.embed-background",
        };
        let recorded = journal.map(|_| serde_json::to_value(&texts).unwrap_or_default());
        let result = journaled_async(journal, op, recorded, || async {
            self.gate.check(self.caller, Request::Model { tier: EMBED_TIER })?;
            let kernel = self.gate.kernel().clone();
            let metered = kernel.models().embed(kernel.store(), self.scope(), texts, urgency).await;
            self.gate.record_now(self.caller.stamp(metered.record));
            metered.result
        })
        .await;
        self.save_memo();
        result
    }

    /// A stream fed by a task of its own; refusals come out of its `next`.
    fn start_stream(&self, request: CompletionRequest) -> CompletionStream {
        let kernel = self.gate.kernel().clone();
        let store = kernel.store().clone();
        let tier = request.tier.clone();
        let checked = self.gate.check(self.caller, Request::Model { tier: &tier }).and_then(|()| chat_request(request));
        let chat = match checked {
            Ok(chat) => chat,
            Err(refused) => return CompletionStream::whole(Err(refused), self.caller.clone(), store),
        };
        let plugin = self.caller.plugin.clone();
        let (run_id, workflow) = (self.run_id.map(str::to_owned), self.workflow.map(str::to_owned));
        let (tx, pieces) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let scope = CallScope { plugin: &plugin, run_id: run_id.as_deref(), workflow: workflow.as_deref() };
            kernel.models().complete_streamed(kernel.store(), scope, &tier, chat, &PieceSink::new(tx)).await
        });
        CompletionStream::live(pieces, task, self.caller.clone(), store)
    }

    /// Makes the model answers a step got so far durable with the call's
    /// spend: a step run again after a crash gets them back.
    fn save_memo(&self) {
        let Some(journal) = self.journal else { return };
        if let Some(batch) = journal.lock().unwrap_or_else(|e| e.into_inner()).take_memo() {
            self.gate.record_now(self.caller.stamp(batch));
        }
    }
}

impl ModelCalls<'_> {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, GuestError> {
        let journal = self.journal;
        let recorded = journal.map(|_| serde_json::to_value(&request).unwrap_or_default());
        if let (Some(journal), Some(json)) = (journal, &recorded) {
            let live =
                journal.lock().unwrap_or_else(|e| e.into_inner()).live_model("model.complete", &request.tier, json);
            if let Some((model, before)) = live {
                return self.counterfactual(journal, request, json.clone(), model, before).await;
            }
        }
        let result = journaled_async(journal, "model.complete", recorded, || self.complete_now(request)).await;
        self.save_memo();
        result
    }
}

impl model::Host for ModelView<'_> {
    async fn complete(&mut self, request: CompletionRequest) -> wasmtime::Result<Result<Completion, GuestError>> {
        let calls = self.calls;
        let _span = tracing::debug_span!("keel.model.complete", plugin = %calls.caller.plugin, tier = %request.tier);
        Ok(calls.complete(request).await)
    }

    async fn complete_streaming(&mut self, request: CompletionRequest) -> wasmtime::Result<Resource<CompletionStream>> {
        let calls = self.calls;
        let _span =
            tracing::debug_span!("keel.model.complete_streaming", plugin = %calls.caller.plugin, tier = %request.tier);
        let stream = if calls.journal.is_some() {
            // A step's answers are journaled whole: the journaled `complete`, as one piece.
            let outcome = calls.complete(request).await;
            CompletionStream::whole(outcome, calls.caller.clone(), calls.gate.store().clone())
        } else {
            calls.start_stream(request)
        };
        Ok(self.table.push(stream)?)
    }

    async fn embed(&mut self, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, GuestError>> {
        let calls = self.calls;
        let _span = tracing::debug_span!("keel.model.embed", plugin = %calls.caller.plugin, count = texts.len());
        Ok(calls.embed_texts(texts, Urgency::Now).await)
    }

    async fn embed_background(&mut self, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, GuestError>> {
        let calls = self.calls;
        let _span =
            tracing::debug_span!("keel.model.embed_background", plugin = %calls.caller.plugin, count = texts.len());
        Ok(calls.embed_texts(texts, Urgency::Background).await)
    }
}

impl model::HostCompletionStream for ModelView<'_> {
    async fn next(
        &mut self,
        stream: Resource<CompletionStream>,
    ) -> wasmtime::Result<Result<Option<String>, GuestError>> {
        let _span = tracing::debug_span!("keel.model.stream_next", plugin = %self.calls.caller.plugin);
        let gate = self.calls.gate;
        Ok(self.table.get_mut(&stream)?.next_piece(gate).await)
    }

    async fn finish(&mut self, stream: Resource<CompletionStream>) -> wasmtime::Result<Result<Completion, GuestError>> {
        let _span = tracing::debug_span!("keel.model.stream_finish", plugin = %self.calls.caller.plugin);
        let gate = self.calls.gate;
        Ok(self.table.get_mut(&stream)?.finish(gate).await)
    }

    fn drop(&mut self, stream: Resource<CompletionStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
