//! `keel:plugin/model`: language-model calls. The gate checks the tier
//! grant; the workspace's [`ModelService`] routes, meters and caches. What a
//! call spent is recorded whatever becomes of the plugin's call.

use wasmtime::component::{HasData, Linker};

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::model::{self, Completion, CompletionRequest, Role, Usage};
use crate::kernel::{Caller, Gate, Request};
use crate::model::provider::{self, ChatRequest, Message};
use crate::model::{CallScope, Completed, Urgency};
use crate::runtime::HostState;

pub struct ModelView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub run_id: Option<&'a str>,
}

struct ModelCapability;

impl HasData for ModelCapability {
    type Data<'a> = ModelView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    model::add_to_linker::<HostState, ModelCapability>(linker, |s| ModelView {
        caller: &s.caller,
        gate: &s.gate,
        run_id: s.run_id.as_deref(),
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

fn completion(c: Completed) -> Completion {
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

impl ModelView<'_> {
    fn scope(&self) -> CallScope<'_> {
        CallScope { plugin: &self.caller.plugin, run_id: self.run_id }
    }

    async fn embed_texts(&mut self, texts: Vec<String>, urgency: Urgency) -> Result<Vec<Vec<f32>>, GuestError> {
        self.gate.check(self.caller, Request::Model { tier: EMBED_TIER })?;
        let kernel = self.gate.kernel().clone();
        let metered = kernel.models().embed(kernel.store(), self.scope(), texts, urgency).await;
        self.gate.record_now(metered.record);
        metered.result
    }
}

impl model::Host for ModelView<'_> {
    async fn complete(&mut self, request: CompletionRequest) -> wasmtime::Result<Result<Completion, GuestError>> {
        let tier = request.tier.clone();
        let _span = tracing::debug_span!("keel.model.complete", plugin = %self.caller.plugin, %tier);
        if let Err(e) = self.gate.check(self.caller, Request::Model { tier: &tier }) {
            return Ok(Err(e));
        }
        let request = match chat_request(request) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let kernel = self.gate.kernel().clone();
        let metered = kernel.models().complete(kernel.store(), self.scope(), &tier, request).await;
        self.gate.record_now(metered.record);
        Ok(metered.result.map(completion))
    }

    async fn embed(&mut self, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, GuestError>> {
        let _span = tracing::debug_span!("keel.model.embed", plugin = %self.caller.plugin, count = texts.len());
        Ok(self.embed_texts(texts, Urgency::Now).await)
    }

    async fn embed_background(&mut self, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, GuestError>> {
        let _span =
            tracing::debug_span!("keel.model.embed_background", plugin = %self.caller.plugin, count = texts.len());
        Ok(self.embed_texts(texts, Urgency::Background).await)
    }
}
