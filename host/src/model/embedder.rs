//! The semantic store's embedder when the workspace names a model:
//! `[memory] embedder = { kind = "model", model = "provider/model", dimensions = N }`.
//!
//! Notes and queries are embedded by that one model through the
//! [`ModelService`], so these calls are priced, held to the workspace's
//! daily budget, batched (the background lane: reindexing, bulk writes)
//! and audited like a plugin's `embed`; they are charged to `host`. The
//! model is never swapped for a fallback: vectors of two models are not
//! comparable. A failed call reaches the guest as `unavailable` with the
//! provider's reason.
//!
//! The semantic store calls its embedder synchronously, from a guest's host
//! call or a CLI command. The model service is async, so the calls run on
//! one thread of this embedder's own, with a small runtime; a waiting
//! caller blocks only its own thread.

use std::sync::Arc;
use std::sync::mpsc as reply;

use tokio::sync::mpsc;

use super::config::ModelRef;
use super::service::{CallScope, MAX_EMBED_TEXTS, ModelService, Urgency};
use crate::bindings::GuestError;
use crate::memory::Store;
use crate::memory::semantic::embed::vectors_or_logged;
use crate::memory::semantic::{Embedder, Lane};

/// Who model-backed memory embeddings are charged to in `keel costs` and
/// the audit log.
pub const MEMORY_EMBEDDINGS_ACTOR: &str = "host";

/// An [`Embedder`] backed by one configured model; see the module docs.
pub struct ModelEmbedder {
    id: String,
    dim: usize,
    model: ModelRef,
    jobs: mpsc::UnboundedSender<Job>,
    /// Joined on drop: the thread holds the store, which another process
    /// may open next.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ModelEmbedder {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Job {
    texts: Vec<String>,
    urgency: Urgency,
    answer: reply::Sender<Result<Vec<Vec<f32>>, String>>,
}

impl ModelEmbedder {
    /// Vectors it makes are named `model:provider/model`.
    pub const ID_PREFIX: &'static str = "model:";

    /// Starts the embedder's thread. `dim` is the configured vector length;
    /// answers of another length are refused with what to set.
    pub fn start(
        service: Arc<ModelService>,
        store: Arc<Store>,
        model: ModelRef,
        dim: usize,
    ) -> Result<ModelEmbedder, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the model embedder's runtime: {e}"))?;
        let (jobs, mut inbox) = mpsc::unbounded_channel::<Job>();
        let served = model.clone();
        let thread = std::thread::Builder::new()
            .name("keel-model-embedder".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Ends when the embedder is dropped.
                    while let Some(job) = inbox.recv().await {
                        let (service, store, model) = (service.clone(), store.clone(), served.clone());
                        tokio::spawn(async move {
                            let answer = embed_chunked(&service, &store, &model, job.texts, job.urgency).await;
                            let _ = job.answer.send(answer);
                        });
                    }
                })
            })
            .map_err(|e| format!("cannot start the model embedder's thread: {e}"))?;
        Ok(ModelEmbedder { id: format!("{}{model}", Self::ID_PREFIX), dim, model, jobs, thread: Some(thread) })
    }

    fn ask(&self, texts: &[&str], urgency: Urgency) -> Result<Vec<Vec<f32>>, String> {
        let (answer, wait) = reply::channel();
        let texts = texts.iter().map(|t| (*t).to_owned()).collect();
        self.jobs.send(Job { texts, urgency, answer }).map_err(|_| "the model embedder's thread stopped".to_owned())?;
        let vectors = blocking_outside_workers(|| wait.recv())
            .map_err(|_| "the model embedder's thread stopped".to_owned())??;
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dim) {
            return Err(format!(
                "model `{}` returned vectors of {} numbers, but `memory.embedder.dimensions` is {}: set it to {} \
                 in keel.toml, then run `keel memory reindex`",
                self.model,
                v.len(),
                self.dim,
                v.len()
            ));
        }
        Ok(vectors)
    }
}

/// Runs `wait` so that a tokio worker it blocks hands its other tasks to
/// another worker first (a guest's host call runs on one).
fn blocking_outside_workers<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// At most [`MAX_EMBED_TEXTS`] texts per model call, in order.
async fn embed_chunked(
    service: &ModelService,
    store: &Store,
    model: &ModelRef,
    texts: Vec<String>,
    urgency: Urgency,
) -> Result<Vec<Vec<f32>>, String> {
    let scope = CallScope { plugin: MEMORY_EMBEDDINGS_ACTOR, run_id: None, workflow: None };
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(MAX_EMBED_TEXTS) {
        let metered = service.embed_with_model(store, scope, model, chunk.to_vec(), urgency).await;
        // The spend lands before the vectors are used, like a plugin's.
        store.commit(metered.record).await.map_err(|e| format!("recording the embedding's cost failed: {e}"))?;
        vectors.extend(metered.result.map_err(|e| reason(&e))?);
    }
    Ok(vectors)
}

fn reason(e: &GuestError) -> String {
    match e {
        GuestError::Denied(s)
        | GuestError::InvalidInput(s)
        | GuestError::BudgetExceeded(s)
        | GuestError::PendingApproval(s)
        | GuestError::Unavailable(s) => s.clone(),
    }
}

impl Embedder for ModelEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        vectors_or_logged(&self.id, self.try_embed(texts, Lane::Foreground))
    }

    fn embed_background(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        vectors_or_logged(&self.id, self.try_embed(texts, Lane::Background))
    }

    fn try_embed(&self, texts: &[&str], lane: Lane) -> Result<Vec<Vec<f32>>, String> {
        let urgency = match lane {
            Lane::Foreground => Urgency::Now,
            Lane::Background => Urgency::Background,
        };
        self.ask(texts, urgency)
    }

    fn describe(&self) -> String {
        format!("{} (model `{}` through the model service, {} dimensions)", self.id, self.model, self.dim)
    }
}
