//! Language-model calls: providers, routing of tiers to models, cost
//! metering and budgets, and the output cache. See docs/models.md.

pub mod batch;
pub mod cache;
pub mod config;
pub mod costs;
pub mod embedder;
pub mod offline;
pub mod openai;
pub mod provider;
pub mod report;
pub mod service;

pub use config::ModelConfig;
pub use service::{CallScope, Completed, Metered, ModelService, Urgency};

use redb::WriteTransaction;

use crate::memory::StoreError;

/// Creates the model tables; called when the database is opened.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    costs::create_tables(txn)?;
    cache::create_tables(txn)
}
