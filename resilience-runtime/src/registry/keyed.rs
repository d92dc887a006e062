//! Per-key breakers: one breaker per key (a tenant id) of one name, bounded in number.
//!
//! Built for many keys. A key costs one allocation for its breaker (which shares its name and
//! settings with every other key of the name, and owns its key) plus one for the key's text, and
//! one pointer in the map. A look-up that finds its key takes a read lock, hashes the key with
//! `foldhash`, clones an `Arc` and, once per key per recency epoch, moves the key's stamp: it reads
//! no clock (one look-up in 64 per thread does, to keep the epochs moving).
//!
//! # Recency and eviction
//!
//! Time is cut into epochs of an eighth of `idle_ttl` (at least 1 ms), advanced on the slow
//! paths. Each breaker carries the epoch in which it was last looked up. When the map is full, an
//! insertion sweeps it: first it drops every key known to be idle for `idle_ttl` (stamped enough
//! epochs ago that even the end of its epoch is older than `idle_ttl`), whatever its state, unless
//! a call holds it; then, if still full, the least recently used closed breaker no call holds,
//! and with it up to `max_keys / 64` other closed breakers that lose nothing by going (no failure
//! counted, not looked up in this epoch), so that the next insertions find room without sweeping.
//!
//! # Sensitive keys
//!
//! A base whose keys are API keys or tenant secrets is marked sensitive (`sensitive_key` on a
//! site, `sensitive_keys = true` in its `[breakers.<name>]` table). Each key's breaker then
//! computes the key's redacted form once, when it is made, and keeps it after the key in the same
//! allocation (20 bytes more per key); every output shows that form (see [`Breaker::key`]). The
//! map still finds a breaker by the key itself. A mark is never taken back; a key made before
//! its base was marked computes its form each time it is shown, until it is evicted.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerConfig, BreakerState, Shared};
use crate::clock;

/// A map entry: the breaker, hashed and compared by its key, so the key is stored once.
struct Entry(Arc<Breaker>);

impl Entry {
    fn key(&self) -> &str {
        self.0.raw_key().unwrap_or_default()
    }
}

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        self.key()
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

type Set = HashSet<Entry, foldhash::fast::RandomState>;

/// The epoch word: the epoch number in the low 16 bits, the millisecond it began above.
const EPOCH_BITS: u32 = 16;
const MAX_MS: u64 = u64::MAX >> EPOCH_BITS;

/// Look-ups per thread between two readings of the clock on the hit path.
const TICK: u32 = 64;

thread_local! {
    static LOOKUPS: Cell<u32> = const { Cell::new(0) };
}

/// Whether this look-up is the one in [`TICK`] on this thread that reads the clock.
#[inline]
fn tick() -> bool {
    LOOKUPS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n % TICK == 0
    })
}

/// Breakers of one name, one per key (a tenant id), with a bound on live keys.
pub struct KeyedBreakers {
    shared: Arc<Shared>,
    /// The bound on live keys; replaced in place by [`KeyedBreakers::reconfigure`], as are the
    /// idle settings below.
    max_keys: AtomicUsize,
    idle_ttl: std::sync::Mutex<Duration>,
    /// The current recency epoch and when it began (see [`EPOCH_BITS`]).
    epoch: AtomicU64,
    /// An epoch's length in milliseconds.
    epoch_ms: AtomicU64,
    /// Epochs after which a key not looked up is known to be idle for `idle_ttl`.
    idle_epochs: AtomicU16,
    map: RwLock<Set>,
}

/// An epoch's length in milliseconds, and the epochs after which a key is idle, for `idle_ttl`.
fn idle_settings(idle_ttl: Duration) -> (u64, u16) {
    let ttl_ms = u64::try_from(idle_ttl.as_millis()).unwrap_or(u64::MAX);
    let epoch_ms = (ttl_ms / 8).max(1);
    // A key stamped `s` was last looked up before epoch `s + 1` began; epoch `c` began at
    // least `(c - s - 1) * epoch_ms` later (to the millisecond). Idle once that exceeds the ttl.
    let idle_epochs = ttl_ms.saturating_add(1).div_ceil(epoch_ms) + 1;
    (
        epoch_ms,
        u16::try_from(idle_epochs).unwrap_or(u16::MAX).min(1 << 14),
    )
}

impl KeyedBreakers {
    pub(crate) fn new(
        name: Arc<str>,
        config: BreakerConfig,
        max_keys: usize,
        idle_ttl: Duration,
    ) -> Self {
        let (epoch_ms, idle_epochs) = idle_settings(idle_ttl);
        KeyedBreakers {
            shared: Shared::new(name, config),
            max_keys: AtomicUsize::new(max_keys.max(1)),
            idle_ttl: std::sync::Mutex::new(idle_ttl),
            epoch: AtomicU64::new(Self::millis(clock::now_nanos()) << EPOCH_BITS),
            epoch_ms: AtomicU64::new(epoch_ms),
            idle_epochs: AtomicU16::new(idle_epochs),
            map: RwLock::new(Set::default()),
        }
    }

    /// Replaces the settings of every key's breaker and the bounds on keys, in place: live keys
    /// keep their state (see [`Breaker::reconfigure`]). A new `idle_ttl` is judged in epochs of
    /// its own length from the next epoch on.
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
        self.max_keys.store(max_keys.max(1), Ordering::Relaxed);
        let (epoch_ms, idle_epochs) = idle_settings(idle_ttl);
        *self.idle_ttl.lock().unwrap_or_else(PoisonError::into_inner) = idle_ttl;
        self.epoch_ms.store(epoch_ms, Ordering::Relaxed);
        self.idle_epochs.store(idle_epochs, Ordering::Relaxed);
        Ok(())
    }

    fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    fn millis(now: u64) -> u64 {
        (now / 1_000_000).min(MAX_MS)
    }

    /// The breaker of `key`, made on first use. When `max_keys` keys are live, idle keys (unused
    /// for `idle_ttl`) are evicted first, then the least recently used closed breaker (see the
    /// module's documentation).
    #[inline]
    pub fn get(&self, key: &str) -> Arc<Breaker> {
        let epoch = self.epoch.load(Ordering::Relaxed) as u16;
        let hit = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|e| e.0.clone());
        match hit {
            Some(b) => {
                if b.touch(epoch) | tick() {
                    self.advance(clock::now_nanos());
                }
                b
            }
            None => self.insert(key),
        }
    }

    /// Moves to the next epoch if the current one is over; returns the current epoch.
    fn advance(&self, now: u64) -> u16 {
        let now_ms = Self::millis(now);
        let mut w = self.epoch.load(Ordering::Acquire);
        loop {
            if now_ms.saturating_sub(w >> EPOCH_BITS) < self.epoch_ms.load(Ordering::Relaxed) {
                return w as u16;
            }
            let next = (now_ms << EPOCH_BITS) | u64::from((w as u16).wrapping_add(1));
            match self
                .epoch
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next as u16,
                Err(actual) => w = actual,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn insert(&self, key: &str) -> Arc<Breaker> {
        let now = clock::now_nanos();
        let epoch = self.advance(now);
        let mut set = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = set.get(key) {
            e.0.touch(epoch);
            return e.0.clone();
        }
        if set.len() >= self.max_keys() {
            self.make_room(&mut set);
        }
        let b = Arc::new(Breaker::keyed(&self.shared, key, epoch, now));
        set.insert(Entry(b.clone()));
        b
    }

    /// The sweep of a full map (see the module's documentation).
    #[allow(
        clippy::mutable_key_type,
        reason = "an entry hashes and compares by its key, which never changes"
    )]
    fn make_room(&self, set: &mut Set) {
        // Read again under the lock: a look-up may have moved the epoch, and stamps with it.
        let epoch = self.epoch.load(Ordering::Acquire) as u16;
        // A stamp ahead of `epoch` (or wrapped far behind) counts as fresh.
        let age = |b: &Breaker| (b.age(epoch) as i16).max(0) as u16;
        // Nothing can clone an entry while the write lock is held: a count of one stays one.
        let unheld = |b: &Arc<Breaker>| Arc::strong_count(b) == 1;
        let idle = self.idle_epochs.load(Ordering::Relaxed);
        set.retain(|e| age(&e.0) < idle || !unheld(&e.0));
        let max_keys = self.max_keys();
        if set.len() < max_keys {
            return;
        }
        let evictable = |b: &Arc<Breaker>| unheld(b) && b.state() == BreakerState::Closed;
        let Some(oldest) = set
            .iter()
            .filter(|e| evictable(&e.0))
            .map(|e| age(&e.0))
            .max()
        else {
            return;
        };
        let mut needed = (set.len() + 1).saturating_sub(max_keys);
        let mut spare = max_keys / 64;
        set.retain(|e| {
            let b = &e.0;
            if !evictable(b) {
                return true;
            }
            let a = age(b);
            if needed > 0 && a == oldest {
                needed -= 1;
                return false;
            }
            if spare > 0 && a > 0 && b.failures() == 0 {
                spare -= 1;
                return false;
            }
            true
        });
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

    /// Live keys.
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every live key's breaker, with the key as outputs show it ([`Breaker::key`]).
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

    pub(crate) fn each(&self, f: &mut dyn FnMut(&Breaker, Option<&str>)) {
        if let Ok(m) = self.map.read() {
            for e in m.iter() {
                f(&e.0, e.0.key().as_deref());
            }
        }
    }
}

impl fmt::Debug for KeyedBreakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("name", self.shared.name())
            .field("sensitive", &self.is_sensitive())
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .field(
                "idle_ttl",
                &*self.idle_ttl.lock().unwrap_or_else(PoisonError::into_inner),
            )
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

    #[test]
    fn a_per_key_breaker_is_small() {
        assert!(
            std::mem::size_of::<Breaker>() <= 72,
            "{}",
            std::mem::size_of::<Breaker>()
        );
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
    async fn a_redacted_key_survives_the_opening_count_and_the_recency_stamp() {
        let k = keyed(10, Duration::from_secs(80));
        k.mark_sensitive();
        let b = k.get("secret");
        for _ in 0..5 {
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
        assert_eq!(b.opened_total(), 1);
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(10)).await;
            for _ in 0..TICK {
                k.get("secret");
            }
        }
        assert!(b.age(k.epoch.load(Ordering::Relaxed) as u16) < 2);
        assert_eq!(b.opened_total(), 1);
        assert_eq!(b.raw_key(), Some("secret"));
        // printf 't\0secret' | sha256sum
        assert_eq!(b.key().as_deref(), Some("key#5e26dd346e8dd362"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_go_first_whatever_their_state_and_used_ones_stay() {
        let ttl = Duration::from_secs(80);
        let k = keyed(3, ttl);
        let open = k.get("open");
        for _ in 0..5 {
            open.try_acquire().unwrap().record(Outcome::Failure);
        }
        assert_eq!(open.state(), BreakerState::Open);
        drop(open);
        k.get("busy");
        k.get("held");
        let held = k.get("held");
        // Ten seconds per step: "busy" is looked up throughout (often enough for the look-ups
        // to read the clock), the others never again.
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(10)).await;
            for _ in 0..TICK {
                k.get("busy");
            }
        }
        // Full: the sweep drops "open" (idle for 200s > 80s), keeps "held" (a call holds it).
        k.get("new");
        let mut keys = Vec::new();
        k.each(&mut |_, key| keys.push(key.unwrap().to_owned()));
        keys.sort();
        assert_eq!(keys, ["busy", "held", "new"]);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_used_within_the_ttl_is_never_taken_for_idle() {
        let ttl = Duration::from_secs(80);
        let k = keyed(2, ttl);
        let a = k.get("a");
        for _ in 0..5 {
            a.try_acquire().unwrap().record(Outcome::Failure);
        }
        drop(a);
        for step in 0..100 {
            tokio::time::advance(Duration::from_secs(7)).await;
            // "a" is looked up every 70s, within the ttl: its open breaker must survive the
            // sweeps that every new key makes.
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
        // Open one: open breakers are not evicted for room.
        let b = k.get("k0");
        for _ in 0..5 {
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
        drop(b);
        for i in 128..1000 {
            k.get(&format!("k{i}"));
            assert!(k.len() <= 128);
        }
        assert_eq!(k.get("k0").state(), BreakerState::Open);
    }
}
