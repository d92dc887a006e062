//! Rate limiters backed by [`governor`](https://docs.rs/governor) (feature `governor`).
//!
//! [`GovernorLimit`] implements [`RateLimit`], so it can back any `rate_limit = "name"`:
//! install it with [`Registry::set_rate_limit`](crate::Registry::set_rate_limit).
//! [`KeyedGovernorLimit`] keeps one GCRA state per key (a tenant id), for at most `max_keys`
//! keys.
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

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ::governor::clock::Clock;
use ::governor::middleware::NoOpMiddleware;
use ::governor::nanos::Nanos;
use ::governor::state::{InMemoryState, NotKeyed, StateStore};
use ::governor::{Quota, RateLimiter};

use crate::clock;
use crate::limit::RateLimit;
use crate::lru::{Lru, Shards};
use crate::registry::KeyedBreakers;

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

/// The keys of a [`KeyedGovernorLimit`] and each one's GCRA state (its theoretical arrival
/// time, in nanoseconds since the limiter was made; 0 for none, as governor's own stores), least
/// recently used first.
struct Keys<K> {
    shards: Shards<Lru<(K, u64), 1>>,
    hasher: foldhash::fast::RandomState,
    max_keys: usize,
    /// Keys in all shards, and places taken by insertions under way: the bound is on this count.
    live: AtomicUsize,
    evictions: AtomicU64,
}

/// The state store governor's limiter is given: the shared [`Keys`].
struct Store<K>(Arc<Keys<K>>);

impl<K: Hash + Eq> Keys<K> {
    /// Takes the least recently used key of `map` out, and counts it.
    fn evict(&self, map: &mut Lru<(K, u64), 1>) -> Option<(K, u64)> {
        let front = map.front(0)?;
        let hash = map.get(front).map(|(k, _)| self.hasher.hash_one(k))?;
        let out = map.remove(front, hash)?;
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        Some(out)
    }

    /// Evicts a key of a shard other than `except`.
    fn evict_elsewhere(&self, except: usize) -> Option<(K, u64)> {
        (0..self.shards.count())
            .filter(|&j| j != except)
            .find_map(|j| self.evict(&mut self.shards.lock(j)))
    }
}

/// Applies `f` to the state of `key`, if `map` has it, as a use.
fn update<K: Eq, T, E>(
    map: &mut Lru<(K, u64), 1>,
    hash: u64,
    key: &K,
    f: &impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Option<Result<T, E>> {
    let i = map.find(hash, |(k, _)| k == key)?;
    map.move_to_back(i, 0);
    let (_, tat) = map.get_mut(i)?;
    Some(
        f((*tat != 0).then(|| Nanos::from(*tat))).map(|(out, next)| {
            *tat = u64::from(next);
            out
        }),
    )
}

impl<K: Hash + Eq + Clone> StateStore for Store<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let keys = &*self.0;
        let hash = keys.hasher.hash_one(key);
        let shard = keys.shards.of(hash);
        let mut map = keys.shards.lock(shard);
        if let Some(r) = update(&mut map, hash, key, &f) {
            return r;
        }
        // A new key: kept only if it takes a permit (a refusal leaves nothing to remember).
        let (out, next) = f(None)?;
        let mut evicted = None;
        // Take a place; past the bound, free one first: a key of this shard, or, when it has
        // none, of another, with this shard's lock released meanwhile (no call holds two).
        if keys.live.fetch_add(1, Ordering::AcqRel) >= keys.max_keys {
            evicted = keys.evict(&mut map);
            if evicted.is_none() {
                drop(map);
                evicted = keys.evict_elsewhere(shard);
                map = keys.shards.lock(shard);
                if let Some(r) = update(&mut map, hash, key, &f) {
                    // Made meanwhile by another call: give the place back.
                    keys.live.fetch_sub(1, Ordering::AcqRel);
                    drop(map);
                    drop(evicted);
                    return r;
                }
            }
        }
        map.insert(hash, (key.clone(), u64::from(next)), 0, |(k, _)| {
            keys.hasher.hash_one(k)
        });
        drop(map);
        drop(evicted);
        Ok(out)
    }
}

/// One governor rate limiter state per key (a tenant id): each key gets the whole quota.
///
/// It does not [`pause`](RateLimit::pause) (the default, which does nothing). A throttled call
/// through it still waits out the server's hint itself.
///
/// At most `max_keys` keys are kept. A new key on a full limiter evicts the least recently used
/// one (a permit taken or refused is a use), in O(1): **an evicted key starts again with a full
/// quota** when it comes back. With `max_keys` above the tenants active within the time a quota
/// takes to refill, only keys that have refilled anyway are evicted. A limiter of 4,096 keys or
/// more is split by key hash into shards, as per-key breakers are (see [`KeyedBreakers`]): the
/// bound is on all their keys together, and the least recently used key of the new key's shard
/// goes. Keys are kept as given, but for a
/// `String` key drawn through [`RateLimit::try_acquire_keyed`] or [`KeyedGovernorLimit::for_key`]
/// (a site's `breaker_key`): one longer than [`KeyedBreakers::MAX_KEY_LEN`] bytes is kept by the
/// stored form its breaker keeps (see [`KeyedBreakers`]), so a long key costs no more than a
/// short one.
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
    limiter: RateLimiter<K, Store<K>, TokioClock, NoOpMiddleware<Duration>>,
    keys: Arc<Keys<K>>,
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedGovernorLimit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedGovernorLimit")
            .field("keys", &self.len())
            .field("max_keys", &self.keys.max_keys)
            .field("key_evictions", &self.key_evictions())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedGovernorLimit<K> {
    /// `quota` per key, keeping at most `max_keys` keys (at least 1, at most the policy's
    /// 10⁸).
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        let most = usize::try_from(resilience_policy::bounds::MAX_KEYS).unwrap_or(usize::MAX);
        let max_keys = max_keys.clamp(1, most);
        let keys = Arc::new(Keys {
            shards: Shards::new(max_keys, Lru::new),
            hasher: foldhash::fast::RandomState::default(),
            max_keys,
            live: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
        });
        KeyedGovernorLimit {
            limiter: RateLimiter::new(quota, Store(keys.clone()), TokioClock),
            keys,
        }
    }

    /// Takes one permit of `key`.
    ///
    /// # Errors
    ///
    /// The time until `key` has a permit again.
    pub fn try_acquire_key(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|n| n.wait_time_from(TokioClock.now()))
    }

    /// Keys with state: never more than `max_keys`.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.keys.shards.each(|m| n += m.len());
        n
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted so far to keep the bound.
    pub fn key_evictions(&self) -> u64 {
        self.keys.evictions.load(Ordering::Relaxed)
    }
}

/// `key` as a `String` keyed limiter keeps it: a long key by its breaker's stored form.
fn kept(key: &str) -> Cow<'_, str> {
    if key.len() > KeyedBreakers::MAX_KEY_LEN {
        Cow::Owned(crate::registry::long_key_form(key))
    } else {
        Cow::Borrowed(key)
    }
}

impl KeyedGovernorLimit<String> {
    /// A [`RateLimit`] bound to one key of this limiter.
    pub fn for_key(self: &Arc<Self>, key: impl Into<String>) -> KeyLimit {
        let key: String = key.into();
        KeyLimit {
            limiter: self.clone(),
            key: match kept(&key) {
                Cow::Owned(k) => k,
                Cow::Borrowed(_) => key,
            },
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
        // `check_key` takes `&K`: a lookup by `&str` would need `K: Borrow<str>` support in
        // governor's state store interface, so the key is copied once per attempt (a keyed
        // limiter asks for it).
        let key = kept(key.unwrap_or_default()).into_owned();
        self.limiter
            .check_key(&key)
            .map_err(|n| n.wait_time_from(TokioClock.now()))
    }
}

/// One key of a [`KeyedGovernorLimit`], as a [`RateLimit`].
#[derive(Debug, Clone)]
pub struct KeyLimit {
    limiter: Arc<KeyedGovernorLimit<String>>,
    key: String,
}

impl RateLimit for KeyLimit {
    fn try_acquire(&self) -> Result<(), Duration> {
        self.limiter.try_acquire_key(&self.key)
    }
}
