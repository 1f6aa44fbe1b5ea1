//! What model calls cost, per UTC day and scope (the workspace, a plugin,
//! a model, a run), and the budgets on it.
//!
//! Before a call, its estimated cost is reserved against every budget that
//! applies; the call is refused if any would be overrun. After the call,
//! the reservation is replaced by the actual cost, which is written to the
//! database with the call's audit entry. The in-memory totals are exact
//! (one process owns the database), so concurrent calls cannot overspend
//! together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::memory::committer::{CustomMutation, Mutation};
use crate::memory::{Store, StoreError};

/// [`Totals`] as stored: micros, calls, cached, input and output tokens.
type TotalsRow = (u64, u64, u64, u64, u64);

/// (UTC day, scope) -> totals.
const COSTS: TableDefinition<(&str, &str), TotalsRow> = TableDefinition::new("model_costs");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(COSTS)?;
    Ok(())
}

/// The scope of the whole workspace.
pub const WORKSPACE: &str = "*";

/// What one scope spent on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub micros: u64,
    pub calls: u64,
    /// Calls answered from the cache (free).
    pub cached: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.micros = self.micros.saturating_add(other.micros);
        self.calls += other.calls;
        self.cached += other.cached;
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
    }

    fn tuple(&self) -> TotalsRow {
        (self.micros, self.calls, self.cached, self.input_tokens, self.output_tokens)
    }

    fn from_tuple((micros, calls, cached, input_tokens, output_tokens): TotalsRow) -> Totals {
        Totals { micros, calls, cached, input_tokens, output_tokens }
    }
}

/// A budget that applies to a call: its scope, limit in micro-units and
/// how to name it to the plugin.
#[derive(Debug, Clone)]
pub struct Budget {
    pub scope: String,
    pub limit: u64,
    pub who: String,
}

/// Money held for a call in flight; give it back to [`CostMeter::settle`].
#[derive(Debug)]
#[must_use = "settle the reservation with the call's actual cost"]
pub struct Reservation {
    id: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Durable or queued spend per (day, scope), loaded on first use.
    spent: HashMap<(String, String), u64>,
    /// Estimates of calls in flight: id -> (day, scope, micros).
    reserved: HashMap<u64, Vec<(String, String, u64)>>,
    next_id: u64,
}

/// Model spend of a workspace, shared by all calls.
#[derive(Debug, Default)]
pub struct CostMeter {
    inner: Mutex<Inner>,
}

impl CostMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `estimate` on `day` against every budget in `budgets`, or
    /// says which one it would overrun.
    pub fn reserve(
        &self,
        store: &Store,
        day: &str,
        budgets: &[Budget],
        estimate: u64,
    ) -> Result<Result<Reservation, String>, StoreError> {
        let mut inner = self.lock();
        for budget in budgets {
            let key = (day.to_owned(), budget.scope.clone());
            let spent = match inner.spent.get(&key) {
                Some(v) => *v,
                None => {
                    let durable = durable_totals(store, day, &budget.scope)?.micros;
                    inner.spent.insert(key, durable);
                    durable
                }
            };
            let held: u64 = inner
                .reserved
                .values()
                .flatten()
                .filter(|(d, s, _)| d == day && *s == budget.scope)
                .map(|(_, _, m)| m)
                .sum();
            let committed = spent.saturating_add(held);
            if committed.saturating_add(estimate) > budget.limit {
                return Ok(Err(format!(
                    "the daily model budget of {} for {} would be exceeded: {} spent or held today, this call may cost up to {}",
                    micros_text(budget.limit),
                    budget.who,
                    micros_text(committed),
                    micros_text(estimate)
                )));
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let held = budgets.iter().map(|b| (day.to_owned(), b.scope.clone(), estimate)).collect();
        inner.reserved.insert(id, held);
        Ok(Ok(Reservation { id }))
    }

    /// Replaces `reservation` by what the call cost; returns the write that
    /// adds each row's totals to its scope on `day`.
    pub fn settle(&self, reservation: Reservation, day: &str, rows: Vec<(String, Totals)>) -> Mutation {
        let mut inner = self.lock();
        inner.reserved.remove(&reservation.id);
        for (scope, totals) in &rows {
            if let Some(spent) = inner.spent.get_mut(&(day.to_owned(), scope.clone())) {
                *spent = spent.saturating_add(totals.micros);
            }
        }
        record(day.to_owned(), rows)
    }

    /// Records a call that cost nothing (a cache hit): it reserved nothing.
    pub fn settle_free(&self, day: &str, rows: Vec<(String, Totals)>) -> Mutation {
        record(day.to_owned(), rows)
    }
}

/// Adds each row's totals to its scope on `day`, in the committing batch.
fn record(day: String, rows: Vec<(String, Totals)>) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let mut table = txn.open_table(COSTS)?;
        for (scope, charge) in &rows {
            let key = (day.as_str(), scope.as_str());
            let mut totals = table.get(key)?.map_or_else(Totals::default, |v| Totals::from_tuple(v.value()));
            totals.add(charge);
            table.insert(key, totals.tuple())?;
        }
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "model.costs", apply })
}

fn durable_totals(store: &Store, day: &str, scope: &str) -> Result<Totals, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(COSTS)?;
    Ok(table.get((day, scope))?.map_or_else(Totals::default, |v| Totals::from_tuple(v.value())))
}

/// Micro-units as a decimal amount, e.g. `1.010000`.
pub fn micros_text(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

impl Store {
    /// Every (day, scope, totals) recorded from `since_day` on, in order.
    pub fn model_costs_since(&self, since_day: &str) -> Result<Vec<(String, String, Totals)>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(COSTS)?;
        let mut out = Vec::new();
        for item in table.range((since_day, "")..)? {
            let (k, v) = item?;
            let (day, scope) = k.value();
            out.push((day.to_owned(), scope.to_owned(), Totals::from_tuple(v.value())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Vec<Budget> {
        vec![Budget { scope: "plugin:p".into(), limit, who: "plugin `p`".into() }]
    }

    #[tokio::test]
    async fn reservations_count_until_settled_then_the_actual_cost_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let meter = CostMeter::default();
        let day = "2026-11-26";
        let first = meter.reserve(&store, day, &budget(1_000_000), 600_000).unwrap().unwrap();
        let refused = meter.reserve(&store, day, &budget(1_000_000), 500_000).unwrap().unwrap_err();
        assert!(refused.contains("1.000000") && refused.contains("0.600000"), "{refused}");
        let charge = Totals { micros: 400_000, calls: 1, ..Totals::default() };
        let write = meter.settle(first, day, vec![("plugin:p".into(), charge)]);
        store.commit(crate::memory::committer::Batch { mutations: vec![write], audit: vec![] }).await.unwrap();
        let second = meter.reserve(&store, day, &budget(1_000_000), 600_000).unwrap();
        assert!(second.is_ok(), "0.4 spent + 0.6 fits 1.0 exactly");
        assert!(meter.reserve(&store, day, &budget(1_000_000), 1).unwrap().is_err(), "nothing left");
        let rows = store.model_costs_since(day).unwrap();
        assert_eq!(rows, vec![(day.to_owned(), "plugin:p".to_owned(), charge)]);
        let fresh = CostMeter::default();
        assert!(fresh.reserve(&store, day, &budget(1_000_000), 600_001).unwrap().is_err(), "durable spend reloads");
    }
}
