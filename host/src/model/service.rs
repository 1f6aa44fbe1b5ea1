//! The model service: one per workspace. It turns a plugin's request for a
//! tier into calls to the tier's models in order, within the budgets, from
//! the cache when it can, and returns what to record (cost and audit) with
//! the answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::EmbedBatcher;
use super::cache::{self, CachedAnswer, InFlight, Joined, RecentAnswers};
use super::config::ProviderConfig;
use super::config::{ModelConfig, ModelRef};
use super::costs::{self, Budget, CostMeter, Totals, micros_text};
use super::offline::OfflineProvider;
use super::openai::OpenAiProvider;
use super::provider::{ChatRequest, ChatResponse, EmbedResponse, Message, PieceSink, ProviderError, Usage};
use crate::bindings::GuestError;
use crate::kernel::ledger::utc_day;
use crate::kernel::secrets::{self, SecretSource};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::Batch;
use crate::memory::semantic::{Embedder, HashedEmbedder, Lane};
use crate::memory::{Store, now_ms};

/// Largest request (all messages) one completion may send.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most output tokens one completion may ask for.
pub const MAX_OUTPUT_TOKENS: u32 = 100_000;
/// Most texts one `embed` call may send.
pub const MAX_EMBED_TEXTS: usize = 256;

/// Who a call is made for; costs are recorded against each.
#[derive(Debug, Clone, Copy)]
pub struct CallScope<'a> {
    pub plugin: &'a str,
    pub run_id: Option<&'a str>,
    pub workflow: Option<&'a str>,
}

/// A completion as the plugin sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub text: String,
    /// The answer as JSON, checked against the request's schema.
    pub json: Option<String>,
    pub usage: Usage,
    pub cost_micros: u64,
    /// `provider/model` that answered.
    pub model: String,
    pub latency: Duration,
    pub cached: bool,
}

/// How soon an answer is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Someone (or a step of a run) waits for it: sent at once.
    Now,
    /// May wait a few milliseconds to be batched with others.
    Background,
}

/// The outcome of a call and what must be recorded whatever it was.
#[derive(Debug)]
pub struct Metered<T> {
    pub result: Result<T, GuestError>,
    /// Cost totals and the audit entry, to land before the call returns.
    pub record: Batch,
}

/// Estimated tokens of `text`: about four characters each, as providers
/// count English text.
pub fn estimate_tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(4) as u64
}

/// Providers, routing, prices, budgets and cache of one workspace.
#[derive(Debug)]
pub struct ModelService {
    config: ModelConfig,
    currency: String,
    /// Configured providers, or why one cannot be used (a missing secret).
    providers: BTreeMap<String, Result<OpenAiProvider, String>>,
    meter: CostMeter,
    cache: RecentAnswers,
    in_flight: Arc<InFlight>,
    batcher: EmbedBatcher,
    /// What `offline` means in the `embed` tier: the workspace's own
    /// in-process embedder (the local model when one is configured).
    offline_embedder: OfflineEmbedder,
}

/// The offline `embed` model, run in process, got on first use: a local
/// model takes a moment and 100 MiB to load, and most commands never embed.
#[derive(Clone)]
struct OfflineEmbedder(Arc<dyn Fn() -> Arc<dyn Embedder> + Send + Sync>);

impl OfflineEmbedder {
    fn get(&self) -> Arc<dyn Embedder> {
        (self.0)()
    }
}

impl std::fmt::Debug for OfflineEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OfflineEmbedder")
    }
}

impl ModelService {
    /// The service for a validated `config`. A provider whose API key
    /// cannot be read is kept, failing its calls with the reason, so keel
    /// commands that make no model calls still work.
    pub fn new(config: ModelConfig, currency: &str, secret_sources: &BTreeMap<String, SecretSource>) -> ModelService {
        let providers = config
            .providers
            .iter()
            .map(|(name, provider)| {
                let ProviderConfig::Openai(c) = provider;
                let key = c.api_key.as_deref().map(|secret| secrets::read(secret_sources, secret)).transpose();
                let built = key
                    .map_err(|e| e.to_string())
                    .and_then(|key| OpenAiProvider::new(name, c, key.map(|k| k.expose().to_owned())));
                if let Err(e) = &built {
                    tracing::warn!(provider = %name, error = %e, "model provider unavailable");
                }
                (name.clone(), built)
            })
            .collect();
        ModelService {
            config,
            currency: currency.to_owned(),
            providers,
            meter: CostMeter::default(),
            cache: RecentAnswers::default(),
            in_flight: Arc::default(),
            batcher: EmbedBatcher::default(),
            offline_embedder: OfflineEmbedder(Arc::new(|| Arc::new(HashedEmbedder))),
        }
    }

    /// Serves `offline` in the `embed` tier with the embedder `get` returns
    /// (the memory plane's local model, loaded on the first embedding)
    /// instead of the hashed embedder, so a plugin's `embed` and the
    /// semantic store agree on meaning. Its calls are named `offline/ID` in
    /// costs and the audit log.
    pub fn with_offline_embedder(
        mut self,
        get: impl Fn() -> Arc<dyn Embedder> + Send + Sync + 'static,
    ) -> ModelService {
        self.offline_embedder = OfflineEmbedder(Arc::new(get));
        self
    }

    /// Only the offline provider, nothing configured.
    pub fn offline(currency: &str) -> ModelService {
        ModelService::new(ModelConfig::default(), currency, &BTreeMap::new())
    }

    /// Each configured provider: `ready` or why it cannot be used.
    pub fn provider_status(&self) -> BTreeMap<String, String> {
        self.providers
            .iter()
            .map(|(name, p)| {
                (name.clone(), p.as_ref().map_or_else(|why| format!("unavailable: {why}"), |_| "ready".into()))
            })
            .collect()
    }

    /// Empties the output cache for the operator (audited); returns how
    /// many answers it held.
    pub async fn clear_cache(&self, store: &Store) -> Result<u64, crate::memory::StoreError> {
        self.cache.clear(store).await
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    async fn chat(
        &self,
        model: &ModelRef,
        request: &ChatRequest,
        pieces: Option<&PieceSink>,
    ) -> Result<ChatResponse, ProviderError> {
        if model.is_offline() {
            let answer = OfflineProvider.chat(request);
            if let (Ok(answer), Some(pieces)) = (&answer, pieces) {
                pieces.send(&answer.text);
            }
            return answer;
        }
        match self.providers.get(&model.provider) {
            Some(Ok(provider)) => provider.chat_streamed(request, pieces).await,
            Some(Err(why)) => Err(ProviderError::Unsupported { provider: model.provider.clone(), detail: why.clone() }),
            None => Err(unknown_provider(model)),
        }
    }

    async fn embed_with(&self, model: &ModelRef, texts: &[String], lane: Lane) -> Result<EmbedResponse, ProviderError> {
        if model.is_offline() && model.model == self.offline_embedder.get().id() {
            return self.embed_in_process(texts, lane).await;
        }
        if model.is_offline() {
            return OfflineProvider.embed(&model.model, texts);
        }
        match self.providers.get(&model.provider) {
            Some(Ok(provider)) => provider.embed(&model.model, texts).await,
            Some(Err(why)) => Err(ProviderError::Unsupported { provider: model.provider.clone(), detail: why.clone() }),
            None => Err(unknown_provider(model)),
        }
    }

    /// Runs the offline embedder on a blocking thread: a model in process
    /// takes milliseconds of CPU per text, which must not stall the
    /// runtime's workers.
    async fn embed_in_process(&self, texts: &[String], lane: Lane) -> Result<EmbedResponse, ProviderError> {
        let embedder = self.offline_embedder.get();
        let owned = texts.to_vec();
        let input_tokens = texts.iter().map(|t| estimate_tokens(t)).sum::<u64>();
        let embedded = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            embedder.try_embed(&refs, lane)
        })
        .await;
        let failed = |detail: String| ProviderError::Unsupported { provider: OfflineProvider::NAME.into(), detail };
        let vectors = embedded.map_err(|e| failed(format!("the local embedder stopped: {e}")))?.map_err(failed)?;
        if vectors.len() != texts.len() {
            return Err(failed(format!(
                "the local embedder returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        Ok(EmbedResponse { vectors, input_tokens: u32::try_from(input_tokens).unwrap_or(u32::MAX) })
    }

    /// The budgets that apply to a call for `scope`.
    fn budgets(&self, scope: CallScope<'_>) -> Vec<Budget> {
        let plugin = scope.plugin;
        let workspace = self.config.daily_budget().map(|limit| Budget {
            scope: costs::WORKSPACE.into(),
            limit,
            who: "the workspace".into(),
        });
        let own = self.config.plugin_budget(plugin).map(|limit| Budget {
            scope: plugin_scope(plugin),
            limit,
            who: format!("plugin `{plugin}`"),
        });
        let workflow = scope.workflow.and_then(|w| {
            let limit = self.config.workflow_budget(w)?;
            Some(Budget { scope: format!("workflow:{w}"), limit, who: format!("workflow `{w}`") })
        });
        workspace.into_iter().chain(own).chain(workflow).collect()
    }

    /// The most a call of `tokens` (in, out) could cost on `chain`.
    fn estimate(&self, chain: &[ModelRef], tokens: (u64, u64)) -> u64 {
        chain.iter().map(|m| self.config.price(m).cost(tokens.0, tokens.1)).max().unwrap_or(0)
    }

    /// Reserves `estimate` on `day`, or returns the metered refusal.
    fn reserve<T>(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        (operation, target): (&str, &str),
        estimate: u64,
        day: &str,
    ) -> Result<costs::Reservation, Metered<T>> {
        let refusal = match self.meter.reserve(store, day, &self.budgets(scope), estimate) {
            Ok(Ok(reservation)) => return Ok(reservation),
            Ok(Err(overrun)) => GuestError::BudgetExceeded(format!("{overrun} ({})", self.currency)),
            Err(e) => GuestError::Unavailable(format!("the model budget could not be read: {e}")),
        };
        let entry = AuditEntry::denied(scope.plugin, operation, target, refusal.to_string());
        tracing::warn!(plugin = scope.plugin, operation, reason = %refusal, "model call refused");
        Err(Metered { result: Err(refusal), record: Batch::audit_only(entry) })
    }

    /// The cost rows of a call: per scope, plus one per model that answered.
    fn charges(scope: CallScope<'_>, per_model: &[(ModelRef, Totals)]) -> Vec<(String, Totals)> {
        let mut total = Totals::default();
        let mut rows = Vec::new();
        for (model, t) in per_model {
            total.add(t);
            rows.push((format!("model:{model}"), *t));
        }
        rows.push((costs::WORKSPACE.into(), total));
        rows.push((plugin_scope(scope.plugin), total));
        if let Some(run) = scope.run_id {
            rows.push((format!("run:{run}"), total));
        }
        if let Some(workflow) = scope.workflow {
            rows.push((format!("workflow:{workflow}"), total));
        }
        rows
    }

    /// Runs a completion for `scope` through `tier`'s models.
    pub async fn complete(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        tier: &str,
        request: ChatRequest,
    ) -> Metered<Completed> {
        self.complete_routed(store, scope, tier, None, request, None).await
    }

    /// [`ModelService::complete`], passing the answer's text to `pieces` as
    /// the model writes it. The next model of the tier takes over only if
    /// no piece went out; a cache hit or an offline answer is one piece; a
    /// streamed answer is never escalated to `large`.
    pub async fn complete_streamed(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        tier: &str,
        request: ChatRequest,
        pieces: &PieceSink,
    ) -> Metered<Completed> {
        self.complete_routed(store, scope, tier, None, request, Some(pieces)).await
    }

    /// Like [`ModelService::complete`], on `model` (`provider/model`, a
    /// configured one) instead of the tier's models: for counterfactual
    /// replays.
    pub async fn complete_on(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        tier: &str,
        model: &str,
        request: ChatRequest,
    ) -> Metered<Completed> {
        self.complete_routed(store, scope, tier, Some(model), request, None).await
    }

    async fn complete_routed(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        tier: &str,
        model: Option<&str>,
        request: ChatRequest,
        pieces: Option<&PieceSink>,
    ) -> Metered<Completed> {
        let started = Instant::now();
        let invalid = |why: String| Metered { result: Err(GuestError::InvalidInput(why)), record: Batch::default() };
        let schema = match checked_request(&request) {
            Ok(schema) => schema,
            Err(why) => return invalid(why),
        };
        let chain = match model {
            None => self.config.chain(tier),
            Some(m) => ModelRef::parse(m, tier).and_then(|m| self.config.check_model(&m).map(|()| vec![m])),
        };
        let chain = match chain {
            Ok(chain) => chain,
            Err(why) => return invalid(format!("tier `{tier}`: {why}")),
        };
        let now = now_ms();
        let day = utc_day(now);
        let cache_key = (self.config.cache.enabled && request.temperature_milli == 0)
            .then(|| cache::key(scope.plugin, &chain, &request));
        if let Some(key) = &cache_key {
            match self.cache.get(store, key, now) {
                Ok(Some(hit)) => {
                    if let Some(pieces) = pieces {
                        pieces.send(&hit.text);
                    }
                    return self.cache_hit(scope, chain_label(tier, &chain), hit, &day, started, "the cache");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "model cache unreadable; asking the model"),
            }
        }
        let leader = match cache_key.map(|key| self.in_flight.join(key)) {
            Some(Joined::Follower(follower)) => match follower.answer().await {
                Some(answer) => {
                    if let Some(pieces) = pieces {
                        pieces.send(&answer.text);
                    }
                    let source = "an identical request in flight";
                    return self.cache_hit(scope, chain_label(tier, &chain), answer, &day, started, source);
                }
                // The identical request got no answer: ask for this one.
                None => None,
            },
            Some(Joined::Leader(leader)) => Some(leader),
            None => None,
        };
        let input: u64 = request.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
        let target = chain_label(tier, &chain);
        let estimate = self.estimate(&chain, (input, request.max_tokens.into()));
        let reservation = match self.reserve(store, scope, ("model.complete", &target), estimate, &day) {
            Ok(r) => r,
            Err(refused) => return refused,
        };

        let mut attempts = Vec::new();
        let mut failures = Vec::new();
        let mut answer = None;
        for model in &chain {
            let call = ChatRequest { model: model.model.clone(), ..request.clone() };
            match self.chat(model, &call, pieces).await {
                Ok(response) => {
                    attempts.push((model.clone(), self.totals(model, response.usage)));
                    match checked_output(&response.text, schema.as_ref()) {
                        Ok(json) => {
                            answer = Some((model.clone(), response, json));
                            break;
                        }
                        Err(why) => failures.push(format!("{model}: {why}")),
                    }
                }
                Err(e) => failures.push(format!("{model}: {e}")),
            }
            if pieces.is_some_and(PieceSink::sent_any) {
                // The reader has this model's pieces: another cannot take over.
                break;
            }
        }
        let mut escalated = None;
        if let Some((model, _, Some(json))) = &answer
            && pieces.is_none()
            && tier == "small"
            && let Some(below) = self.config.escalate.map(|e| e.below)
            && let Some(confidence) = low_confidence(json, below)
        {
            escalated = Some(format!("{model} was {confidence:.2} sure, below {below:.2}: asked `large`"));
            let large = self.config.chain("large").unwrap_or_default();
            for model in &large {
                let call = ChatRequest { model: model.model.clone(), ..request.clone() };
                let Ok(better) = self.chat(model, &call, None).await else { continue };
                attempts.push((model.clone(), self.totals(model, better.usage)));
                if let Ok(json) = checked_output(&better.text, schema.as_ref()) {
                    answer = Some((model.clone(), better, json));
                    break;
                }
            }
        }

        let rows = Self::charges(scope, &attempts);
        let cost = rows.iter().find(|(s, _)| s == costs::WORKSPACE).map_or(0, |(_, t)| t.micros);
        let mut record = Batch { mutations: vec![self.meter.settle(reservation, &day, rows)], audit: Vec::new() };
        let Some((model, response, json)) = answer else {
            let why = format!("no model of tier `{tier}` answered: {}", failures.join("; "));
            tracing::warn!(plugin = scope.plugin, %why, "model call failed");
            record.audit.push(AuditEntry::denied(scope.plugin, "model.complete", target, why.clone()));
            return Metered { result: Err(GuestError::Unavailable(why)), record };
        };
        let completed = Completed {
            text: response.text,
            json: json.map(|j| j.to_string()),
            usage: response.usage,
            cost_micros: cost,
            model: model.to_string(),
            latency: started.elapsed(),
            cached: false,
        };
        if let Some(key) = cache_key {
            let ttl = Duration::try_from_secs_f64(self.config.cache.ttl_hours * 3600.0).unwrap_or(Duration::ZERO);
            let stored = CachedAnswer {
                text: completed.text.clone(),
                json: completed.json.clone(),
                usage: completed.usage,
                model: completed.model.clone(),
                stored_at_ms: now,
                expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
            };
            if let Some(leader) = &leader {
                leader.publish(&stored);
            }
            record.mutations.push(self.cache.put(key, stored, &self.config.cache));
        }
        let mut reason = format!(
            "{model}: {} in, {} out tokens, cost {} {}",
            completed.usage.input_tokens,
            completed.usage.output_tokens,
            micros_text(cost),
            self.currency
        );
        if !failures.is_empty() {
            reason.push_str(&format!("; after {}", failures.join("; ")));
        }
        if let Some(why) = escalated {
            reason.push_str(&format!("; {why}"));
        }
        record.audit.push(AuditEntry::allowed(scope.plugin, "model.complete", target).with_reason(reason));
        Metered { result: Ok(completed), record }
    }

    fn totals(&self, model: &ModelRef, usage: Usage) -> Totals {
        Totals {
            micros: self.config.price(model).cost(usage.input_tokens.into(), usage.output_tokens.into()),
            calls: 1,
            cached: 0,
            input_tokens: usage.input_tokens.into(),
            output_tokens: usage.output_tokens.into(),
        }
    }

    fn cache_hit(
        &self,
        scope: CallScope<'_>,
        target: String,
        hit: CachedAnswer,
        day: &str,
        started: Instant,
        source: &str,
    ) -> Metered<Completed> {
        let free = Totals { calls: 1, cached: 1, ..Totals::default() };
        let rows = Self::charges(scope, &[]).into_iter().map(|(s, _)| (s, free)).collect();
        let settle = self.meter.settle_free(day, rows);
        let entry = AuditEntry::allowed(scope.plugin, "model.complete", target)
            .with_reason(format!("{}: answered from {source}, cost 0", hit.model));
        let completed = Completed {
            text: hit.text,
            json: hit.json,
            usage: hit.usage,
            cost_micros: 0,
            model: hit.model,
            latency: started.elapsed(),
            cached: true,
        };
        Metered { result: Ok(completed), record: Batch { mutations: vec![settle], audit: vec![entry] } }
    }

    /// Embeds `texts` with the `embed` tier's models; background requests
    /// to hosted models are batched (see [`super::batch`]).
    pub async fn embed(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        texts: Vec<String>,
        urgency: Urgency,
    ) -> Metered<Vec<Vec<f32>>> {
        let chain = match self.config.chain("embed") {
            Ok(chain) => chain.into_iter().map(|model| self.resolve_offline_embed(model)).collect(),
            Err(why) => return Metered { result: Err(GuestError::InvalidInput(why)), record: Batch::default() },
        };
        self.embed_on(store, scope, chain, texts, urgency).await
    }

    /// Embeds `texts` with `model` alone, never a fallback: vectors of one
    /// store must all come from one model (the memory plane's
    /// `kind = "model"` embedder).
    pub async fn embed_with_model(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        model: &ModelRef,
        texts: Vec<String>,
        urgency: Urgency,
    ) -> Metered<Vec<Vec<f32>>> {
        let model = self.resolve_offline_embed(model.clone());
        self.embed_on(store, scope, vec![model], texts, urgency).await
    }

    /// `offline` in the `embed` tier names the workspace's in-process
    /// embedder.
    fn resolve_offline_embed(&self, model: ModelRef) -> ModelRef {
        if model.is_offline() && model.model == OfflineProvider::EMBED_MODEL {
            ModelRef { provider: model.provider, model: self.offline_embedder.get().id().to_owned() }
        } else {
            model
        }
    }

    async fn embed_on(
        &self,
        store: &Store,
        scope: CallScope<'_>,
        chain: Vec<ModelRef>,
        texts: Vec<String>,
        urgency: Urgency,
    ) -> Metered<Vec<Vec<f32>>> {
        let invalid = |why: String| Metered { result: Err(GuestError::InvalidInput(why)), record: Batch::default() };
        if texts.len() > MAX_EMBED_TEXTS {
            return invalid(format!("{} texts in one call; at most {MAX_EMBED_TEXTS}: split them", texts.len()));
        }
        let bytes: usize = texts.iter().map(String::len).sum();
        if bytes > MAX_REQUEST_BYTES {
            return invalid(format!("the texts are {bytes} bytes, over the {MAX_REQUEST_BYTES}-byte limit"));
        }
        if texts.is_empty() {
            return Metered { result: Ok(Vec::new()), record: Batch::default() };
        }
        let day = utc_day(now_ms());
        let tokens: u64 = texts.iter().map(|t| estimate_tokens(t)).sum();
        let target = chain_label("embed", &chain);
        let estimate = self.estimate(&chain, (tokens, 0));
        let reservation = match self.reserve(store, scope, ("model.embed", &target), estimate, &day) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        let mut failures = Vec::new();
        let mut attempts = Vec::new();
        let mut answer = None;
        for model in &chain {
            let sent = if urgency == Urgency::Background && !model.is_offline() {
                let batch = self.config.batch;
                let window = Duration::from_millis(batch.window_ms);
                let send = |texts: Vec<String>| async move { self.embed_with(model, &texts, Lane::Background).await };
                self.batcher.embed(model, texts.clone(), window, batch.max_texts, send).await
            } else {
                let lane = if urgency == Urgency::Background { Lane::Background } else { Lane::Foreground };
                self.embed_with(model, &texts, lane).await
            };
            match sent {
                Ok(response) => {
                    let usage = Usage { input_tokens: response.input_tokens, output_tokens: 0 };
                    attempts.push((model.clone(), self.totals(model, usage)));
                    answer = Some((model.clone(), response));
                    break;
                }
                Err(e) => failures.push(format!("{model}: {e}")),
            }
        }
        let rows = Self::charges(scope, &attempts);
        let cost = rows.iter().find(|(s, _)| s == costs::WORKSPACE).map_or(0, |(_, t)| t.micros);
        let mut record = Batch { mutations: vec![self.meter.settle(reservation, &day, rows)], audit: Vec::new() };
        match answer {
            Some((model, response)) => {
                let reason = format!(
                    "{model}: {} texts, {} tokens, cost {} {}",
                    texts.len(),
                    response.input_tokens,
                    micros_text(cost),
                    self.currency
                );
                record.audit.push(AuditEntry::allowed(scope.plugin, "model.embed", target).with_reason(reason));
                Metered { result: Ok(response.vectors), record }
            }
            None => {
                let why = format!("no embedding model answered: {}", failures.join("; "));
                record.audit.push(AuditEntry::denied(scope.plugin, "model.embed", target, why.clone()));
                Metered { result: Err(GuestError::Unavailable(why)), record }
            }
        }
    }
}

/// `tier: provider/model, ...`: the audit target of a call on `chain`.
fn chain_label(tier: &str, chain: &[ModelRef]) -> String {
    format!("{tier}: {}", chain.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

fn unknown_provider(model: &ModelRef) -> ProviderError {
    ProviderError::Unsupported {
        provider: model.provider.clone(),
        detail: format!("no provider `{}` is configured: add [model.providers.{}]", model.provider, model.provider),
    }
}

/// The scope of one plugin's spend.
pub fn plugin_scope(plugin: &str) -> String {
    format!("plugin:{plugin}")
}

/// Checks a request's size, token limit and schema; returns the compiled
/// schema if it has one.
fn checked_request(request: &ChatRequest) -> Result<Option<jsonschema::Validator>, String> {
    if request.messages.is_empty() {
        return Err("messages is empty: send at least one".into());
    }
    let bytes: usize = request.messages.iter().map(|m: &Message| m.content.len()).sum();
    if bytes > MAX_REQUEST_BYTES {
        return Err(format!("the messages are {bytes} bytes, over the {MAX_REQUEST_BYTES}-byte limit"));
    }
    if !(1..=MAX_OUTPUT_TOKENS).contains(&request.max_tokens) {
        return Err(format!("max-tokens = {} is out of range: use 1 to {MAX_OUTPUT_TOKENS}", request.max_tokens));
    }
    request
        .json_schema
        .as_ref()
        .map(|schema| jsonschema::validator_for(schema).map_err(|e| format!("json-schema is not a valid schema: {e}")))
        .transpose()
}

/// The answer as JSON when a schema was asked for, checked against it.
fn checked_output(text: &str, schema: Option<&jsonschema::Validator>) -> Result<Option<serde_json::Value>, String> {
    let Some(schema) = schema else { return Ok(None) };
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("the answer is not JSON ({e})"))?;
    if let Some(error) = schema.iter_errors(&value).next() {
        return Err(format!("the answer does not match the schema: {error} at {}", error.instance_path()));
    }
    Ok(Some(value))
}

/// The answer's `confidence` field if it is below `below`.
fn low_confidence(json: &serde_json::Value, below: f64) -> Option<f64> {
    json.get("confidence").and_then(serde_json::Value::as_f64).filter(|c| *c < below)
}
