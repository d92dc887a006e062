//! Retry budgets shared by the fleet: one bucket on the server (`{bu:name}`, tokens in
//! thousandths), that every replica's sync flushes its spends and refunds into and reads back.
//!
//! Between two syncs a replica answers from the balance it read last, less what it spent since;
//! so the fleet together may overdraw by what the other replicas spent in one sync interval,
//! and each replica's own bucket still bounds it alone. The balance refills with the refunds the
//! replicas' buckets take in (a success that finds its local bucket full refunds nothing here
//! either).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::scripts;
use super::task::{self, RoundTripError, round_trip};
use super::{Inner, lock};
use crate::budget::RetryBudget;
use crate::store::BudgetStore;

/// The budget key's lifetime when no replica syncs it: an idle fleet's budget starts full again.
const IDLE: Duration = Duration::from_secs(3600);

/// The budgets this backend serves.
#[derive(Default)]
pub(super) struct Registered {
    list: Mutex<Vec<Arc<Entry>>>,
}

/// One budget of this replica, and its view of the fleet's.
struct Entry {
    name: Arc<str>,
    budget: Weak<RetryBudget>,
    /// The fleet's tokens (thousandths) as of the last sync, less this replica's spends since.
    view: AtomicI64,
    /// Whether `view` was read from the server yet.
    synced: AtomicBool,
    /// Thousandths spent here since the last flush.
    pending: AtomicU64,
    /// The local bucket's tokens at the last flush: what it holds beyond that, plus what was
    /// spent, is what successes refunded.
    last_tokens: AtomicU64,
}

impl Registered {
    pub(super) fn attach(
        &self,
        inner: &Arc<Inner>,
        name: &str,
        budget: &Arc<RetryBudget>,
    ) -> Arc<dyn BudgetStore> {
        let entry = Arc::new(Entry {
            name: name.into(),
            budget: Arc::downgrade(budget),
            view: AtomicI64::new(0),
            synced: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            last_tokens: AtomicU64::new(budget.tokens_milli()),
        });
        let mut list = lock(&self.list);
        list.retain(|e| {
            e.budget.strong_count() > 0 && !std::ptr::eq(e.budget.as_ptr(), Arc::as_ptr(budget))
        });
        list.push(entry.clone());
        Arc::new(Store {
            inner: inner.clone(),
            entry,
        })
    }
}

/// A retry's cost in thousandths.
fn cost(b: &RetryBudget) -> u64 {
    u64::from(b.config().retry_cost) * 1000
}

/// The store of a budget served by Redis.
struct Store {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("backend", &self.inner.config.shown)
            .field("budget", &self.entry.name)
            .field("view_milli", &self.entry.view.load(Ordering::Relaxed))
            .finish()
    }
}

impl BudgetStore for Store {
    fn may_spend(&self, budget: &RetryBudget) -> bool {
        task::start(&self.inner);
        // Not sharing, or not read yet: the local bucket decides alone.
        if !self.inner.sharing() || !self.entry.synced.load(Ordering::Acquire) {
            return true;
        }
        let cost = i64::try_from(cost(budget)).unwrap_or(i64::MAX);
        self.entry.view.load(Ordering::Acquire) >= cost
    }

    fn spent(&self, budget: &RetryBudget) {
        let cost = cost(budget);
        self.entry
            .view
            .fetch_sub(i64::try_from(cost).unwrap_or(i64::MAX), Ordering::AcqRel);
        self.entry.pending.fetch_add(cost, Ordering::AcqRel);
    }
}

/// Flushes every budget's spends and refunds and reads the fleet's balance back.
pub(super) async fn sync(
    inner: &Inner,
    conn: &mut ConnectionManager,
) -> Result<(), RoundTripError> {
    let entries: Vec<Arc<Entry>> = {
        let mut list = lock(&inner.budgets.list);
        list.retain(|e| e.budget.strong_count() > 0);
        list.clone()
    };
    for e in entries {
        let Some(budget) = e.budget.upgrade() else {
            continue;
        };
        let tokens = budget.tokens_milli();
        let spent = e.pending.swap(0, Ordering::AcqRel);
        let refunded = (tokens + spent).saturating_sub(e.last_tokens.load(Ordering::Acquire));
        let capacity = u64::from(budget.config().capacity) * 1000;
        let mut call = scripts::BUDGET.prepare_invoke();
        call.key(inner.key(&format!("bu:{}", e.name), ""))
            .arg(capacity)
            .arg(refunded)
            .arg(spent)
            .arg(u64::try_from(IDLE.as_millis()).unwrap_or(u64::MAX));
        match round_trip::<i64>(inner.config.round_trip_limit, call.invoke_async(conn)).await {
            Ok(fleet) => {
                e.last_tokens.store(tokens, Ordering::Release);
                let since = i64::try_from(e.pending.load(Ordering::Acquire)).unwrap_or(i64::MAX);
                e.view.store(fleet.saturating_sub(since), Ordering::Release);
                e.synced.store(true, Ordering::Release);
            }
            Err(err) => {
                // Flushed on a later sync.
                e.pending.fetch_add(spent, Ordering::AcqRel);
                return Err(err);
            }
        }
    }
    Ok(())
}
