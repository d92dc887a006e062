//! The token bucket behind a retry budget, in thousandths of a token.
//!
//! It takes its atomics from `super::sync`, so the loom model in `tests/loom_budget.rs` compiles
//! this same file against loom's atomics without any `--cfg` flag.

use super::sync::{AtomicU64, Ordering};

/// A lock-free bucket: spends never overdraw, refunds never overfill.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: AtomicU64,
    exhausted: AtomicU64,
}

impl Bucket {
    /// A bucket holding `tokens` thousandths.
    pub(crate) fn new(tokens: u64) -> Bucket {
        Bucket {
            tokens: AtomicU64::new(tokens),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Thousandths of a token left.
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// Spends refused.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Takes `cost` if the bucket holds it; otherwise takes nothing and counts a refusal.
    pub(crate) fn try_spend(&self, cost: u64) -> bool {
        let ok = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok();
        if !ok {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Lowers the tokens to `cap` if they are above it (a smaller capacity).
    /// Counts a retry refused by something other than the bucket (a shared store).
    pub(crate) fn refused(&self) {
        self.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cap(&self, cap: u64) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t > cap).then_some(cap)
            });
    }

    /// Whether the bucket holds `cap` tokens or more: one load.
    #[inline(always)]
    pub(crate) fn is_full(&self, cap: u64) -> bool {
        self.tokens.load(Ordering::Relaxed) >= cap
    }

    /// Adds `add`, up to `cap`. A full bucket costs one load.
    #[inline]
    pub(crate) fn refund(&self, add: u64, cap: u64) {
        if self.tokens.load(Ordering::Relaxed) >= cap {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t.saturating_add(add).min(cap))
            });
    }
}
