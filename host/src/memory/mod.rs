//! The memory plane: one redb file per workspace holds all state.
//!
//! Tables are declared next to the code that owns them (`kv`, `plugins`,
//! `audit`); this module opens the file, checks its schema version and maps
//! redb's errors to messages that say what to do.

pub mod audit;
pub mod kv;
pub mod plugins;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// The schema this keel writes. Bump it, and add a migration in
/// [`Store::migrate`], whenever a table changes shape.
pub const SCHEMA_VERSION: u64 = 1;

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
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.into()) }
        }
    )*};
}
storage_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The workspace database.
pub struct Store {
    db: Database,
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
        let store = Store { db, path: path.into() };
        store.migrate()?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Brings the file to [`SCHEMA_VERSION`], creating every table, or
    /// refuses a file written by a newer keel.
    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_KEY)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema { path: self.path.clone(), found: v });
                }
                Some(_) => {}
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
            }
        }
        kv::create_tables(&txn)?;
        plugins::create_tables(&txn)?;
        audit::create_tables(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(SCHEMA_KEY)?.map_or(0, |v| v.value()))
    }
}

pub(crate) fn now_ms() -> u64 {
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
