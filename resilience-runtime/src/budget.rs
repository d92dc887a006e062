//! Retry budgets: in an outage, retries stop while first attempts go on.
//!
//! A budget is a token bucket in integer fixed point (thousandths of a token), in the spirit of
//! the AWS SDKs' retry quota and gRPC's retry throttling: a retry spends tokens, a success puts a
//! token back, and when the bucket cannot pay for a retry the retry is not made. With the defaults
//! (capacity 100, a retry costs 5, a success refunds 1) a full outage stops retrying after twenty
//! retries, so each logical call reaches the failing dependency about once; with 10% random
//! failures the bucket stays full.
//!
//! ```
//! use resilience_runtime::budget::{BudgetConfig, RetryBudget};
//!
//! let b = RetryBudget::new(BudgetConfig::new().with_capacity(10).with_retry_cost(5));
//! assert!(b.try_spend());
//! assert!(b.try_spend());
//! assert!(!b.try_spend()); // empty: no more retries
//! b.refund();
//! assert_eq!(b.tokens_milli(), 1_000);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use resilience_policy as policy;

use self::bucket::Bucket;
use crate::InvalidConfig;
use crate::store::{self, BudgetStore, StoreCell};
use std::sync::Arc;

mod bucket;

/// The atomics the bucket is built on; the loom model swaps in loom's.
mod sync {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}

const MILLI: u64 = 1_000;

/// A retry budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Tokens the bucket holds when full (default 100).
    pub capacity: u32,
    /// Tokens one retry costs (default 5).
    pub retry_cost: u32,
    /// Thousandths of a token a success refunds (default 1000, one token).
    pub refund_milli: u32,
    /// Whether the budget is enforced (default true).
    pub enabled: bool,
}

impl BudgetConfig {
    /// The defaults: capacity 100, a retry costs 5, a success refunds 1.
    pub const fn new() -> Self {
        BudgetConfig {
            capacity: 100,
            retry_cost: 5,
            refund_milli: 1_000,
            enabled: true,
        }
    }

    /// Sets the capacity.
    pub const fn with_capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the cost of one retry.
    pub const fn with_retry_cost(mut self, cost: u32) -> Self {
        self.retry_cost = cost;
        self
    }

    /// Sets the refund per success, in thousandths of a token.
    pub const fn with_refund_milli(mut self, refund: u32) -> Self {
        self.refund_milli = refund;
        self
    }

    /// A budget that never says no.
    pub const fn unlimited() -> Self {
        let mut c = BudgetConfig::new();
        c.enabled = false;
        c
    }

    /// Checks the settings against the policy's rules (see [`policy`]).
    ///
    /// # Errors
    ///
    /// - `capacity` of 0 while enabled;
    /// - `retry_cost` of 0 or above `capacity`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !self.enabled {
            return Ok(());
        }
        policy::check_budget_capacity(self.capacity)?;
        policy::check_retry_cost(self.retry_cost, self.capacity)?;
        Ok(())
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig::new()
    }
}

/// A lock-free retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    /// The settings, replaced by [`RetryBudget::reconfigure`]; what the paths below read of them
    /// is kept in the atomics beside.
    config: std::sync::Mutex<BudgetConfig>,
    bucket: Bucket,
    /// The refund cap in thousandths: the capacity, or 0 when the budget is off, so that a
    /// refund is one load and one compare when the bucket is full or the budget disabled.
    refund_cap: AtomicU64,
    /// A retry's cost in thousandths; `u64::MAX` when the budget is off (it pays every retry).
    retry_cost: AtomicU64,
    /// A success's refund in thousandths.
    refund_milli: AtomicU64,
    /// The name's shared side ([`crate::store`]), if a backend serves it: asked before a retry.
    store: StoreCell<dyn BudgetStore>,
}

/// What a budget's paths read of `config`: the refund cap, a retry's cost and a refund.
fn costs_of(config: &BudgetConfig) -> (u64, u64, u64) {
    let capacity = u64::from(config.capacity) * MILLI;
    if config.enabled {
        (
            capacity,
            u64::from(config.retry_cost) * MILLI,
            u64::from(config.refund_milli),
        )
    } else {
        (0, u64::MAX, 0)
    }
}

impl RetryBudget {
    /// A full budget.
    pub fn new(config: BudgetConfig) -> RetryBudget {
        let (cap, cost, refund) = costs_of(&config);
        RetryBudget {
            config: std::sync::Mutex::new(config),
            bucket: Bucket::new(u64::from(config.capacity) * MILLI),
            refund_cap: AtomicU64::new(cap),
            retry_cost: AtomicU64::new(cost),
            refund_milli: AtomicU64::new(refund),
            store: StoreCell::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> BudgetConfig {
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the settings of a live budget, keeping its tokens (down to a smaller capacity).
    ///
    /// ```
    /// use resilience_runtime::budget::{BudgetConfig, RetryBudget};
    ///
    /// let b = RetryBudget::new(BudgetConfig::new());
    /// assert!(b.try_spend());
    /// b.reconfigure(BudgetConfig::new().with_capacity(10)).unwrap();
    /// assert_eq!(b.tokens_milli(), 10_000);
    /// ```
    ///
    /// # Errors
    ///
    /// The settings are invalid (see [`BudgetConfig::validate`]); nothing changes then.
    pub fn reconfigure(&self, config: BudgetConfig) -> Result<(), InvalidConfig> {
        config.validate()?;
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        let (cap, cost, refund) = costs_of(&config);
        self.retry_cost.store(cost, Ordering::Relaxed);
        self.refund_milli.store(refund, Ordering::Relaxed);
        self.refund_cap.store(cap, Ordering::Relaxed);
        self.bucket.cap(u64::from(config.capacity) * MILLI);
        Ok(())
    }

    /// Tokens left, in thousandths.
    pub fn tokens_milli(&self) -> u64 {
        self.bucket.tokens()
    }

    /// How many retries this budget has refused.
    pub fn exhausted_total(&self) -> u64 {
        self.bucket.exhausted()
    }

    /// Pays for one retry. Returns false, and pays nothing, when the bucket cannot.
    pub fn try_spend(&self) -> bool {
        let cost = self.retry_cost.load(Ordering::Relaxed);
        // A budget that is off pays every retry; a store bounds them still.
        let local = |b: &Bucket| cost == u64::MAX || b.try_spend(cost);
        let Some(store) = self.store.get() else {
            return local(&self.bucket);
        };
        if !store::guarded("may_spend", false, || store.may_spend(self)) {
            self.bucket.refused();
            return false;
        }
        if !local(&self.bucket) {
            return false;
        }
        store::guarded("spent", (), || store.spent(self));
        true
    }

    /// Bounds this budget's retries by `store` as well (see [`crate::store`]): a retry spends
    /// only when the store and the local bucket both agree.
    pub fn set_store(&self, store: Arc<dyn BudgetStore>) {
        self.store.set(Some(store));
    }

    /// Bounds this budget's retries by its local bucket alone again.
    pub fn clear_store(&self) {
        self.store.set(None);
    }

    /// Puts tokens back after a success. A full bucket costs one load.
    #[inline(always)]
    pub fn refund(&self) {
        let cap = self.refund_cap.load(Ordering::Relaxed);
        if self.bucket.is_full(cap) {
            return;
        }
        self.refund_slow(cap);
    }

    #[cold]
    #[inline(never)]
    fn refund_slow(&self, cap: u64) {
        self.bucket
            .refund(self.refund_milli.load(Ordering::Relaxed), cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outage_stops_retries_and_successes_refill() {
        let b = RetryBudget::new(BudgetConfig::new());
        let spent = (0..1000).filter(|_| b.try_spend()).count();
        assert_eq!(spent, 20);
        assert_eq!(b.exhausted_total(), 980);
        for _ in 0..5 {
            b.refund();
        }
        assert!(b.try_spend());
        assert!(!b.try_spend());
        for _ in 0..1000 {
            b.refund();
        }
        assert_eq!(b.tokens_milli(), 100_000);
    }

    #[test]
    fn disabled_budget_always_pays() {
        let b = RetryBudget::new(BudgetConfig::unlimited());
        assert!((0..10_000).all(|_| b.try_spend()));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            BudgetConfig::new()
                .with_capacity(0)
                .validate()
                .unwrap_err()
                .field(),
            "capacity"
        );
        assert_eq!(
            BudgetConfig::new()
                .with_retry_cost(0)
                .validate()
                .unwrap_err()
                .field(),
            "retry_cost"
        );
    }

    #[test]
    fn concurrent_spends_never_overdraw() {
        let b = std::sync::Arc::new(RetryBudget::new(BudgetConfig::new()));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_spend()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 20);
        assert_eq!(b.tokens_milli(), 0);
    }
}
