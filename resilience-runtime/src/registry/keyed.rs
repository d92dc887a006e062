//! Per-key breakers: one breaker per key (a tenant id) of one name, at most `max_keys` of them.
//!
//! # The bound
//!
//! At most `max_keys` keys are live, whatever their breakers' states: a new key on a full map
//! evicts one. The map keeps its entries on two recency lists, one of open breakers and one of
//! closed and half-open ones, least recently used first, and each entry's last use: the time on
//! the crate's clock (the tokio clock, paused in tests) of its last look-up, to the nanosecond. A
//! breaker that opens, or stops being open, moves to the back of the other list, and that counts
//! as a use too: a call's admission or outcome did it. The entry evicted is, in this order:
//!
//! 1. the least recently used of all, if it has not been used for longer than `idle_ttl`,
//!    whatever its state;
//! 2. else the least recently used closed or half-open breaker;
//! 3. else, every breaker being open, the least recently used open one.
//!
//! So open breakers are kept longest, and a long-idle key goes before a recently used one
//! whatever their states. Each of these is the front of a list: an insertion costs O(1), the
//! hash table's growth aside (amortised), however many keys are live.
//!
//! A map of 4,096 keys or more is split by key hash into shards (one per 2,048 keys, rounded
//! down to a power of two, at most 16), each with its own lock and its own two lists, so that
//! threads looking up different keys go on at once. The bound is on the keys of all shards
//! together, so a map holds `max_keys` keys however they fall; the order above holds among the
//! keys of the new key's shard (another shard gives a key only when that one has none): an open
//! key goes only when every key of its shard is open. A smaller map is one shard, and its order
//! is exact over all its keys.
//!
//! An evicted key is forgotten: its next call makes a new, closed breaker, so **an evicted open
//! key starts closed when it comes back** (and its failures so far are not counted). A call in
//! flight may hold the evicted breaker: it finishes normally, and its outcome lands in a breaker
//! no longer in the map, which is dropped with the call. That keeps the bound hard: no state,
//! not even a call in flight, holds a key in the map. Evictions are counted
//! ([`KeyedBreakers::key_evictions`], the `breaker_key_evictions_total{breaker}` metric).
//!
//! # Long keys
//!
//! A key longer than [`KeyedBreakers::MAX_KEY_LEN`] (256) bytes is kept by its stored form: its
//! first 64 bytes (fewer, to end on a character), `…sha256:` and the 64 hex digits of the
//! SHA-256 of the whole key, at most 138 bytes, however long the key, plus the whole key's
//! redacted form (20 bytes), kept so that a later mark as sensitive can still show it. The map
//! tells a stored form apart from a short key with the same text, and two long keys share a
//! breaker only if their SHA-256 digests are equal. [`Breaker::key`] shows the stored form; a
//! per-key rate limit draws on it too. A long key is hashed whole on every look-up (SHA-256:
//! about a millisecond per megabyte), which its caller pays.
//!
//! # Cost
//!
//! A key costs its breaker (72 bytes, sharing its name and settings with every other key of the
//! name, plus the `Arc`'s counts), its text (the key, or its stored form), a 24-byte slot in the
//! map's slab (the breaker, two list links, the last use) and a 4-byte index in its hash table.
//! A look-up that finds its key hashes the key (`foldhash`), reads the clock, takes its shard's
//! mutex, finds the entry, moves it to the back of its list (nothing to move when it already is,
//! as for a key used again and again) and clones an `Arc`. No look-up walks the map; reports
//! ([`Registry::health`](crate::Registry::health), the per-key Prometheus series) copy the live
//! breakers out one shard at a time and read them after.
//!
//! # Sensitive keys
//!
//! A base whose keys are API keys or tenant secrets is marked sensitive (`sensitive_key` on a
//! site, `sensitive_keys = true` in its `[breakers.<name>]` table). Each key's breaker then
//! computes the key's redacted form once, when it is made, and keeps it after the key in the same
//! allocation (20 bytes more per key); every output shows that form (see [`Breaker::key`]). The
//! map still finds a breaker by the key itself. A mark is never taken back; a key made before
//! its base was marked computes its form each time it is shown, until it is evicted. A long key's
//! redacted form is that of the whole key, computed when its breaker is made, whatever the mark.

use std::borrow::Cow;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerConfig, BreakerState, Refile, Shared};
use crate::clock;
use crate::lru::{Lru, Shards};

/// The list of closed and half-open breakers, evicted first.
const CLOSED: usize = 0;
/// The list of open breakers.
const OPEN: usize = 1;

/// Bytes of a long key kept at the front of its stored form.
const LONG_PREFIX: usize = 64;
/// What separates a long key's prefix from its digest in its stored form.
const LONG_MARK: &str = "…sha256:";

/// The stored form of a key longer than [`KeyedBreakers::MAX_KEY_LEN`] (see the module's
/// documentation).
pub(crate) fn long_form(key: &str) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut end = LONG_PREFIX.min(key.len());
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(end + LONG_MARK.len() + 2 * digest.len());
    out.push_str(key.get(..end).unwrap_or_default());
    out.push_str(LONG_MARK);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// One live key: its breaker and when it was last used (nanoseconds on the crate's clock).
struct Entry {
    breaker: Arc<Breaker>,
    last: u64,
}

impl Entry {
    #[inline]
    fn is(&self, hashed: bool, text: &str) -> bool {
        self.breaker.raw_key() == Some(text) && self.breaker.key_is_hashed() == hashed
    }
}

/// The list a breaker belongs on, by its state now.
#[inline]
fn list_of(b: &Breaker) -> usize {
    if b.state() == BreakerState::Open {
        OPEN
    } else {
        CLOSED
    }
}

/// What the mutex guards.
struct Map {
    lru: Lru<Entry, 2>,
    /// The latest use recorded: a use is never recorded earlier than the one before, so each
    /// list stays ordered by last use even when two threads read the clock in one order and take
    /// the lock in the other.
    newest: u64,
}

impl Map {
    #[inline]
    fn stamp(&mut self, now: u64) -> u64 {
        self.newest = self.newest.max(now);
        self.newest
    }
}

/// The map and its bounds, shared with the breakers' [`Shared`] (weakly) so that a breaker can
/// move its entry between the lists when it opens or stops being open.
struct Store {
    shards: Shards<Map>,
    hasher: foldhash::fast::RandomState,
    max_keys: AtomicUsize,
    /// Keys in all shards, and places taken by insertions under way: the bound is on this count,
    /// so a map holds `max_keys` keys however they fall into shards.
    live: AtomicUsize,
    idle_ttl: AtomicU64,
    evictions: AtomicU64,
}

impl Store {
    /// The shard of a key whose hash is `hash`, locked.
    #[inline]
    fn lock(&self, hash: u64) -> MutexGuard<'_, Map> {
        self.shards.lock(self.shards.of(hash))
    }

    #[inline]
    fn hash(&self, hashed: bool, text: &str) -> u64 {
        self.hasher.hash_one((hashed, text))
    }

    fn rehash(&self) -> impl Fn(&Entry) -> u64 + '_ {
        |e| {
            let b = &e.breaker;
            self.hash(b.key_is_hashed(), b.raw_key().unwrap_or_default())
        }
    }

    /// Takes one entry out of a non-empty map (see the module's documentation), and counts it.
    fn evict(&self, map: &mut Map, now: u64) -> Option<Arc<Breaker>> {
        let lru = &map.lru;
        let last = |i: u32| lru.get(i).map_or(0, |e| e.last);
        let closed = lru.front(CLOSED);
        let open = lru.front(OPEN);
        let oldest = match (closed, open) {
            (Some(c), Some(o)) if last(o) < last(c) => o,
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => return None,
        };
        let idle = now.saturating_sub(last(oldest)) > self.idle_ttl.load(Ordering::Relaxed);
        let victim = if idle {
            oldest
        } else {
            closed.unwrap_or(oldest)
        };
        let hash = lru.get(victim).map(|e| self.rehash()(e))?;
        let e = map.lru.remove(victim, hash)?;
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        Some(e.breaker)
    }

    /// Evicts a key of a shard other than `except` (see [`KeyedBreakers::insert`]).
    fn evict_elsewhere(&self, except: usize, now: u64) -> Option<Arc<Breaker>> {
        (0..self.shards.count())
            .filter(|&j| j != except)
            .find_map(|j| {
                let mut map = self.shards.lock(j);
                let now = map.stamp(now);
                self.evict(&mut map, now)
            })
    }
}

impl Refile for Store {
    fn refile(&self, b: &Breaker) {
        let Some(text) = b.raw_key() else {
            return;
        };
        let hash = self.hash(b.key_is_hashed(), text);
        let now = clock::now_nanos();
        let mut map = self.lock(hash);
        let Some(i) = map
            .lru
            .find(hash, |e| std::ptr::eq(Arc::as_ptr(&e.breaker), b))
        else {
            // Evicted (a call in flight still holds it): nothing to file.
            return;
        };
        let now = map.stamp(now);
        if let Some(e) = map.lru.get_mut(i) {
            e.last = now;
        }
        map.lru.move_to_back(i, list_of(b));
    }
}

/// Breakers of one name, one per key (a tenant id), at most `max_keys` of them (see the module's
/// documentation).
pub struct KeyedBreakers {
    shared: Arc<Shared>,
    store: Arc<Store>,
}

impl KeyedBreakers {
    /// Keys longer than this many bytes are kept by their stored form (see the module's
    /// documentation).
    pub const MAX_KEY_LEN: usize = 256;

    pub(crate) fn new(
        name: Arc<str>,
        config: BreakerConfig,
        max_keys: usize,
        idle_ttl: Duration,
    ) -> Self {
        let shared = Shared::new(name, config);
        let max_keys = bound(max_keys);
        let store = Arc::new(Store {
            shards: Shards::new(max_keys, || Map {
                lru: Lru::new(),
                newest: 0,
            }),
            hasher: foldhash::fast::RandomState::default(),
            max_keys: AtomicUsize::new(max_keys),
            live: AtomicUsize::new(0),
            idle_ttl: AtomicU64::new(clock::nanos(idle_ttl)),
            evictions: AtomicU64::new(0),
        });
        let weak: Weak<Store> = Arc::downgrade(&store);
        shared.set_keyed(weak);
        KeyedBreakers { shared, store }
    }

    /// Replaces the settings of every key's breaker and the bounds on keys, in place: live keys
    /// keep their state (see [`Breaker::reconfigure`]). A lower `max_keys` evicts at once, as
    /// new keys would, down to the new bound.
    ///
    /// # Errors
    ///
    /// The breaker settings are invalid; nothing changes then.
    pub(crate) fn reconfigure(
        &self,
        config: BreakerConfig,
        max_keys: usize,
        idle_ttl: Duration,
    ) -> Result<(), crate::InvalidConfig> {
        config.validate()?;
        let old = self.shared.reconfigure(config);
        if old != config.trip {
            self.each(&mut |b, _| b.follow_trip(old, config.trip));
        }
        let max_keys = bound(max_keys);
        self.store.max_keys.store(max_keys, Ordering::Relaxed);
        self.store
            .idle_ttl
            .store(clock::nanos(idle_ttl), Ordering::Relaxed);
        // Down to the new bound at once, a key of each shard in turn.
        let now = clock::now_nanos();
        let shards = self.store.shards.count();
        let (mut i, mut empty) = (0, 0);
        while self.store.live.load(Ordering::Acquire) > max_keys && empty < shards {
            let evicted = {
                let mut map = self.store.shards.lock(i % shards);
                let now = map.stamp(now);
                self.store.evict(&mut map, now)
            };
            empty = if evicted.is_some() { 0 } else { empty + 1 };
            i += 1;
        }
        Ok(())
    }

    fn max_keys(&self) -> usize {
        self.store.max_keys.load(Ordering::Relaxed)
    }

    /// The breaker of `key`, made on first use. On a full map (`max_keys` keys live) a new key
    /// evicts one first: an idle one, else the least recently used closed or half-open breaker,
    /// else the least recently used open one (see the module's documentation).
    #[inline]
    pub fn get(&self, key: &str) -> Arc<Breaker> {
        if key.len() > Self::MAX_KEY_LEN {
            return self.get_long(key);
        }
        let hash = self.store.hash(false, key);
        let now = clock::now_nanos();
        let mut map = self.store.lock(hash);
        let Some(i) = map.lru.find(hash, |e| e.is(false, key)) else {
            return self.insert(map, hash, key, None, now);
        };
        let now = map.stamp(now);
        let Some(e) = map.lru.get_mut(i) else {
            return self.insert(map, hash, key, None, now);
        };
        e.last = now;
        let b = e.breaker.clone();
        map.lru.move_to_back(i, list_of(&b));
        b
    }

    /// [`KeyedBreakers::get`] for a key longer than [`KeyedBreakers::MAX_KEY_LEN`].
    #[cold]
    #[inline(never)]
    fn get_long(&self, key: &str) -> Arc<Breaker> {
        let form = long_form(key);
        let hash = self.store.hash(true, &form);
        let now = clock::now_nanos();
        let mut map = self.store.lock(hash);
        if let Some(i) = map.lru.find(hash, |e| e.is(true, &form)) {
            let now = map.stamp(now);
            if let Some(e) = map.lru.get_mut(i) {
                e.last = now;
                let b = e.breaker.clone();
                map.lru.move_to_back(i, list_of(&b));
                return b;
            }
        }
        self.insert(map, hash, key, Some(&form), now)
    }

    /// Adds `key` (whose stored form is `long`, if it is long), evicting first on a full map.
    #[cold]
    #[inline(never)]
    fn insert<'a>(
        &'a self,
        mut map: MutexGuard<'a, Map>,
        hash: u64,
        key: &str,
        long: Option<&str>,
        now: u64,
    ) -> Arc<Breaker> {
        let mut now = map.stamp(now);
        let mut evicted = None;
        // Take a place; past the bound, free one first: a key of this shard, or, when it has
        // none, of another, with this shard's lock released meanwhile (no call holds two).
        if self.store.live.fetch_add(1, Ordering::AcqRel) >= self.max_keys() {
            evicted = self.store.evict(&mut map, now);
            if evicted.is_none() {
                let shard = self.store.shards.of(hash);
                drop(map);
                evicted = self.store.evict_elsewhere(shard, now);
                map = self.store.shards.lock(shard);
                now = map.stamp(now);
                let text = long.unwrap_or(key);
                if let Some(i) = map.lru.find(hash, |e| e.is(long.is_some(), text)) {
                    // Made meanwhile by another call: give the place back and use its breaker.
                    self.store.live.fetch_sub(1, Ordering::AcqRel);
                    if let Some(e) = map.lru.get_mut(i) {
                        e.last = now;
                        let b = e.breaker.clone();
                        map.lru.move_to_back(i, list_of(&b));
                        drop(map);
                        drop(evicted);
                        return b;
                    }
                }
            }
        }
        let b = Arc::new(Breaker::keyed(&self.shared, key, long, now));
        map.lru.insert(
            hash,
            Entry {
                breaker: b.clone(),
                last: now,
            },
            CLOSED,
            self.store.rehash(),
        );
        drop(map);
        drop(evicted);
        b
    }

    /// Whether the keys are shown redacted (see the module's documentation).
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let registry = Registry::new();
    /// registry.apply(&RegistryConfig::from_toml_str("[breakers.okta]\nsensitive_keys = true").unwrap());
    /// assert!(registry.keyed_breakers("okta").is_sensitive());
    /// assert!(!registry.keyed_breakers("graph").is_sensitive());
    /// ```
    pub fn is_sensitive(&self) -> bool {
        self.shared.sensitive()
    }

    /// Shows the keys redacted from now on; never undone.
    pub(crate) fn mark_sensitive(&self) {
        self.shared.mark_sensitive();
    }

    /// Whether `key` is live: a look-up that is not a use (it moves nothing, makes nothing).
    pub fn contains(&self, key: &str) -> bool {
        let (hashed, text) = match key.len() > Self::MAX_KEY_LEN {
            true => (true, Cow::Owned(long_form(key))),
            false => (false, Cow::Borrowed(key)),
        };
        let hash = self.store.hash(hashed, &text);
        let map = self.store.lock(hash);
        map.lru.find(hash, |e| e.is(hashed, &text)).is_some()
    }

    /// Live keys: never more than `max_keys`.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.store.shards.each(|m| n += m.lru.len());
        n
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name the keys' breakers share.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// assert_eq!(Registry::new().keyed_breakers("okta").name(), "okta");
    /// ```
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Serves every key of this name from `store` as well as from its local state (see
    /// [`crate::store`]), the keys made later included; as [`Breaker::set_store`] on any key.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use resilience_runtime::breaker::{Breaker, BreakerState};
    /// use resilience_runtime::store::BreakerStore;
    /// use resilience_runtime::Registry;
    ///
    /// /// Lets no replica probe.
    /// #[derive(Debug)]
    /// struct NoProbes;
    /// impl BreakerStore for NoProbes {
    ///     fn transitioned(&self, _: &Breaker, _: BreakerState, _: BreakerState, _: bool) {}
    ///     fn may_probe(&self, _: &Breaker) -> Result<(), Duration> {
    ///         Err(Duration::from_secs(1))
    ///     }
    /// }
    ///
    /// let okta = Registry::new().keyed_breakers("okta");
    /// okta.set_store(Arc::new(NoProbes));
    /// let b = okta.get("tenant-1");
    /// b.open_by_store();
    /// assert_eq!(b.state(), BreakerState::Open);
    /// ```
    pub fn set_store(&self, store: Arc<dyn crate::store::BreakerStore>) {
        self.shared.set_store(Some(store));
    }

    /// Serves the keys of this name from their local state alone again.
    pub fn clear_store(&self) {
        self.shared.set_store(None);
    }

    /// Keys evicted so far to keep the bound (see the module's documentation); exported as
    /// `breaker_key_evictions_total{breaker}`.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let registry = Registry::new();
    /// registry.apply(&RegistryConfig::from_toml_str("[breakers.okta]\nmax_keys = 2").unwrap());
    /// let okta = registry.keyed_breakers("okta");
    /// for tenant in ["a", "b", "c", "d"] {
    ///     okta.get(tenant);
    /// }
    /// assert_eq!((okta.len(), okta.key_evictions()), (2, 2));
    /// ```
    pub fn key_evictions(&self) -> u64 {
        self.store.evictions.load(Ordering::Relaxed)
    }

    /// This base's entry in a [`MetricsSnapshot`](crate::metrics::MetricsSnapshot).
    pub(crate) fn metrics(&self, name: &str) -> crate::metrics::KeyedBreakerMetrics {
        crate::metrics::KeyedBreakerMetrics {
            breaker: name.to_owned(),
            keys: self.len() as u64,
            key_evictions: self.key_evictions(),
        }
    }

    /// Bytes of key text the live keys' breakers hold (their keys, a long key's stored form, and
    /// redacted forms): a report that visits every key. A key costs at most
    /// [`KeyedBreakers::MAX_KEY_LEN`] + 20 bytes of it, however long it is.
    pub fn key_bytes(&self) -> usize {
        let mut n = 0;
        self.store.shards.each(|m| {
            n += m
                .lru
                .values()
                .map(|e| e.breaker.key_text_len())
                .sum::<usize>()
        });
        n
    }

    /// Visits every live key's breaker, with the key as outputs show it ([`Breaker::key`]). The
    /// breakers are copied out under the lock and visited after it, so that a report on many
    /// keys does not hold up look-ups.
    pub(crate) fn each(&self, f: &mut dyn FnMut(&Breaker, Option<&str>)) {
        let mut live: Vec<Arc<Breaker>> = Vec::new();
        self.store
            .shards
            .each(|m| live.extend(m.lru.values().map(|e| e.breaker.clone())));
        for b in &live {
            f(b, b.key().as_deref());
        }
    }

    /// The keys of one list, least recently used first, as outputs show them.
    #[cfg(test)]
    fn list(&self, list: usize) -> Vec<String> {
        let map = self.store.shards.lock(0);
        map.lru
            .list(list)
            .into_iter()
            .map(|e| e.breaker.key().unwrap_or_default().into_owned())
            .collect()
    }
}

/// `max_keys` as the map keeps it: at least one key, at most the policy's bound.
fn bound(max_keys: usize) -> usize {
    let most = usize::try_from(resilience_policy::bounds::MAX_KEYS).unwrap_or(usize::MAX);
    max_keys.clamp(1, most)
}

impl fmt::Debug for KeyedBreakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("name", self.shared.name())
            .field("sensitive", &self.is_sensitive())
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .field("shards", &self.store.shards.count())
            .field(
                "idle_ttl",
                &Duration::from_nanos(self.store.idle_ttl.load(Ordering::Relaxed)),
            )
            .field("key_evictions", &self.key_evictions())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Outcome;

    fn keyed(max_keys: usize, idle_ttl: Duration) -> KeyedBreakers {
        KeyedBreakers::new("t".into(), BreakerConfig::new(), max_keys, idle_ttl)
    }

    fn trip(b: &Breaker) {
        for _ in 0..5 {
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_per_key_breaker_is_small() {
        assert!(
            std::mem::size_of::<Breaker>() <= 72,
            "{}",
            std::mem::size_of::<Breaker>()
        );
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 16);
    }

    #[test]
    fn names_are_made_from_the_name_and_the_key() {
        let k = keyed(10, Duration::from_secs(60));
        let b = k.get("acme");
        assert_eq!(&*b.name(), "t/acme");
        assert_eq!(b.display_name().to_string(), "t/acme");
        assert_eq!(b.base_name(), "t");
        assert_eq!(b.key().as_deref(), Some("acme"));
        assert!(format!("{b:?}").contains("t/acme"));
    }

    #[test]
    fn a_sensitive_base_shows_every_key_redacted_and_finds_it_by_the_key() {
        let k = KeyedBreakers::new(
            "okta".into(),
            BreakerConfig::new(),
            10,
            Duration::from_secs(60),
        );
        k.mark_sensitive();
        let b = k.get("secret");
        let shown = "key#662a463828fd728b";
        assert_eq!(b.key().as_deref(), Some(shown));
        assert!(matches!(b.key(), Some(std::borrow::Cow::Borrowed(_))));
        assert_eq!(&*b.name(), format!("okta/{shown}"));
        assert_eq!(b.display_name().to_string(), format!("okta/{shown}"));
        assert_eq!(b.raw_key(), Some("secret"));
        assert!(!format!("{b:?}").contains("secret"), "{b:?}");
        assert!(Arc::ptr_eq(&b, &k.get("secret")));
        assert_eq!(k.len(), 1);
        let mut keys = Vec::new();
        k.each(&mut |_, key| keys.push(key.unwrap().to_owned()));
        assert_eq!(keys, [shown]);
    }

    #[test]
    fn a_key_made_before_its_base_was_marked_is_shown_redacted_too() {
        let k = keyed(10, Duration::from_secs(60));
        let early = k.get("early-secret");
        assert_eq!(early.key().as_deref(), Some("early-secret"));
        k.mark_sensitive();
        let shown = crate::redact::redacted_key("t", "early-secret");
        assert_eq!(early.key().as_deref(), Some(shown.as_str()));
        assert_eq!(&*early.name(), format!("t/{shown}"));
        assert_eq!(early.raw_key(), Some("early-secret"));
        // The same breaker is found by its key, and new keys get their form at birth.
        assert!(Arc::ptr_eq(&early, &k.get("early-secret")));
        assert!(matches!(
            k.get("late-secret").key(),
            Some(std::borrow::Cow::Borrowed(s)) if s.starts_with("key#")
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_redacted_key_survives_the_opening_count_and_moves_between_lists() {
        let k = keyed(10, Duration::from_secs(80));
        k.mark_sensitive();
        let b = k.get("secret");
        trip(&b);
        assert_eq!(b.opened_total(), 1);
        assert_eq!(k.list(OPEN), ["key#5e26dd346e8dd362"]);
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(10)).await;
            k.get("secret");
        }
        assert_eq!(b.opened_total(), 1);
        assert_eq!(b.raw_key(), Some("secret"));
        // printf 't\0secret' | sha256sum
        assert_eq!(b.key().as_deref(), Some("key#5e26dd346e8dd362"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_moves_to_the_open_list_when_it_opens_and_back_when_it_closes() {
        let k = keyed(10, Duration::from_secs(3600));
        let a = k.get("a");
        k.get("b");
        k.get("c");
        assert_eq!(k.list(CLOSED), ["a", "b", "c"]);
        tokio::time::advance(Duration::from_millis(1)).await;
        // Opening is a use: "a" goes to the back of the open list.
        trip(&a);
        assert_eq!(k.list(CLOSED), ["b", "c"]);
        assert_eq!(k.list(OPEN), ["a"]);
        // Half-open after the cooldown: back with the closed ones, as their most recent.
        tokio::time::advance(Duration::from_secs(60)).await;
        let probe = a.try_acquire().unwrap();
        assert_eq!(a.state(), BreakerState::HalfOpen);
        assert_eq!(k.list(CLOSED), ["b", "c", "a"]);
        assert!(k.list(OPEN).is_empty());
        probe.record(Outcome::Failure);
        assert_eq!(k.list(OPEN), ["a"]);
        // An operator's reset closes it.
        a.reset();
        assert_eq!(k.list(CLOSED), ["b", "c", "a"]);
        // A look-up moves a key to the back of its list.
        k.get("b");
        assert_eq!(k.list(CLOSED), ["c", "a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_evicted_while_a_call_holds_it_finishes_outside_the_map() {
        let k = keyed(1, Duration::from_secs(3600));
        let held = k.get("held");
        let permit = held.try_acquire().unwrap();
        k.get("other");
        assert_eq!((k.len(), k.key_evictions()), (1, 1));
        // The call's failure lands in the evicted breaker, and opens it.
        for _ in 0..4 {
            held.try_acquire().unwrap().record(Outcome::Failure);
        }
        permit.record(Outcome::Failure);
        assert_eq!(held.state(), BreakerState::Open);
        // Its opening finds no entry to move, and the key comes back closed.
        assert_eq!(k.list(CLOSED), ["other"]);
        assert!(k.list(OPEN).is_empty());
        let back = k.get("held");
        assert!(!Arc::ptr_eq(&back, &held));
        assert_eq!(back.state(), BreakerState::Closed);
        assert_eq!(k.key_evictions(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_used_within_the_ttl_is_never_taken_for_idle() {
        let ttl = Duration::from_secs(80);
        let k = keyed(2, ttl);
        let a = k.get("a");
        trip(&a);
        drop(a);
        for step in 0..100 {
            tokio::time::advance(Duration::from_secs(7)).await;
            // "a" is looked up every 70s, within the ttl: its open breaker must survive the
            // evictions that every new key makes.
            if step % 10 == 0 {
                assert_eq!(k.get("a").state(), BreakerState::Open, "step {step}");
            }
            k.get(&format!("k{step}"));
        }
    }

    #[test]
    fn a_full_map_evicts_the_least_recently_used_closed_breaker() {
        let k = keyed(128, Duration::from_secs(3600));
        for i in 0..128 {
            k.get(&format!("k{i}"));
        }
        // Open one: open breakers are evicted last.
        let b = k.get("k0");
        trip(&b);
        drop(b);
        for i in 128..1000 {
            k.get(&format!("k{i}"));
            assert!(k.len() <= 128);
        }
        assert_eq!(k.get("k0").state(), BreakerState::Open);
        assert_eq!(k.key_evictions(), 1000 - 128);
        let closed = k.list(CLOSED);
        assert_eq!(closed.len(), 127);
        assert_eq!(closed.first().map(String::as_str), Some("k873"));
        assert_eq!(closed.last().map(String::as_str), Some("k999"));
    }

    #[test]
    fn a_long_key_is_kept_by_its_prefix_and_digest() {
        let k = keyed(10, Duration::from_secs(60));
        let long = format!("{}{}", "é".repeat(40), "x".repeat(300));
        let b = k.get(&long);
        let shown = b.key().unwrap().into_owned();
        // 32 two-byte characters fill the 64 bytes of the prefix exactly.
        let prefix = "é".repeat(32);
        assert!(shown.starts_with(&format!("{prefix}…sha256:")), "{shown}");
        assert_eq!(shown.len(), 64 + LONG_MARK.len() + 64);
        assert!(b.key_is_hashed());
        assert!(Arc::ptr_eq(&b, &k.get(&long)));
        // Its stored form, as a short key, is another key.
        let other = k.get(&shown);
        assert!(!Arc::ptr_eq(&b, &other));
        assert_eq!(other.key().as_deref(), Some(shown.as_str()));
        assert_eq!(k.len(), 2);
        // A 257-byte key that ends mid-character in its prefix is cut back to a character.
        let odd = format!("a{}", "é".repeat(128));
        let shown = k.get(&odd).key().unwrap().into_owned();
        assert!(
            shown.starts_with(&format!("a{}…", "é".repeat(31))),
            "{shown}"
        );
        // Exactly 256 bytes is still a key.
        let edge = "k".repeat(KeyedBreakers::MAX_KEY_LEN);
        assert_eq!(k.get(&edge).key().as_deref(), Some(edge.as_str()));
    }

    #[test]
    fn a_long_sensitive_key_is_redacted_by_the_whole_key_whenever_it_is_marked() {
        let k = keyed(10, Duration::from_secs(60));
        let long = "s".repeat(1000);
        let before = k.get(&long);
        assert!(before.key().unwrap().starts_with("ssss"));
        k.mark_sensitive();
        let shown = crate::redact::redacted_key("t", &long);
        assert_eq!(before.key().as_deref(), Some(shown.as_str()));
        assert_eq!(k.get(&long).key().as_deref(), Some(shown.as_str()));
    }
}
