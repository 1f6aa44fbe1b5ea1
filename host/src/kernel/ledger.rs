//! What proposals have used so far: rate-limit token buckets and money
//! committed per UTC day. Both are durable (they survive `keel` processes
//! coming and going) and kept exact in memory, since one process owns the
//! database at a time. Spend in calls that have not finished yet is held as
//! a reservation, so concurrent calls cannot overspend together; a failed
//! call releases it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::policy::Rate;
use crate::memory::committer::{CustomMutation, Mutation};
use crate::memory::{Store, StoreError};

/// Bucket key -> (tokens in thousandths, last refill, Unix ms).
const BUCKETS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("kernel_rate_buckets");
/// (UTC day, scope) -> minor units committed.
const SPEND: TableDefinition<(&str, &str), i64> = TableDefinition::new("kernel_spend");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BUCKETS)?;
    txn.open_table(SPEND)?;
    Ok(())
}

/// The scope of the whole workspace's budget.
pub const WORKSPACE: &str = "*";

/// The scope of one plugin's budget.
pub fn plugin_scope(plugin: &str) -> String {
    format!("plugin:{plugin}")
}

/// The scope of one workflow's budget.
pub fn workflow_scope(workflow: &str) -> String {
    format!("workflow:{workflow}")
}

/// `YYYY-MM-DD` of a Unix time in ms, in UTC.
pub fn utc_day(ms: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

/// Money held for a call in flight: (UTC day, scope, amount).
type Reservation = (String, String, i64);

/// Rate buckets and spend, shared by all calls of a runtime.
#[derive(Debug, Default)]
pub struct Ledger {
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Spend reserved by calls in flight, by task id.
    reserved: Mutex<HashMap<String, Vec<Reservation>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// Takes one token from bucket `key` refilled at `rate`; false if empty.
    pub fn take_token(&self, store: &Store, key: &str, rate: Rate, now_ms: u64) -> Result<bool, StoreError> {
        let capacity = u64::from(rate.burst) * 1000;
        let mut buckets = lock(&self.buckets);
        let bucket = match buckets.get(key) {
            Some(b) => *b,
            None => {
                let txn = store.db().begin_read()?;
                let stored = txn.open_table(BUCKETS)?.get(key)?.map(|v| v.value());
                stored.map_or(Bucket { milli_tokens: capacity, at_ms: now_ms }, |(milli_tokens, at_ms)| Bucket {
                    milli_tokens,
                    at_ms,
                })
            }
        };
        // per_minute tokens per 60,000 ms = per_minute thousandths per 60 ms.
        let refill = now_ms.saturating_sub(bucket.at_ms).saturating_mul(u64::from(rate.per_minute)) / 60;
        let mut milli_tokens = bucket.milli_tokens.saturating_add(refill).min(capacity);
        let granted = milli_tokens >= 1000;
        if granted {
            milli_tokens -= 1000;
        }
        buckets.insert(key.to_owned(), Bucket { milli_tokens, at_ms: now_ms });
        Ok(granted)
    }

    /// Saves the buckets in `keys` as they are now.
    pub fn save_buckets(&self, keys: &[String]) -> Option<Mutation> {
        let buckets = lock(&self.buckets);
        let rows: Vec<(String, u64, u64)> =
            keys.iter().filter_map(|k| buckets.get(k).map(|b| (k.clone(), b.milli_tokens, b.at_ms))).collect();
        if rows.is_empty() {
            return None;
        }
        let apply = Arc::new(move |txn: &WriteTransaction| {
            let mut table = txn.open_table(BUCKETS)?;
            for (k, tokens, at) in &rows {
                table.insert(k.as_str(), (*tokens, *at))?;
            }
            Ok(())
        });
        Some(Mutation::Custom(CustomMutation { label: "kernel.rate_buckets", apply }))
    }

    /// Money committed on `day` in `scope`, reservations of calls in flight
    /// included.
    pub fn spent(&self, store: &Store, day: &str, scope: &str) -> Result<i64, StoreError> {
        let txn = store.db().begin_read()?;
        let durable = txn.open_table(SPEND)?.get((day, scope))?.map_or(0, |v| v.value());
        let reserved: i64 = lock(&self.reserved)
            .values()
            .flatten()
            .filter(|(d, s, _)| d == day && s == scope)
            .map(|(_, _, amount)| *amount)
            .sum();
        Ok(durable.saturating_add(reserved))
    }

    /// Holds `amount` in `scope` for call `task` until [`Ledger::release`].
    pub fn reserve(&self, task: &str, day: &str, scope: &str, amount: i64) {
        lock(&self.reserved).entry(task.to_owned()).or_default().push((day.to_owned(), scope.to_owned(), amount));
    }

    /// Drops the reservations of call `task` (its spend is durable by now,
    /// or the call failed and spent nothing).
    pub fn release(&self, task: &str) {
        lock(&self.reserved).remove(task);
    }
}

/// Adds `amount` to the spend of `scope` on `day`, in the committing batch.
pub fn record_spend(day: String, scope: String, amount: i64) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let mut table = txn.open_table(SPEND)?;
        let before = table.get((day.as_str(), scope.as_str()))?.map_or(0, |v| v.value());
        table.insert((day.as_str(), scope.as_str()), before.saturating_add(amount))?;
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "kernel.spend", apply })
}

impl Store {
    /// Durable spend per scope on `day`.
    pub fn spend_on(&self, day: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(SPEND)?;
        let mut out = Vec::new();
        for item in table.range((day, "")..)? {
            let (k, v) = item?;
            let (d, scope) = k.value();
            if d != day {
                break;
            }
            out.push((scope.to_owned(), v.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days_are_calendar_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_795_651_200_000 - 1), "2026-11-25");
        assert_eq!(utc_day(1_795_651_200_000), "2026-11-26");
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let ledger = Ledger::default();
        let rate = Rate { per_minute: 60, burst: 2 };
        let t = 1_000_000;
        assert!(ledger.take_token(&store, "p", rate, t).unwrap());
        assert!(ledger.take_token(&store, "p", rate, t).unwrap());
        assert!(!ledger.take_token(&store, "p", rate, t + 500).unwrap(), "half a token after 500 ms");
        assert!(ledger.take_token(&store, "p", rate, t + 1000).unwrap(), "one per second");
        assert!(!ledger.take_token(&store, "p", rate, t + 1000).unwrap());
    }
}
