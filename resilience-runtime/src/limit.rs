//! Client-side limits: a rate limiter and a bulkhead (concurrency cap), both lock-free.
//!
//! Both sit behind small traits ([`RateLimit`], [`Bulkhead`]) so a shared backend (a store that
//! every replica of a connector sees) can replace the in-process default without touching the
//! engine or the macros.
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit, Gcra, RateLimit};
//!
//! let rl = Gcra::new(2, Duration::from_secs(1)); // 2 per second, bursts of 2
//! assert!(rl.try_acquire().is_ok());
//! assert!(rl.try_acquire().is_ok());
//! assert!(rl.try_acquire().is_err());
//!
//! let bh = ConcurrencyLimit::new(1);
//! assert!(bh.try_enter());
//! assert!(!bh.try_enter());
//! bh.leave();
//! assert_eq!(bh.in_use(), 0);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock;

/// A client-side rate limiter.
pub trait RateLimit: fmt::Debug + Send + Sync {
    /// Takes one permit now.
    ///
    /// # Errors
    ///
    /// The time until a permit will be available.
    fn try_acquire(&self) -> Result<(), Duration>;

    /// Takes one permit for `key` (the call's `breaker_key`, a tenant id), for limiters that keep
    /// one budget per key. The default ignores the key.
    ///
    /// # Errors
    ///
    /// The time until a permit will be available for `key`.
    fn try_acquire_keyed(&self, key: Option<&str>) -> Result<(), Duration> {
        let _ = key;
        self.try_acquire()
    }
}

/// A concurrency cap.
pub trait Bulkhead: fmt::Debug + Send + Sync {
    /// Takes a slot; false when full.
    fn try_enter(&self) -> bool;
    /// Gives a slot back.
    fn leave(&self);
    /// Slots in use.
    fn in_use(&self) -> usize;

    /// Changes the cap in place, keeping the calls inside; false (the default) when this
    /// bulkhead cannot, and the registry then installs a new one.
    fn resize(&self, max: usize) -> bool {
        let _ = max;
        false
    }
}

/// The generic cell rate algorithm: `rate` permits per `per`, with bursts of up to `rate`.
/// One compare-and-swap per permit.
#[derive(Debug)]
pub struct Gcra {
    emission: u64,
    tolerance: u64,
    tat: AtomicU64,
}

impl Gcra {
    /// `rate` permits per `per`; `rate` of 0 is treated as 1.
    pub fn new(rate: u32, per: Duration) -> Gcra {
        let rate = u64::from(rate.max(1));
        let emission = (clock::nanos(per) / rate).max(1);
        Gcra {
            emission,
            tolerance: emission * (rate - 1),
            tat: AtomicU64::new(0),
        }
    }
}

impl RateLimit for Gcra {
    fn try_acquire(&self) -> Result<(), Duration> {
        let now = clock::now_nanos();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let t = tat.max(now);
            let allow_at = t.saturating_sub(self.tolerance);
            if now < allow_at {
                return Err(Duration::from_nanos(allow_at - now));
            }
            match self.tat.compare_exchange_weak(
                tat,
                t + self.emission,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// A bulkhead of `max` concurrent calls.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: AtomicUsize,
    in_use: AtomicUsize,
}

impl ConcurrencyLimit {
    /// At most `max` calls at once.
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max: AtomicUsize::new(max),
            in_use: AtomicUsize::new(0),
        }
    }
}

impl Bulkhead for ConcurrencyLimit {
    fn try_enter(&self) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    fn resize(&self, max: usize) -> bool {
        self.max.store(max, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_a_burst_then_paces() {
        let rl = Gcra::new(4, Duration::from_secs(1));
        for _ in 0..4 {
            rl.try_acquire().unwrap();
        }
        assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(250)).await;
        rl.try_acquire().unwrap();
        assert!(rl.try_acquire().is_err());
    }

    #[test]
    fn bulkhead_caps_and_releases() {
        let b = ConcurrencyLimit::new(2);
        assert!(b.try_enter() && b.try_enter());
        assert!(!b.try_enter());
        b.leave();
        assert!(b.try_enter());
        b.leave();
        b.leave();
        b.leave();
        assert_eq!(b.in_use(), 0);
    }
}
