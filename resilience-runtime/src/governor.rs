//! Rate limiters backed by [`governor`](https://docs.rs/governor) (feature `governor`).
//!
//! [`GovernorLimit`] implements [`RateLimit`], so it can back any `rate_limit = "name"`:
//! install it with [`Registry::set_rate_limit`](crate::Registry::set_rate_limit).
//! [`KeyedGovernorLimit`] keeps one GCRA state per key (a tenant id), bounded in memory.
//!
//! Both read the runtime's clock ([`TokioClock`]: `tokio::time::Instant`), so a test with a paused
//! tokio clock drives them exactly as it drives breakers and backoff.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//! use governor::Quota;
//! use resilience_runtime::governor::GovernorLimit;
//! use resilience_runtime::limit::RateLimit;
//! use resilience_runtime::Registry;
//!
//! let graph = Arc::new(GovernorLimit::new(Quota::per_second(NonZeroU32::new(100).unwrap())));
//! assert!(graph.try_acquire().is_ok());
//! Registry::global().set_rate_limit("graph", graph);
//! ```

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::governor::clock::Clock;
use ::governor::middleware::NoOpMiddleware;
use ::governor::state::keyed::HashMapStateStore;
use ::governor::state::{InMemoryState, NotKeyed};
use ::governor::{Quota, RateLimiter};

use crate::clock;
use crate::limit::RateLimit;

/// A governor clock over the runtime's clock (tokio's, pausable in tests): instants are the time
/// since a fixed point, as a [`Duration`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_nanos(clock::now_nanos())
    }
}

/// One governor rate limiter (GCRA) for every caller.
///
/// [`pause`](RateLimit::pause) refuses every permit until the pause ends. Governor keeps its
/// state private, so a pause cannot move it as [`Gcra`](crate::limit::Gcra)'s does: after the
/// pause, governor's own bucket (which refilled meanwhile) may grant its burst at once.
pub struct GovernorLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    /// The end of a pause, in the clock's nanoseconds; 0 without one.
    paused_until: AtomicU64,
}

impl GovernorLimit {
    /// A limiter enforcing `quota`.
    pub fn new(quota: Quota) -> GovernorLimit {
        GovernorLimit {
            limiter: RateLimiter::direct_with_clock(quota, TokioClock),
            paused_until: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for GovernorLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorLimit").finish_non_exhaustive()
    }
}

impl RateLimit for GovernorLimit {
    fn try_acquire(&self) -> Result<(), Duration> {
        let until = self.paused_until.load(Ordering::Acquire);
        if until != 0 {
            let now = clock::now_nanos();
            if now < until {
                return Err(Duration::from_nanos(until - now));
            }
        }
        self.limiter
            .check()
            .map_err(|n| n.wait_time_from(TokioClock.now()))
    }

    fn pause(&self, _key: Option<&str>, for_: Duration) {
        let until = clock::now_nanos().saturating_add(clock::nanos(for_));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }
}

/// One governor rate limiter state per key (a tenant id): each key gets the whole quota.
///
/// It does not [`pause`](RateLimit::pause) (the default, which does nothing): governor keeps
/// each key's state private, so a pause of one key would need a second map of keys beside
/// governor's. A throttled call through it still waits out the server's hint itself.
///
/// At most `max_keys` keys are kept: past that, keys whose state has fully replenished (idle
/// ones) are dropped.
///
/// ```
/// use std::num::NonZeroU32;
/// use governor::Quota;
/// use resilience_runtime::governor::KeyedGovernorLimit;
/// use resilience_runtime::limit::RateLimit;
///
/// let per_tenant = std::sync::Arc::new(KeyedGovernorLimit::new(Quota::per_second(NonZeroU32::new(1).unwrap()), 10_000));
/// assert!(per_tenant.try_acquire_key(&"contoso".to_owned()).is_ok());
/// assert!(per_tenant.try_acquire_key(&"contoso".to_owned()).is_err());
/// assert!(per_tenant.try_acquire_key(&"fabrikam".to_owned()).is_ok());
/// let contoso = per_tenant.for_key("contoso"); // a `RateLimit` for one tenant
/// assert!(contoso.try_acquire().is_err());
/// ```
pub struct KeyedGovernorLimit<K = String>
where
    K: Hash + Eq + Clone,
{
    limiter: RateLimiter<K, HashMapStateStore<K>, TokioClock, NoOpMiddleware<Duration>>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedGovernorLimit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedGovernorLimit")
            .field("keys", &self.limiter.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedGovernorLimit<K> {
    /// `quota` per key, keeping at most about `max_keys` keys.
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        KeyedGovernorLimit {
            limiter: RateLimiter::hashmap_with_clock(quota, TokioClock),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes one permit of `key`.
    ///
    /// # Errors
    ///
    /// The time until `key` has a permit again.
    pub fn try_acquire_key(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|n| n.wait_time_from(TokioClock.now()))
    }

    /// Keys with state.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

impl KeyedGovernorLimit<String> {
    /// A [`RateLimit`] bound to one key of this limiter.
    pub fn for_key(self: &std::sync::Arc<Self>, key: impl Into<String>) -> KeyLimit {
        KeyLimit {
            limiter: self.clone(),
            key: key.into(),
        }
    }
}

/// A [`KeyedGovernorLimit`] installed as a site's `rate_limit`: a call with a `breaker_key` draws
/// on its key's quota; a call without one draws on a shared quota.
impl RateLimit for KeyedGovernorLimit<String> {
    fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_keyed(None)
    }

    fn try_acquire_keyed(&self, key: Option<&str>) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
        }
        // `check_key` takes `&K`: a lookup by `&str` would need `K: Borrow<str>` support in
        // governor's store, so the key is copied once per attempt (a keyed limiter asks for it).
        let key = key.unwrap_or_default().to_owned();
        self.limiter
            .check_key(&key)
            .map_err(|n| n.wait_time_from(TokioClock.now()))
    }
}

/// One key of a [`KeyedGovernorLimit`], as a [`RateLimit`].
#[derive(Debug, Clone)]
pub struct KeyLimit {
    limiter: std::sync::Arc<KeyedGovernorLimit<String>>,
    key: String,
}

impl RateLimit for KeyLimit {
    fn try_acquire(&self) -> Result<(), Duration> {
        self.limiter.try_acquire_key(&self.key)
    }
}
