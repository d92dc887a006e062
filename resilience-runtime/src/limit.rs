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
use crate::store::Permit;

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

    /// What the engine asks before each attempt: a permit for `key` (see
    /// [`try_acquire_keyed`](RateLimit::try_acquire_keyed)), answered at once or, for a limiter
    /// kept on a server, by a round trip the call awaits ([`Permit::Ask`]; see the
    /// [store seam](crate::store)). The default answers at once with `try_acquire_keyed`.
    #[inline]
    fn acquire(&self, key: Option<&str>) -> Permit {
        self.try_acquire_keyed(key).into()
    }

    /// Grants no permit for `key` (see [`try_acquire_keyed`](RateLimit::try_acquire_keyed); a
    /// limiter with one budget for every caller pauses it whole) until `for_` has passed: what the
    /// engine does when an attempt at a site with this `rate_limit` fails
    /// [`Throttled`](crate::ErrorClass::Throttled) with a wait hint, because a server such as
    /// Graph throttles per app and tenant, not per operation. Calls the paused limiter refuses
    /// wait for capacity like any refused call, within their deadline or worst-case schedule.
    ///
    /// A pause never shortens one in force, and a huge `for_` saturates rather than wraps. The
    /// default does nothing: a limiter that cannot pause (one kept on a server that has no such
    /// command) still limits, and the throttled call itself still waits out the hint.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::limit::{Gcra, RateLimit};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let graph = Gcra::new(100, Duration::from_secs(1));
    /// graph.pause(None, Duration::from_secs(7));
    /// assert_eq!(graph.try_acquire(), Err(Duration::from_secs(7)));
    /// tokio::time::advance(Duration::from_secs(7)).await;
    /// assert_eq!(graph.try_acquire(), Ok(()));
    /// # }
    /// ```
    fn pause(&self, key: Option<&str>, for_: Duration) {
        let _ = (key, for_);
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
///
/// [`pause`](RateLimit::pause) moves the theoretical arrival time forward: no permit is granted
/// before the pause ends, and after it permits come at the limiter's rate, its burst refilling
/// from empty, so that the calls that waited out a server's throttling do not all arrive at the
/// instant it lifts.
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
                // Saturating: a period of centuries must never wrap to a time in the past,
                // which would grant every later permit.
                t.saturating_add(self.emission),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Moves the theoretical arrival time to at least `now + for_ + tolerance`, where the next
    /// permit is allowed at `now + for_` exactly. The key is ignored: one budget for every caller.
    fn pause(&self, _key: Option<&str>, for_: Duration) {
        let until = clock::now_nanos().saturating_add(clock::nanos(for_));
        // `fetch_max`: a shorter pause never shortens a longer one, nor takes back permits
        // already granted past it.
        self.tat
            .fetch_max(until.saturating_add(self.tolerance), Ordering::AcqRel);
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

    #[tokio::test(start_paused = true)]
    async fn a_pause_refuses_every_permit_until_it_ends_then_paces() {
        let rl = Gcra::new(4, Duration::from_secs(1));
        rl.try_acquire().unwrap();
        rl.pause(None, Duration::from_secs(3));
        assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_secs(3));
        assert_eq!(
            rl.try_acquire_keyed(Some("contoso")).unwrap_err(),
            Duration::from_secs(3)
        );
        // A shorter pause does not shorten it.
        rl.pause(None, Duration::from_secs(1));
        assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        // One permit at the end of the pause, then one per emission interval (250 ms).
        rl.try_acquire().unwrap();
        assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_of_any_length_saturates_instead_of_wrapping() {
        let rl = Gcra::new(10, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        rl.pause(None, Duration::MAX);
        assert!(rl.try_acquire().is_err());
        rl.pause(None, Duration::MAX);
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert!(rl.try_acquire().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever the rate and the period, from one permit a century to a billion a
        /// nanosecond: the limiter never panics, never grants more than its burst at one
        /// instant, and never more than its quota over time.
        #[test]
        fn no_rate_or_period_makes_the_limiter_panic_or_overgrant(
            rate in proptest::prop_oneof![0u32..4, proptest::prelude::any::<u32>()],
            per_nanos in proptest::prelude::any::<u64>(),
            per_secs_extra in 0u64..u64::MAX / 2,
            step_nanos in 1u64..10_000_000_000,
            start_nanos in 1u64..1_000_000_000_000,
        ) {
            let per = Duration::from_nanos(per_nanos) + Duration::from_secs(per_secs_extra % 3);
            let per = if per_secs_extra % 5 == 0 { Duration::MAX } else { per };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                // Not at the clock's origin: a late start is where an unbounded period wraps.
                let _ = crate::clock::now_nanos();
                tokio::time::advance(Duration::from_nanos(start_nanos)).await;
                let gcra = Gcra::new(rate, per);
                let burst = u64::from(rate.max(1));
                // At one instant: at most the burst (tried up to 10,000 times).
                let tries = burst.min(10_000) + 1;
                let granted = (0..tries).filter(|_| gcra.try_acquire().is_ok()).count() as u64;
                proptest::prop_assert!(granted <= burst);
                // Over time: permits granted <= burst + elapsed / emission.
                let mut total = granted;
                let mut elapsed = 0u64;
                for _ in 0..20 {
                    tokio::time::advance(Duration::from_nanos(step_nanos)).await;
                    elapsed += step_nanos;
                    total += (0..tries).filter(|_| gcra.try_acquire().is_ok()).count() as u64;
                }
                let quota = burst.saturating_add(elapsed / gcra.emission.max(1));
                proptest::prop_assert!(total <= quota, "{total} > {quota}");
                Ok(())
            })?;
        }
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
