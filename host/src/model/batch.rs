//! Coalescing background embedding requests: requests for the same model
//! that arrive within a short window go to the provider as one call.
//!
//! The first request of a window leads: it waits for the window (or until
//! the batch is full), sends every text gathered by then in one request,
//! and hands each follower its vectors and its share of the tokens. A
//! follower whose leader was cancelled (its plugin call timed out) sends its
//! own request instead, so no request is lost to another plugin's failure.
//! Foreground requests never wait here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::config::ModelRef;
use super::provider::{EmbedResponse, ProviderError};

type Answer = Result<EmbedResponse, ProviderError>;

struct Follower {
    /// Where its texts start in the batch, and how many.
    start: usize,
    len: usize,
    tx: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Gathered {
    texts: Vec<String>,
    followers: Vec<Follower>,
    /// Set when the leader took the texts; nobody may join after.
    closed: bool,
}

/// One batch being gathered: its texts and how to wake its leader early.
#[derive(Default)]
struct OpenBatch {
    gathered: Mutex<Gathered>,
    full: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open batches, one per model.
#[derive(Default)]
pub struct EmbedBatcher {
    open: Mutex<HashMap<ModelRef, Arc<OpenBatch>>>,
}

impl std::fmt::Debug for EmbedBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedBatcher").finish_non_exhaustive()
    }
}

enum Joined {
    Leader(Arc<OpenBatch>),
    Follower(oneshot::Receiver<Answer>),
}

impl EmbedBatcher {
    /// Embeds `texts` with `model`, batched with other requests arriving
    /// within `window`, at most `max_texts` texts per provider call. `send`
    /// makes one provider call.
    pub async fn embed<F, Fut>(
        &self,
        model: &ModelRef,
        texts: Vec<String>,
        window: Duration,
        max_texts: usize,
        send: F,
    ) -> Answer
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = Answer>,
    {
        if texts.len() >= max_texts {
            return send(texts).await;
        }
        match self.join(model, &texts, max_texts) {
            Joined::Follower(rx) => match rx.await {
                Ok(answer) => answer,
                Err(_) => send(texts).await,
            },
            Joined::Leader(batch) => {
                tokio::select! {
                    () = tokio::time::sleep(window) => {}
                    () = batch.full.notified() => {}
                }
                let gathered = self.close(model, &batch);
                let answer = send(gathered.texts).await;
                split(answer, texts.len(), gathered.followers)
            }
        }
    }

    /// Adds `texts` to the open batch for `model`, or opens one.
    fn join(&self, model: &ModelRef, texts: &[String], max_texts: usize) -> Joined {
        let mut open = lock(&self.open);
        if let Some(batch) = open.get(model) {
            let mut gathered = lock(&batch.gathered);
            if !gathered.closed && gathered.texts.len() + texts.len() <= max_texts {
                let (tx, rx) = oneshot::channel();
                let start = gathered.texts.len();
                gathered.followers.push(Follower { start, len: texts.len(), tx });
                gathered.texts.extend_from_slice(texts);
                if gathered.texts.len() >= max_texts {
                    batch.full.notify_one();
                }
                return Joined::Follower(rx);
            }
            // No room: its leader sends what it has now; this one leads anew.
            batch.full.notify_one();
        }
        let batch = Arc::new(OpenBatch::default());
        lock(&batch.gathered).texts.extend_from_slice(texts);
        open.insert(model.clone(), batch.clone());
        Joined::Leader(batch)
    }

    /// Stops `batch` taking joiners and returns what it gathered.
    fn close(&self, model: &ModelRef, batch: &Arc<OpenBatch>) -> Gathered {
        let mut open = lock(&self.open);
        if open.get(model).is_some_and(|b| Arc::ptr_eq(b, batch)) {
            open.remove(model);
        }
        let mut gathered = lock(&batch.gathered);
        gathered.closed = true;
        std::mem::take(&mut *gathered)
    }
}

/// Hands each follower its vectors and a share of the tokens in
/// proportion to its number of texts; returns the leader's (the first
/// `own` texts, and the rest of the tokens).
fn split(answer: Answer, own: usize, followers: Vec<Follower>) -> Answer {
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            for f in followers {
                let _ = f.tx.send(Err(e.clone()));
            }
            return Err(e);
        }
    };
    let weight = |vectors: &[Vec<f32>]| vectors.len() as u64;
    let total = weight(&response.vectors).max(1);
    let share = |n: u64| u32::try_from(u64::from(response.input_tokens) * n / total).unwrap_or(u32::MAX);
    let mut handed = 0u32;
    for f in followers {
        let vectors = response.vectors.get(f.start..f.start + f.len).map(<[_]>::to_vec).unwrap_or_default();
        let tokens = share(weight(&vectors));
        handed += tokens;
        let _ = f.tx.send(Ok(EmbedResponse { vectors, input_tokens: tokens }));
    }
    let vectors = response.vectors.get(..own).map(<[_]>::to_vec).unwrap_or_default();
    Ok(EmbedResponse { vectors, input_tokens: response.input_tokens.saturating_sub(handed) })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::service::estimate_tokens;
    use super::*;

    fn fake(texts: Vec<String>) -> Answer {
        let vectors = texts.iter().map(|t| vec![t.len() as f32]).collect();
        let input_tokens = texts.iter().map(|t| estimate_tokens(t) as u32).sum();
        Ok(EmbedResponse { vectors, input_tokens })
    }

    #[tokio::test]
    async fn requests_within_the_window_share_one_call_and_get_their_own_vectors() {
        let batcher = Arc::new(EmbedBatcher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let model = ModelRef { provider: "p".into(), model: "m".into() };
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (batcher, calls, model) = (batcher.clone(), calls.clone(), model.clone());
            tasks.push(tokio::spawn(async move {
                let text = "x".repeat(4 * (i + 1));
                let send = |texts: Vec<String>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(fake(texts))
                };
                let r = batcher.embed(&model, vec![text], Duration::from_millis(50), 64, send).await.unwrap();
                (i, r)
            }));
        }
        let mut tokens = 0;
        for t in tasks {
            let (i, r) = t.await.unwrap();
            assert_eq!(r.vectors, vec![vec![(4 * (i + 1)) as f32]], "each gets its own vector");
            tokens += r.input_tokens;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one provider call for all ten");
        assert_eq!(tokens, (1..=10).sum::<u32>(), "the tokens are shared out, none lost");
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once_and_the_next_opens_a_new_one() {
        let batcher = EmbedBatcher::default();
        let calls = AtomicUsize::new(0);
        let model = ModelRef { provider: "p".into(), model: "m".into() };
        let send = |texts: Vec<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(fake(texts))
        };
        let hour = Duration::from_secs(3600);
        let two = |s: &str| vec![s.to_owned(), s.to_owned()];
        let started = std::time::Instant::now();
        let (a, b, c) = tokio::join!(
            batcher.embed(&model, two("a"), hour, 4, send),
            batcher.embed(&model, two("b"), hour, 4, send),
            batcher.embed(&model, vec!["c".repeat(8); 4], hour, 4, send),
        );
        assert!(started.elapsed() < Duration::from_secs(5), "a full batch does not wait for the window");
        assert_eq!((a.unwrap().vectors.len(), b.unwrap().vectors.len(), c.unwrap().vectors.len()), (2, 2, 4));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a+b together, c (full on its own) alone");
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_request_in_it() {
        let batcher = EmbedBatcher::default();
        let model = ModelRef { provider: "p".into(), model: "m".into() };
        let send = |_: Vec<String>| {
            std::future::ready(Err(ProviderError::Connect { provider: "p".into(), detail: "refused".into() }))
        };
        let window = Duration::from_millis(20);
        let (a, b) = tokio::join!(
            batcher.embed(&model, vec!["a".into()], window, 8, send),
            batcher.embed(&model, vec!["b".into()], window, 8, send),
        );
        assert!(matches!(a, Err(ProviderError::Connect { .. })) && matches!(b, Err(ProviderError::Connect { .. })));
    }
}
