//! The hard bound on per-key state: per-key breakers and the keyed governor limiter keep at most
//! `max_keys` keys whatever their state, evict in the documented order exactly, judge idleness to
//! the clock, and keep a long key in bounded memory. Time is tokio's, paused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::Registry;
use resilience_runtime::breaker::{Breaker, BreakerState, Outcome};
use resilience_runtime::metrics::KeyedBreakerMetrics;
use resilience_runtime::registry::{KeyedBreakers, RegistryConfig};

/// The per-key base `t` of a fresh registry, with the default breaker (5 consecutive failures,
/// 60 s cooldown).
fn base(max_keys: usize, idle_ttl: &str, sensitive: bool) -> (Registry, Arc<KeyedBreakers>) {
    let registry = Registry::new();
    let cfg = RegistryConfig::from_toml_str(&format!(
        "[breakers.t]\nmax_keys = {max_keys}\nidle_ttl = \"{idle_ttl}\"\nsensitive_keys = {sensitive}"
    ))
    .unwrap();
    registry.apply(&cfg);
    let k = registry.keyed_breakers("t");
    (registry, k)
}

/// Fails calls through `b` until it opens.
fn trip(b: &Breaker) {
    while b.state() != BreakerState::Open {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
}

fn live(k: &KeyedBreakers, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|key| k.contains(key))
        .map(|key| key.to_string())
        .collect()
}

/// Distinct keys put through each map (about 4 s in a debug build).
const MANY: usize = 1_000_000;

#[test]
fn a_million_distinct_keys_never_hold_more_than_max_keys() {
    let (_r, k) = base(10_000, "1h", false);
    let mut most = 0;
    for i in 0..MANY {
        k.get(&format!("tenant-{i}"));
        if i % 1_000 == 0 {
            most = most.max(k.len());
        }
        if i == 9_999 {
            // Four shards, and the bound is on their keys together: all 10,000 fit.
            assert_eq!((k.len(), k.key_evictions()), (10_000, 0));
        }
    }
    assert_eq!((k.len(), most), (10_000, 10_000));
    assert_eq!(k.key_evictions(), (MANY - 10_000) as u64);
    // Four shards, each evicting its least recently used: the last key is kept, the first long
    // gone.
    assert!(k.contains(&format!("tenant-{}", MANY - 1)));
    assert!(!k.contains("tenant-0"));
}

#[test]
fn a_flood_of_keys_each_tripped_open_stays_within_max_keys() {
    let (r, k) = base(1_000, "1h", false);
    for i in 0..5_000 {
        trip(&k.get(&format!("tenant-{i}")));
        assert!(k.len() <= 1_000, "{} keys after tenant-{i}", k.len());
    }
    assert_eq!(k.key_evictions(), 4_000);
    let health = r.health();
    assert_eq!((health.keyed[0].keys, health.keyed[0].open), (1_000, 1_000));
    // Every key open: the least recently used open ones went first.
    assert!(!k.contains("tenant-3999") && k.contains("tenant-4000"));
    // An evicted open key starts closed when it comes back; it evicts the oldest open key.
    assert_eq!(k.get("tenant-0").state(), BreakerState::Closed);
    assert!(!k.contains("tenant-4000"));
    // The next newcomer evicts the one closed key rather than an open one.
    k.get("tenant-5000");
    assert!(!k.contains("tenant-0") && k.contains("tenant-4001"));
    assert_eq!((k.len(), k.key_evictions()), (1_000, 4_002));
}

#[tokio::test(start_paused = true)]
async fn open_breakers_are_kept_longer_than_closed_ones_in_exact_lru_order() {
    let (_r, k) = base(4, "1h", false);
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for key in ["a", "b", "c", "d"] {
        k.get(key);
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    trip(&k.get("b"));
    k.get("a");
    // Closed, least recently used first: c, d, a. Open: b.
    k.get("e");
    assert_eq!(live(&k, &keys), ["a", "b", "d", "e"]);
    k.get("f");
    assert_eq!(live(&k, &keys), ["a", "b", "e", "f"]);
    // Open them all, f first: now the least recently used open one goes.
    for key in ["f", "a", "e"] {
        trip(&k.get(key));
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    k.get("g");
    assert_eq!(live(&k, &keys), ["a", "e", "f", "g"]);
    // b was the oldest open; g is closed, so it is the next to go, before any open one.
    k.get("h");
    assert_eq!(live(&k, &keys), ["a", "e", "f", "h"]);
    assert_eq!(k.key_evictions(), 4);
}

#[tokio::test(start_paused = true)]
async fn idleness_is_judged_to_the_millisecond() {
    let (_r, k) = base(3, "1s", false);
    let keys = ["open", "spare", "active", "x", "y"];
    trip(&k.get("open"));
    k.get("spare");
    tokio::time::advance(Duration::from_secs(1)).await;
    k.get("active");
    // "open" has been unused for exactly 1s: not longer than idle_ttl, so not idle. The least
    // recently used closed key goes.
    k.get("x");
    assert_eq!(live(&k, &keys), ["open", "active", "x"]);
    // One millisecond later it is idle, and goes before any recently used key.
    tokio::time::advance(Duration::from_millis(1)).await;
    k.get("y");
    assert_eq!(live(&k, &keys), ["active", "x", "y"]);
}

#[tokio::test(start_paused = true)]
async fn an_open_key_idle_for_84_minutes_goes_before_an_active_one() {
    let (_r, k) = base(2, "1s", false);
    trip(&k.get("open"));
    for _ in 0..84 * 60 {
        tokio::time::advance(Duration::from_secs(1)).await;
        k.get("active");
    }
    k.get("new");
    assert_eq!(
        live(&k, &["open", "active", "new"]),
        ["active", "new"],
        "the idle open key is evicted, the active one kept"
    );
}

/// A reference model of the documented eviction order, against which random sequences of
/// look-ups, openings, resets and time are replayed.
#[derive(Default)]
struct Model {
    /// key -> (last use in ns, open, order of its last move)
    live: HashMap<String, (u64, bool, u64)>,
    moves: u64,
    evictions: u64,
}

impl Model {
    fn touch(&mut self, key: &str, now: u64, open: bool) {
        self.moves += 1;
        self.live.insert(key.to_owned(), (now, open, self.moves));
    }

    fn front(&self, open: bool) -> Option<(&String, u64)> {
        self.live
            .iter()
            .filter(|(_, e)| e.1 == open)
            .min_by_key(|(_, e)| e.2)
            .map(|(k, e)| (k, e.0))
    }

    fn evict(&mut self, now: u64, ttl: u64) {
        let closed = self.front(false);
        let open = self.front(true);
        let oldest = match (closed, open) {
            (Some(c), Some(o)) if o.1 < c.1 => o,
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => return,
        };
        let idle = now - oldest.1 > ttl;
        let victim = if idle {
            oldest
        } else {
            closed.unwrap_or(oldest)
        };
        let victim = victim.0.clone();
        self.live.remove(&victim);
        self.evictions += 1;
    }
}

#[tokio::test(start_paused = true)]
async fn random_sequences_evict_exactly_as_documented() {
    const MAX_KEYS: usize = 5;
    const TTL: u64 = 1_000_000_000;
    let (_r, k) = base(MAX_KEYS, "1s", false);
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let mut model = Model::default();
    let mut held: HashMap<String, Arc<Breaker>> = HashMap::new();
    let start = tokio::time::Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..20_000 {
        let key = &keys[next(keys.len() as u64) as usize];
        let now = start.elapsed().as_nanos() as u64;
        match next(10) {
            0..=4 => {
                if let Some(e) = model.live.get(key).copied() {
                    model.touch(key, now, e.1);
                } else {
                    if model.live.len() == MAX_KEYS {
                        model.evict(now, TTL);
                    }
                    model.touch(key, now, false);
                }
                held.insert(key.clone(), k.get(key));
            }
            5 => {
                // Opening a breaker the map still holds is a use; one it evicted is not in it.
                if let Some(b) = held.get(key).filter(|b| b.state() == BreakerState::Closed) {
                    trip(b);
                    if model.live.contains_key(key) {
                        model.touch(key, now, true);
                    }
                }
            }
            6 => {
                if let Some(b) = held.get(key) {
                    b.reset();
                    if model.live.contains_key(key) {
                        model.touch(key, now, false);
                    }
                }
            }
            _ => tokio::time::advance(Duration::from_millis(next(700))).await,
        }
        for key in &keys {
            assert_eq!(
                k.contains(key),
                model.live.contains_key(key),
                "{key} at step {step}"
            );
        }
        assert_eq!(k.key_evictions(), model.evictions, "step {step}");
    }
    assert!(model.evictions > 1_000, "{} evictions", model.evictions);
    println!(
        "model: 20000 steps, {} evictions, the same live keys at every step",
        model.evictions
    );
}

#[test]
fn a_long_key_costs_no_more_than_its_stored_form() {
    let (_r, k) = base(1_000, "1h", false);
    // The stored form, and the redacted form kept for a later mark as sensitive.
    let stored = 64 + "…sha256:".len() + 64;
    // Eight keys of each length (SHA-256 over a megabyte is slow in a debug build).
    for (i, len) in [257, 4_096, 1 << 20].into_iter().enumerate() {
        let before = k.key_bytes();
        for j in 0..8 {
            let key = format!("{i}-{j}-{}", "x".repeat(len));
            let b = k.get(&key);
            assert_eq!(b.key().unwrap().len(), stored);
            if j == 0 {
                assert!(Arc::ptr_eq(&b, &k.get(&key)));
            }
        }
        assert_eq!(
            k.key_bytes() - before,
            8 * (stored + 20),
            "keys of {len} bytes"
        );
    }
    assert_eq!(k.len(), 3 * 8);
    // Two megabyte keys that differ only in their last byte are two keys, shown by one prefix
    // and two digests.
    let mut long = "y".repeat(1 << 20);
    let first = k.get(&long);
    long.push('z');
    let second = k.get(&long);
    assert!(!Arc::ptr_eq(&first, &second));
    let (a, b) = (first.key().unwrap(), second.key().unwrap());
    assert_eq!(a.split('…').next(), Some("y".repeat(64).as_str()));
    assert_eq!(a.split('…').next(), b.split('…').next());
    assert_ne!(a, b);
    // The stored form, given as a key, is another key: no short key shares a long key's breaker.
    assert!(!Arc::ptr_eq(&first, &k.get(&a)));
    // A 256-byte key is kept whole.
    let short = "s".repeat(KeyedBreakers::MAX_KEY_LEN);
    assert_eq!(k.get(&short).key().as_deref(), Some(short.as_str()));
}

#[test]
fn a_long_sensitive_key_is_shown_redacted_by_the_whole_key() {
    let (_r, k) = base(10, "1h", true);
    let long = "secret".repeat(50_000);
    let b = k.get(&long);
    let shown = resilience_runtime::redact::redacted_key("t", &long);
    assert_eq!(b.key().as_deref(), Some(shown.as_str()));
    assert_eq!(k.key_bytes(), 64 + "…sha256:".len() + 64 + shown.len());
    assert!(!format!("{b:?}").contains("secret"));
}

#[test]
fn evictions_are_counted_in_the_metrics_snapshot() {
    let (r, k) = base(2, "1h", false);
    for t in ["a", "b", "c", "d", "e"] {
        k.get(t);
    }
    r.keyed_breakers("other").get("x");
    assert_eq!(
        r.metrics().keyed_breakers,
        [
            KeyedBreakerMetrics {
                breaker: "other".into(),
                keys: 1,
                key_evictions: 0,
            },
            KeyedBreakerMetrics {
                breaker: "t".into(),
                keys: 2,
                key_evictions: 3,
            },
        ]
    );
}

#[cfg(feature = "prometheus")]
#[test]
fn evictions_are_exported_as_breaker_key_evictions_total() {
    let (r, k) = base(2, "1h", false);
    for t in ["a", "b", "c", "d", "e"] {
        k.get(t);
    }
    let text = resilience_runtime::prometheus::encode(&r).unwrap();
    assert!(
        text.contains("# TYPE breaker_key_evictions counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nbreaker_key_evictions_total{breaker=\"t\"} 3\n"),
        "{text}"
    );
}

#[cfg(feature = "governor")]
mod limiter {
    use std::num::NonZeroU32;

    use ::governor::Quota;
    use resilience_runtime::governor::KeyedGovernorLimit;
    use resilience_runtime::limit::RateLimit;

    use super::*;

    fn per_second(n: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(n).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_million_distinct_keys_never_hold_more_than_max_keys() {
        let limits = KeyedGovernorLimit::new(per_second(1), 10_000);
        let mut most = 0;
        for i in 0..MANY {
            limits.try_acquire_key(&format!("tenant-{i}")).unwrap();
            if i % 1_000 == 0 {
                most = most.max(limits.len());
            }
            if i == 9_999 {
                assert_eq!((limits.len(), limits.key_evictions()), (10_000, 0));
            }
        }
        assert_eq!((limits.len(), most), (10_000, 10_000));
        assert_eq!(limits.key_evictions(), (MANY - 10_000) as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_key_goes_and_comes_back_with_a_full_quota() {
        let limits = KeyedGovernorLimit::new(per_second(1), 2);
        let key = |s: &str| s.to_owned();
        limits.try_acquire_key(&key("a")).unwrap();
        limits.try_acquire_key(&key("b")).unwrap();
        // A refusal is a use too: "a" is now the most recently used.
        assert!(limits.try_acquire_key(&key("a")).is_err());
        limits.try_acquire_key(&key("c")).unwrap();
        assert_eq!((limits.len(), limits.key_evictions()), (2, 1));
        // "b" was evicted: it starts again with a full quota (and evicts "a").
        limits.try_acquire_key(&key("b")).unwrap();
        assert!(limits.try_acquire_key(&key("c")).is_err());
        limits.try_acquire_key(&key("a")).unwrap();
        assert_eq!((limits.len(), limits.key_evictions()), (2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_key_draws_on_the_quota_of_its_breakers_stored_form() {
        let limits = Arc::new(KeyedGovernorLimit::new(per_second(1), 10));
        let long = "z".repeat(1 << 20);
        limits.try_acquire_keyed(Some(&long)).unwrap();
        assert!(limits.try_acquire_keyed(Some(&long)).is_err());
        // A site passes its breaker's key: the stored form, the same quota.
        let (_r, k) = base(10, "1h", false);
        let form = k.get(&long).key().unwrap().into_owned();
        assert!(limits.try_acquire_keyed(Some(&form)).is_err());
        assert!(limits.for_key(long.clone()).try_acquire().is_err());
        // Another megabyte key with the same prefix has its own.
        limits.try_acquire_keyed(Some(&format!("{long}!"))).unwrap();
        assert_eq!(limits.len(), 2);
    }
}
