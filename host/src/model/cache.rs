//! Answers to deterministic completions, kept in the database so the same
//! question is paid for once.
//!
//! The key is a SHA-256 over the plugin, the tier's models and the whole
//! request, so a different prompt, model list or schema never hits. Keys
//! include the plugin: a plugin cannot learn from cache timing what another
//! one asked. Entries expire after `ttl_hours`; past `max_entries` the
//! oldest go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{CacheConfig, ModelRef};
use super::provider::{ChatRequest, Usage};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError};

/// Request hash -> cached answer (JSON).
const ANSWERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("model_cache");
/// (stored at, request hash): oldest first, for the size bound.
const BY_AGE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("model_cache_by_age");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ANSWERS)?;
    txn.open_table(BY_AGE)?;
    Ok(())
}

/// A cached completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub text: String,
    pub json: Option<String>,
    /// What the original call used; a hit costs nothing.
    pub usage: Usage,
    /// `provider/model` that answered.
    pub model: String,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The cache key of `request` from `plugin` for a tier served by `chain`.
pub fn key(plugin: &str, chain: &[ModelRef], request: &ChatRequest) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keel-model-cache-v1\0");
    h.update(plugin.as_bytes());
    h.update(b"\0");
    for model in chain {
        h.update(model.to_string().as_bytes());
        h.update(b"\0");
    }
    // serde_json writes struct fields in declaration order: stable.
    h.update(serde_json::to_vec(request).unwrap_or_default());
    h.finalize().into()
}

/// Answers stored since a recent commit, so a repeat inside the same call
/// (before the answer's write lands) hits too. Bounded; older answers are
/// read from the database.
#[derive(Debug, Default)]
pub struct RecentAnswers {
    answers: Mutex<HashMap<[u8; 32], CachedAnswer>>,
}

/// Deterministic requests being asked right now, by cache key. An identical
/// request that arrives meanwhile (concurrent runs of one agent on the same
/// input, say) waits for that answer instead of paying for it again.
#[derive(Debug, Default)]
pub struct InFlight {
    asking: Mutex<HashMap<[u8; 32], watch::Receiver<Option<CachedAnswer>>>>,
}

/// What [`InFlight::join`] makes of a request.
pub enum Joined {
    /// Nobody asks this yet: ask, then [`Leader::publish`] the answer.
    Leader(Leader),
    /// Someone does: [`Follower::answer`] waits for it.
    Follower(Follower),
}

/// The request that asks the model; its key leaves the table when dropped.
pub struct Leader {
    key: [u8; 32],
    answer: watch::Sender<Option<CachedAnswer>>,
    flight: Arc<InFlight>,
}

pub struct Follower(watch::Receiver<Option<CachedAnswer>>);

impl InFlight {
    pub fn join(self: &Arc<Self>, key: [u8; 32]) -> Joined {
        let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(answer) = asking.get(&key) {
            return Joined::Follower(Follower(answer.clone()));
        }
        let (answer, receiver) = watch::channel(None);
        asking.insert(key, receiver);
        Joined::Leader(Leader { key, answer, flight: self.clone() })
    }
}

impl Leader {
    /// Hands the answer to every follower.
    pub fn publish(&self, answer: &CachedAnswer) {
        self.answer.send_replace(Some(answer.clone()));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flight.asking.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Follower {
    /// The leader's answer; `None` if it got none (it failed, was refused
    /// or cancelled), and the follower must ask for itself.
    pub async fn answer(mut self) -> Option<CachedAnswer> {
        self.0.wait_for(Option::is_some).await.ok().and_then(|answer| answer.clone())
    }
}

/// Answers kept in memory at most; past it the map starts over.
const RECENT_ANSWERS: usize = 1024;

impl RecentAnswers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CachedAnswer>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer under `key`, unless it expired.
    pub fn get(&self, store: &Store, key: &[u8; 32], now_ms: u64) -> Result<Option<CachedAnswer>, StoreError> {
        if let Some(hit) = self.lock().get(key).filter(|a| a.expires_at_ms > now_ms) {
            return Ok(Some(hit.clone()));
        }
        get(store, key, now_ms)
    }

    /// Stores `answer`: in memory at once, in the database with the write.
    pub fn put(&self, key: [u8; 32], answer: CachedAnswer, config: &CacheConfig) -> Mutation {
        let mut recent = self.lock();
        if recent.len() >= RECENT_ANSWERS {
            recent.clear();
        }
        recent.insert(key, answer.clone());
        put(key, answer, config)
    }

    /// Empties the cache, here and in the database; see [`clear`].
    pub async fn clear(&self, store: &Store) -> Result<u64, StoreError> {
        self.lock().clear();
        clear(store).await
    }
}

/// The answer stored under `key`, unless it expired.
fn get(store: &Store, key: &[u8; 32], now_ms: u64) -> Result<Option<CachedAnswer>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(ANSWERS)?;
    let Some(bytes) = table.get(key.as_slice())? else { return Ok(None) };
    let answer: CachedAnswer = serde_json::from_slice(bytes.value())
        .map_err(|e| StoreError::Corrupt { what: "a model cache entry".into(), detail: e.to_string() })?;
    Ok((answer.expires_at_ms > now_ms).then_some(answer))
}

/// Stores `answer` under `key`, dropping the oldest entries beyond the
/// bound.
fn put(key: [u8; 32], answer: CachedAnswer, config: &CacheConfig) -> Mutation {
    let max_entries = config.max_entries;
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        let mut answers = txn.open_table(ANSWERS)?;
        let mut by_age = txn.open_table(BY_AGE)?;
        if let Some(old) = answers.insert(key.as_slice(), bytes.as_slice())? {
            let old: Option<CachedAnswer> = serde_json::from_slice(old.value()).ok();
            if let Some(old) = old {
                by_age.remove((old.stored_at_ms, key.as_slice()))?;
            }
        }
        by_age.insert((answer.stored_at_ms, key.as_slice()), ())?;
        while answers.len()? > max_entries {
            let Some((oldest, ())) = by_age.pop_first()?.map(|(k, v)| (k.value().1.to_vec(), v.value())) else {
                break;
            };
            answers.remove(oldest.as_slice())?;
        }
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "model.cache", apply })
}

/// Entries stored now, expired ones included.
pub fn count(store: &Store) -> Result<u64, StoreError> {
    let txn = store.db().begin_read()?;
    Ok(txn.open_table(ANSWERS)?.len()?)
}

/// Empties the cache for the operator; returns how many entries it held.
/// Audited.
async fn clear(store: &Store) -> Result<u64, StoreError> {
    let entries = count(store)?;
    let apply = Arc::new(|txn: &WriteTransaction| {
        txn.open_table(ANSWERS)?.retain(|_, _| false)?;
        txn.open_table(BY_AGE)?.retain(|_, _| false)?;
        Ok(())
    });
    let entry = AuditEntry::allowed("operator", "model.cache.clear", format!("{entries} entries"));
    let clear = Mutation::Custom(CustomMutation { label: "model.cache.clear", apply });
    store.commit(Batch { mutations: vec![clear], audit: vec![entry] }).await?;
    Ok(entries)
}
