//! Backoff schedules: exponential delays, jitter, and the server's Retry-After hint.
//!
//! The delay before retry `n` (0-based) is `min(base * factor^n, max)`, then jittered. The
//! defaults are the connector platforms' standard: base 1s, max 30s, factor 2, proportional
//! jitter of 10% (`delay + uniform(0, delay * 0.1)`).
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::backoff::{Backoff, Jitter, Rng};
//!
//! // The Intune policy: 1s, 2s, 4s, 8s, 16s with jitter off.
//! const POLICY: Backoff = Backoff::new().with_max(Duration::from_secs(16)).with_jitter(Jitter::None);
//! let mut rng = Rng::seeded(7);
//! let delays: Vec<u64> = (0..5).map(|n| POLICY.delay(n, None, &mut rng).as_secs()).collect();
//! assert_eq!(delays, [1, 2, 4, 8, 16]);
//! ```

use std::fmt;
use std::time::Duration;

use resilience_policy::{Schedule, defaults};

use crate::InvalidConfig;

/// How a computed delay is randomised: the policy crate's kinds, the names the attribute accepts.
pub use resilience_policy::Jitter;

/// An exponential backoff schedule. Const-constructible, so a policy can be a `const`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::backoff::{Backoff, Jitter};
///
/// const B: Backoff = Backoff::new()
///     .with_base(Duration::from_millis(250))
///     .with_max(Duration::from_secs(8))
///     .with_factor(3.0)
///     .with_jitter(Jitter::Full);
/// assert!(B.validate().is_ok());
/// assert_eq!(Backoff::default().base, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The largest delay before jitter.
    pub max: Duration,
    /// The growth factor per retry; at least 1.
    pub factor: f64,
    /// The jitter kind.
    pub jitter: Jitter,
}

impl Backoff {
    /// The defaults: base 1s, max 30s, factor 2, proportional jitter 10%.
    pub const fn new() -> Self {
        Backoff {
            base: defaults::BACKOFF_BASE,
            max: defaults::BACKOFF_MAX,
            factor: defaults::BACKOFF_FACTOR,
            jitter: defaults::JITTER,
        }
    }

    /// Sets the first delay.
    pub const fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the largest delay before jitter.
    pub const fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the growth factor.
    pub const fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the jitter kind.
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The schedule as the policy crate computes with it: the same fields, so the worst case
    /// `#[resilient]` checks at compile time is the one the runtime waits within.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::backoff::{Backoff, Jitter};
    ///
    /// let b = Backoff::new().with_jitter(Jitter::None);
    /// assert_eq!(b.schedule().worst_case_total(3), Duration::from_secs(7));
    /// ```
    pub const fn schedule(&self) -> Schedule {
        Schedule {
            base: self.base,
            max: self.max,
            factor: self.factor,
            jitter: self.jitter,
        }
    }

    /// Checks the schedule against the policy's rules ([`Schedule::check`]); the field is
    /// `backoff.base`, `backoff.max`, `backoff.factor` or `backoff.jitter`.
    ///
    /// # Errors
    ///
    /// - `base` or `max` outside 1 ms to 30 days;
    /// - `base` greater than `max`;
    /// - `factor` below 1 or not finite;
    /// - a proportional jitter's fraction not within `0..=1`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.schedule()
            .check()
            .map_err(|v| InvalidConfig::from(v).within("backoff"))
    }

    /// The delay before retry `retry` (0 for the first retry) without jitter:
    /// `min(base * factor^retry, max)`. Saturates for any `retry`; never overflows.
    pub fn raw_delay(&self, retry: u32) -> Duration {
        self.schedule().raw_delay(retry)
    }

    /// The delay before retry `retry`, jittered. `previous` is the delay before the previous retry
    /// (used by [`Jitter::Decorrelated`]; `None` before the first retry).
    pub fn delay(&self, retry: u32, previous: Option<Duration>, rng: &mut Rng) -> Duration {
        let d = self.raw_delay(retry);
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => mul(d, rng.unit()),
            Jitter::Equal => d / 2 + mul(d / 2, rng.unit()),
            Jitter::Decorrelated => {
                let lo = self.base.as_secs_f64();
                let hi = previous.unwrap_or(self.base).as_secs_f64() * 3.0;
                let hi = hi.max(lo);
                let v = lo + (hi - lo) * rng.unit();
                secs(v.min(self.max.as_secs_f64()))
            }
            Jitter::Proportional(p) => d.saturating_add(mul(d, p * rng.unit())),
            // A kind this version does not draw: no jitter, within the schedule's bounds.
            _ => d,
        }
    }

    /// The longest delay jitter can give before retry `retry` ([`Schedule::max_delay`]).
    pub fn max_delay(&self, retry: u32) -> Duration {
        self.schedule().max_delay(retry)
    }

    /// The worst-case sum of the waits of `retries` retries (jitter at its largest), saturating
    /// at `Duration::MAX`: the one computation of it, [`Schedule::worst_case_total`], which
    /// `#[resilient]` compares with a site's `deadline` at compile time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::backoff::{Backoff, Jitter};
    /// let b = Backoff::new().with_max(Duration::from_secs(16)).with_jitter(Jitter::None);
    /// assert_eq!(b.worst_case_total(5), Duration::from_secs(31));
    /// ```
    pub fn worst_case_total(&self, retries: u32) -> Duration {
        self.schedule().worst_case_total(retries)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl From<Backoff> for Schedule {
    fn from(b: Backoff) -> Schedule {
        b.schedule()
    }
}

fn mul(d: Duration, f: f64) -> Duration {
    secs(d.as_secs_f64() * f)
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX)
}

/// How the server's `Retry-After` hint shapes the next wait.
///
/// The wait is at least the hint. A hint above `max` (default 5 minutes), or one that would
/// overrun the call's deadline, ends the call at once with the server's error instead of sleeping.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::backoff::RetryAfter;
///
/// let ra = RetryAfter::new().with_max(Duration::from_secs(60));
/// assert_eq!(ra.wait(Duration::from_secs(1), Some(Duration::from_secs(5))), Some(Duration::from_secs(5)));
/// assert_eq!(ra.wait(Duration::from_secs(8), Some(Duration::from_secs(5))), Some(Duration::from_secs(8)));
/// assert_eq!(ra.wait(Duration::from_secs(1), Some(Duration::from_secs(90))), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// The longest hint honoured; a longer one ends the call.
    pub max: Duration,
}

impl RetryAfter {
    /// The default: hints up to 5 minutes are honoured ([`defaults::RETRY_AFTER_MAX`]).
    pub const fn new() -> Self {
        RetryAfter {
            max: defaults::RETRY_AFTER_MAX,
        }
    }

    /// Sets the longest hint honoured.
    pub const fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The wait before the next attempt given the backoff delay and the server's hint, or `None`
    /// if the hint is longer than [`RetryAfter::max`] and the call must end now.
    pub fn wait(&self, backoff: Duration, hint: Option<Duration>) -> Option<Duration> {
        match hint {
            None => Some(backoff),
            Some(h) if h > self.max => None,
            Some(h) => Some(backoff.max(h)),
        }
    }
}

impl Default for RetryAfter {
    fn default() -> Self {
        RetryAfter::new()
    }
}

/// A small, fast, seedable random number generator (SplitMix64) for jitter.
///
/// Seed it for exact tests; [`Rng::from_entropy`] draws a seed from a per-thread generator.
///
/// ```
/// use resilience_runtime::backoff::Rng;
/// let (mut a, mut b) = (Rng::seeded(42), Rng::seeded(42));
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.unit();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub const fn seeded(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from entropy: each thread draws its seeds from a generator of its own,
    /// seeded once from the clock and a process-wide counter, so that a seed costs a few
    /// arithmetic operations, not a clock read.
    pub fn from_entropy() -> Self {
        use std::cell::Cell;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
        thread_local! {
            static SEEDS: Cell<u64> = const { Cell::new(0) };
        }
        let first = || {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (t ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)) | 1
        };
        let seed = SEEDS
            .try_with(|s| {
                let mut g = Rng(match s.get() {
                    0 => first(),
                    v => v,
                });
                let seed = g.next_u64();
                s.set(g.0 | 1);
                seed
            })
            .unwrap_or_else(|_| first());
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl fmt::Debug for Rng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rng").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{
        Just, Strategy, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn seed_000_schedule_is_exact_with_jitter_off() {
        let b = Backoff::new().with_max(16 * S).with_jitter(Jitter::None);
        let mut rng = Rng::seeded(0);
        let got: Vec<_> = (0..5).map(|n| b.delay(n, None, &mut rng)).collect();
        assert_eq!(got, [S, 2 * S, 4 * S, 8 * S, 16 * S]);
    }

    #[test]
    fn delays_saturate_for_any_attempt_number() {
        let b = Backoff::new().with_jitter(Jitter::None);
        assert_eq!(b.raw_delay(64), b.max);
        assert_eq!(b.raw_delay(u32::MAX), b.max);
        let huge = Backoff::new()
            .with_max(Duration::MAX)
            .with_factor(10.0)
            .with_jitter(Jitter::Proportional(1.0));
        let mut rng = Rng::seeded(1);
        assert_eq!(huge.raw_delay(u32::MAX), Duration::MAX);
        assert_eq!(huge.delay(u32::MAX, None, &mut rng), Duration::MAX);
        assert!(huge.worst_case_total(20) == Duration::MAX);
    }

    #[test]
    fn validate_names_the_field() {
        let e = Backoff::new().with_base(60 * S).validate().unwrap_err();
        assert_eq!(e.field(), "backoff.base");
        let e = Backoff::new().with_factor(0.5).validate().unwrap_err();
        assert_eq!(e.field(), "backoff.factor");
        let e = Backoff::new()
            .with_jitter(Jitter::Proportional(2.0))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "backoff.jitter");
        let e = Backoff::new()
            .with_base(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "backoff.base");
    }

    #[test]
    fn retry_after_is_a_floor_and_a_long_hint_ends_the_call() {
        let ra = RetryAfter::new().with_max(10 * S);
        assert_eq!(ra.wait(S, None), Some(S));
        assert_eq!(ra.wait(S, Some(3 * S)), Some(3 * S));
        assert_eq!(ra.wait(4 * S, Some(3 * S)), Some(4 * S));
        assert_eq!(ra.wait(S, Some(10 * S)), Some(10 * S));
        assert_eq!(ra.wait(S, Some(11 * S)), None);
    }

    fn jitter_strategy() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            (0.0f64..=1.0).prop_map(Jitter::Proportional),
        ]
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_bounds(
            base_ms in 1u64..5_000,
            extra_ms in 0u64..120_000,
            factor in 1.0f64..10.0,
            jitter in jitter_strategy(),
            retry in 0u32..200,
            seed in any::<u64>(),
            prev_ms in proptest::option::of(0u64..200_000),
        ) {
            let b = Backoff::new()
                .with_base(Duration::from_millis(base_ms))
                .with_max(Duration::from_millis(base_ms + extra_ms))
                .with_factor(factor)
                .with_jitter(jitter);
            prop_assert!(b.validate().is_ok());
            let raw = b.raw_delay(retry);
            prop_assert!(raw >= b.base.min(b.max) && raw <= b.max);
            let mut rng = Rng::seeded(seed);
            let d = b.delay(retry, prev_ms.map(Duration::from_millis), &mut rng);
            // Duration::from_secs_f64 rounds; allow one microsecond.
            let eps = Duration::from_micros(1);
            prop_assert!(d <= b.max_delay(retry) + eps, "{d:?} > {:?}", b.max_delay(retry));
            match jitter {
                Jitter::None => prop_assert_eq!(d, raw),
                Jitter::Full => prop_assert!(d <= raw + eps),
                Jitter::Equal => prop_assert!(d + eps >= raw / 2 && d <= raw + eps),
                Jitter::Decorrelated => prop_assert!(d + eps >= b.base && d <= b.max + eps),
                Jitter::Proportional(p) => {
                    prop_assert!(d + eps >= raw);
                    prop_assert!(d <= raw + mul(raw, p) + eps);
                }
                _ => prop_assert_eq!(d, raw),
            }
        }

        #[test]
        fn the_same_seed_gives_the_same_schedule(seed in any::<u64>()) {
            let b = Backoff::new().with_jitter(Jitter::Full);
            let (mut r1, mut r2) = (Rng::seeded(seed), Rng::seeded(seed));
            for n in 0..10 {
                prop_assert_eq!(b.delay(n, None, &mut r1), b.delay(n, None, &mut r2));
            }
        }
    }
}
