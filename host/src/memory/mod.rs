//! The memory plane: one redb file per workspace holds all state.
//!
//! Tables are declared next to the code that owns them (`kv`, `plugins`,
//! `audit`); this module opens the file, checks its schema version and maps
//! redb's errors to messages that say what to do.

pub mod audit;
pub mod committer;
pub mod kv;
pub mod plane;
pub mod plugins;
pub mod reclaim;
pub mod records;
pub mod retention;
mod schema;
pub mod semantic;
pub mod stats;
pub mod write_set;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use committer::{Batch, Committer, Receipt};

/// The schema this keel writes. Bump it, and add a step to
/// [`schema::migrate`], whenever a table changes shape.
pub const SCHEMA_VERSION: u64 = schema::CURRENT;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// A failure of the workspace database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "workspace database {path} is in use by another keel process (is `keel serve` running?): stop it or use its API"
    )]
    InUse { path: PathBuf },
    #[error("cannot open workspace database {path}: {source}; run `keel init` to create a workspace")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("workspace schema v{found} in {path} is newer than this keel (v{SCHEMA_VERSION}): upgrade keel")]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("{what} in the workspace database is unreadable ({detail}); restore the workspace from a backup")]
    Corrupt { what: String, detail: String },
    #[error("workspace database failed: {0}; check disk space and permissions, then retry")]
    Storage(#[from] redb::Error),
    #[error("could not save the change ({0}); nothing of it was written: check disk space and permissions, then retry")]
    Commit(String),
    #[error("change refused, nothing of it was written: {0}")]
    Refused(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.into()) }
        }
    )*};
}
storage_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The workspace database. Reads open their own transactions; every write
/// goes through the one [`Committer`].
pub struct Store {
    // Dropped first: commits what is queued before the database closes.
    committer: Committer,
    db: Arc<Database>,
    access: Arc<kv::AccessLog>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Creates a new database at `path`, or opens and migrates an existing one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.into() },
            source => StoreError::Open { path: path.into(), source },
        })?;
        migrate(&db, path)?;
        let access = Arc::new(kv::AccessLog::resume(kv::load_clock(&db)?));
        let db = Arc::new(db);
        Ok(Store { committer: Committer::start(db.clone(), access.clone()), db, access, path: path.into() })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub(crate) fn access(&self) -> &kv::AccessLog {
        &self.access
    }

    /// Commits `batch` durably (group commit), blocking this thread.
    pub fn commit_blocking(&self, batch: Batch) -> Result<Receipt, StoreError> {
        self.committer.commit_blocking(batch)
    }

    /// Commits `batch` durably (group commit).
    pub async fn commit(&self, batch: Batch) -> Result<Receipt, StoreError> {
        self.committer.commit(batch).await
    }

    /// Queues `batch` without waiting; see [`Committer::enqueue`].
    pub fn enqueue(&self, batch: Batch) {
        self.committer.enqueue(batch);
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(SCHEMA_KEY)?.map_or(0, |v| v.value()))
    }
}

impl Drop for Store {
    /// Saves the recency of reads made since the last commit.
    fn drop(&mut self) {
        if self.access.has_touches() {
            self.committer.enqueue(Batch::default());
        }
    }
}

/// Brings the file to [`SCHEMA_VERSION`] in one transaction, creating
/// every table, or refuses a file written by a newer keel.
fn migrate(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let found = txn.open_table(META)?.get(SCHEMA_KEY)?.map(|v| v.value());
    if let Some(v) = found.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StoreError::NewerSchema { path: path.into(), found: v });
    }
    kv::create_tables(&txn)?;
    plugins::create_tables(&txn)?;
    audit::create_tables(&txn)?;
    records::create_tables(&txn)?;
    semantic::storage::create_tables(&txn)?;
    crate::kernel::create_tables(&txn)?;
    crate::model::create_tables(&txn)?;
    crate::workflow::create_tables(&txn)?;
    crate::serve::create_tables(&txn)?;
    if let Some(from) = found.filter(|v| *v < SCHEMA_VERSION) {
        schema::migrate(&txn, from)?;
        tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, "migrated the workspace database");
    }
    txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// How many keys of a `(state, id)` index (runs, intents) are in `state`,
/// counted from the keys alone.
pub(crate) fn count_in_state(
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    state: &str,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for item in index.range((state, "")..)? {
        if item?.0.value().0 != state {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_with_upgrade_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let txn = store.db().begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_KEY, SCHEMA_VERSION + 1).unwrap();
        txn.commit().unwrap();
        drop(store);

        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
        assert!(err.to_string().contains("upgrade keel"), "{err}");
    }

    #[test]
    fn a_second_opener_is_told_who_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    }
}
