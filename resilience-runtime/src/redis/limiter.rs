//! A rate limit shared by the fleet: GCRA in a Lua script on the server's clock, one round trip
//! per permit (or per lease of several), with an in-process GCRA of the same rate answering
//! while the server cannot.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::scripts;
use super::task::{self, RoundTripError, round_trip};
use super::{Inner, lock};
use crate::limit::{Gcra, RateLimit};
use crate::store::Permit;

/// Keys a limiter keeps local state for at most (fallback limiters, leases); past it the map
/// starts over (fallback keys with a fresh burst, leased permits given up).
const MAX_LOCAL_KEYS: usize = 10_000;

/// Permits leased and not spent yet, and until when they may be, by key.
type Leases = HashMap<Option<Box<str>>, (u32, Instant)>;

/// Until when a throttled hint pauses this replica's calls, by key.
type Pauses = HashMap<Option<Box<str>>, Instant>;

/// The script's clock, when a test or simulation drives it.
type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// A rate limit of `rate` permits per `per` shared by every replica on one Redis server: made by
/// [`RedisBackend::rate_limit`](super::RedisBackend::rate_limit), installed with
/// [`Registry::set_rate_limit`](crate::Registry::set_rate_limit) (or by a `[rate_limits.<name>]`
/// table with `backend = "<name>"`).
///
/// Each permit is decided by the server (GCRA, bursts of up to `rate`, on the server's `TIME`):
/// the call awaits one round trip ([`Permit::Ask`]), never longer than the backend's
/// `round_trip_limit`. With a lease of `n`, one round trip takes up to `n` permits and the
/// replica spends the rest without asking, within one period. While the backend is in fallback,
/// an in-process GCRA of the same rate answers at once: each replica then grants the whole rate
/// on its own.
///
/// ```no_run
/// use std::time::Duration;
/// use resilience_runtime::limit::RateLimit;
/// use resilience_runtime::redis::{RedisBackend, RedisConfig};
/// use resilience_runtime::store::Permit;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::new(RedisConfig::new("redis://127.0.0.1:6379")?);
/// let graph = backend.rate_limit("graph", 10, Duration::from_secs(1)).per_key(true).with_lease(2);
/// backend.start();
/// backend.wait_for_syncs(1).await;
/// match graph.acquire(Some("tenant-a")) {
///     Permit::Ask(round_trip) => assert!(round_trip.await.is_ok()),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct RedisRateLimit {
    inner: Arc<Inner>,
    state: Arc<State>,
}

struct State {
    name: Arc<str>,
    rate: u32,
    per: Duration,
    emission_us: u64,
    tolerance_us: u64,
    extra_ttl_ms: u64,
    per_key: bool,
    lease: u32,
    clock: Option<Clock>,
    local: Gcra,
    local_keyed: Mutex<HashMap<Box<str>, Arc<Gcra>>>,
    leased: Mutex<Leases>,
    /// Set once a hint paused a key: until then no call asks the lock.
    any_paused: AtomicBool,
    paused: Mutex<Pauses>,
}

impl RedisRateLimit {
    pub(super) fn new(inner: Arc<Inner>, name: &str, rate: u32, per: Duration) -> RedisRateLimit {
        let rate = rate.max(1);
        let per_us = u64::try_from(per.as_micros()).unwrap_or(u64::MAX);
        let emission_us = (per_us / u64::from(rate)).max(1);
        RedisRateLimit {
            inner,
            state: Arc::new(State {
                name: name.into(),
                rate,
                per,
                emission_us,
                tolerance_us: emission_us.saturating_mul(u64::from(rate) - 1),
                extra_ttl_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1000),
                per_key: false,
                lease: 1,
                clock: None,
                local: Gcra::new(rate, per),
                local_keyed: Mutex::new(HashMap::new()),
                leased: Mutex::new(HashMap::new()),
                any_paused: AtomicBool::new(false),
                paused: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs `f` on the settings: only a limiter just made is changed this way, before any use.
    fn set(mut self, f: impl FnOnce(&mut State)) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.state) {
            f(s);
        }
        self
    }

    /// One quota per key (the call's `breaker_key`, a tenant) instead of one for all calls.
    /// A key is stored in Redis as its hash only.
    pub fn per_key(self, per_key: bool) -> Self {
        self.set(|s| s.per_key = per_key)
    }

    /// Takes up to `lease` permits per round trip, the rest kept for this replica's next calls
    /// within one period (1, the default: one round trip per permit).
    pub fn with_lease(self, lease: u32) -> Self {
        self.set(|s| s.lease = lease.max(1))
    }

    /// Decides permits on `clock`'s time (any epoch, in the limit's own terms) instead of the
    /// server's `TIME`: for tests and simulations that drive time themselves.
    pub fn with_clock(self, clock: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        self.set(|s| s.clock = Some(Arc::new(clock)))
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}

impl fmt::Debug for RedisRateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.state;
        f.debug_struct("RedisRateLimit")
            .field("name", &s.name)
            .field("rate", &s.rate)
            .field("per", &s.per)
            .field("per_key", &s.per_key)
            .field("lease", &s.lease)
            .field("backend", &self.inner.config.shown)
            .finish_non_exhaustive()
    }
}

impl State {
    fn key<'k>(&self, key: Option<&'k str>) -> Option<&'k str> {
        if self.per_key { key } else { None }
    }

    /// The in-process answer, for a replica in fallback.
    fn local(&self, key: Option<&str>) -> Result<(), Duration> {
        let Some(key) = key else {
            return self.local.try_acquire();
        };
        let gcra = {
            let mut map = lock(&self.local_keyed);
            if let Some(g) = map.get(key) {
                g.clone()
            } else {
                if map.len() >= MAX_LOCAL_KEYS {
                    map.clear();
                }
                let g = Arc::new(Gcra::new(self.rate, self.per));
                map.insert(key.into(), g.clone());
                g
            }
        };
        gcra.try_acquire()
    }

    /// The time left of a throttled hint's pause on `key`, seen by this replica.
    fn paused_for(&self, key: Option<&str>) -> Option<Duration> {
        if !self.any_paused.load(Ordering::Relaxed) {
            return None;
        }
        let paused = lock(&self.paused);
        let until = *paused.get(&key.map(Box::<str>::from))?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// Pauses `key` on this replica until `until`, and gives up its leased permits.
    fn pause_here(&self, key: Option<&str>, until: Instant) {
        let k = key.map(Box::<str>::from);
        lock(&self.leased).remove(&k);
        let mut paused = lock(&self.paused);
        if paused.len() >= MAX_LOCAL_KEYS {
            let now = Instant::now();
            paused.retain(|_, u| *u > now);
        }
        let at = paused.entry(k).or_insert(until);
        *at = (*at).max(until);
        self.any_paused.store(true, Ordering::Relaxed);
    }

    /// The limit's key in Redis, before the backend's prefix.
    fn tag(&self, key: Option<&str>) -> String {
        match key {
            None => format!("rl:{}", self.name),
            Some(k) => format!(
                "rl:{}/{}",
                self.name,
                crate::redact::redacted_key(&self.name, k)
            ),
        }
    }

    /// The script's clock argument: empty for the server's `TIME`.
    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| c().as_micros().to_string())
            .unwrap_or_default()
    }

    /// A permit leased earlier, if one is left and its period has not passed.
    fn take_leased(&self, key: Option<&str>) -> bool {
        if self.lease <= 1 {
            return false;
        }
        let mut leased = lock(&self.leased);
        let k = key.map(Box::<str>::from);
        match leased.get_mut(&k) {
            Some((n, until)) if *n > 0 && Instant::now() < *until => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn keep_leased(&self, key: Option<&str>, n: u32) {
        let mut leased = lock(&self.leased);
        if leased.len() >= MAX_LOCAL_KEYS {
            leased.clear();
        }
        leased.insert(key.map(Box::from), (n, Instant::now() + self.per));
    }

    /// The server's answer to a round trip, or the local one when it gave none.
    fn answer(
        &self,
        inner: &Inner,
        key: Option<&str>,
        r: Result<(u32, u64), RoundTripError>,
    ) -> Result<(), Duration> {
        match r {
            Ok((0, wait_us)) => Err(Duration::from_micros(wait_us.max(1))),
            Ok((n, _)) => {
                if n > 1 {
                    self.keep_leased(key, n - 1);
                }
                Ok(())
            }
            Err(e) => {
                inner.failed("rate limit", &e);
                self.local(key)
            }
        }
    }
}

impl RateLimit for RedisRateLimit {
    /// A leased permit, or (in fallback) the local limiter's; otherwise a refusal, since a shared
    /// permit needs a round trip ([`RateLimit::acquire`]).
    fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_keyed(None)
    }

    fn try_acquire_keyed(&self, key: Option<&str>) -> Result<(), Duration> {
        let key = self.state.key(key);
        if let Some(left) = self.state.paused_for(key) {
            return Err(left);
        }
        if self.state.take_leased(key) {
            return Ok(());
        }
        if !self.inner.sharing() {
            return self.state.local(key);
        }
        Err(self.inner.config.round_trip_limit)
    }

    fn acquire(&self, key: Option<&str>) -> Permit {
        let s = &self.state;
        let key = s.key(key);
        if let Some(left) = s.paused_for(key) {
            return Permit::Refused(left);
        }
        if s.take_leased(key) {
            return Permit::Granted;
        }
        task::start(&self.inner);
        let Some(mut conn) = self.inner.shared_conn() else {
            return s.local(key).into();
        };
        let mut call = scripts::GCRA.prepare_invoke();
        call.key(self.inner.key(&s.tag(key), ""))
            .arg(s.now_arg())
            .arg(s.emission_us)
            .arg(s.tolerance_us)
            .arg(s.lease)
            .arg(s.extra_ttl_ms);
        let limit = self.inner.config.round_trip_limit;
        let ask =
            async move { round_trip(limit, call.invoke_async::<(u32, u64)>(&mut conn)).await };
        let (inner, state) = (self.inner.clone(), self.state.clone());
        let key: Option<Box<str>> = key.map(Box::from);
        if tokio::runtime::Handle::try_current().is_ok() {
            return Permit::ask(async move {
                let r = ask.await;
                state.answer(&inner, key.as_deref(), r)
            });
        }
        // A blocking call outside any runtime: the round trip runs on the backend's.
        let Some(handle) = lock(&self.inner.runtime).clone() else {
            return s.local(key.as_deref()).into();
        };
        let round_trip = handle.spawn(ask);
        Permit::ask(async move {
            let r = round_trip
                .await
                .unwrap_or(Err(RoundTripError::Timeout(limit)));
            state.answer(&inner, key.as_deref(), r)
        })
    }
    /// A throttled hint, for the whole fleet: this replica stops granting `key`'s permits at
    /// once (its leased permits given up, its fallback limiter paused too), and the server's
    /// state is moved past the pause in one round trip, sent in the background (bounded by the
    /// backend's `round_trip_limit`), so that every replica's next permit waits for it.
    fn pause(&self, key: Option<&str>, for_: Duration) {
        let s = &self.state;
        let key = s.key(key);
        s.pause_here(key, Instant::now() + for_);
        match key {
            None => s.local.pause(None, for_),
            Some(k) => {
                if let Some(g) = lock(&s.local_keyed).get(k) {
                    g.pause(None, for_);
                }
            }
        }
        task::start(&self.inner);
        let Some(mut conn) = self.inner.shared_conn() else {
            return;
        };
        let mut call = scripts::PAUSE.prepare_invoke();
        call.key(self.inner.key(&s.tag(key), ""))
            .arg(s.now_arg())
            .arg(u64::try_from(for_.as_micros()).unwrap_or(u64::MAX))
            .arg(s.tolerance_us)
            .arg(s.extra_ttl_ms);
        let limit = self.inner.config.round_trip_limit;
        let inner = self.inner.clone();
        let send = async move {
            if let Err(e) = round_trip(limit, call.invoke_async::<u32>(&mut conn)).await {
                inner.failed("rate limit pause", &e);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn(send)),
            Err(_) => {
                if let Some(h) = lock(&self.inner.runtime).clone() {
                    drop(h.spawn(send));
                }
            }
        }
    }
}
