//! Lock-free circuit breakers.
//!
//! ```text
//! CLOSED --(threshold failures, or failure ratio over a full window)--> OPEN
//! OPEN   --(cooldown elapsed, a probe slot free)--> HALF-OPEN
//! HALF-OPEN --(success_threshold successes)--> CLOSED
//! HALF-OPEN --(one failure)--> OPEN
//! ```
//!
//! At most `half_open_probes` probes are in flight at once, counted across half-open periods: a
//! probe that outlives its period (a sibling failed and reopened the breaker, or it closed, or an
//! operator reset it) keeps its slot until it is recorded or released, though its outcome no
//! longer counts. Once the cooldown has elapsed, an open breaker whose slots are all held by such
//! probes turns half-open only when one comes back; until then it refuses with a zero wait, as a
//! full half-open breaker does.
//!
//! Only transient failures and timeouts count. Permanent, policy and auth errors say nothing about
//! the dependency's health: they count as neither success nor failure.
//!
//! All state lives in one `AtomicU64` (state, generation, counters) plus the time the breaker
//! opened. Every transition bumps a generation number: a result that arrives from an older
//! generation (a slow call that started before the breaker opened) is ignored, so it cannot
//! corrupt the new state. A closed breaker admits a call with one atomic load.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::breaker::{Breaker, BreakerConfig, BreakerState, Outcome};
//!
//! let b = Breaker::new("graph", BreakerConfig::new().with_failure_threshold(2));
//! for _ in 0..2 {
//!     let permit = b.try_acquire().unwrap();
//!     permit.record(Outcome::Failure);
//! }
//! assert_eq!(b.state(), BreakerState::Open);
//! assert!(b.try_acquire().is_err());
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use resilience_policy::{self as policy, defaults};

use crate::InvalidConfig;
use crate::clock;
use crate::store::{self, BreakerStore, StoreCell};

/// How a breaker decides to open.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TripMode {
    /// Open after this many consecutive failures (default 5).
    Consecutive {
        /// Consecutive failures that open the breaker.
        threshold: u32,
    },
    /// Open when the failure ratio over the last `window` calls reaches `ratio`; only once the
    /// window is full (as MicroProfile Fault Tolerance's `requestVolumeThreshold`), and then after
    /// every recorded outcome: a success that fills the window at the ratio opens it too.
    Ratio {
        /// Number of recent calls considered.
        window: u32,
        /// Failure ratio, in `(0, 1]`, that opens the breaker: it opens at the fewest failures
        /// `n` in the window with `n / window >= ratio`, the decimal compared as written (7 of
        /// 50 calls reach `0.14`).
        ratio: f64,
    },
}

/// A breaker's settings.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::breaker::{BreakerConfig, TripMode};
///
/// const GRAPH: BreakerConfig = BreakerConfig::new()
///     .with_trip(TripMode::Ratio { window: 20, ratio: 0.5 })
///     .with_cooldown(Duration::from_secs(30))
///     .with_half_open_probes(2)
///     .with_success_threshold(2);
/// assert!(GRAPH.validate().is_ok());
/// assert_eq!(BreakerConfig::new().cooldown, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// When to open.
    pub trip: TripMode,
    /// How long the breaker stays open before it lets probes through (default 60s).
    pub cooldown: Duration,
    /// Probes in flight at once (default 1), including probes of an earlier half-open period
    /// that have not come back yet.
    pub half_open_probes: u32,
    /// Successful probes needed to close (default 1).
    pub success_threshold: u32,
}

impl BreakerConfig {
    /// The defaults: 5 consecutive failures, 60s cooldown, 1 probe, 1 success to close.
    pub const fn new() -> Self {
        BreakerConfig {
            trip: TripMode::Consecutive {
                threshold: defaults::FAILURE_THRESHOLD,
            },
            cooldown: defaults::COOLDOWN,
            half_open_probes: defaults::HALF_OPEN_PROBES,
            success_threshold: defaults::SUCCESS_THRESHOLD,
        }
    }

    /// Sets the trip mode.
    pub const fn with_trip(mut self, trip: TripMode) -> Self {
        self.trip = trip;
        self
    }

    /// Opens after `threshold` consecutive failures.
    pub const fn with_failure_threshold(mut self, threshold: u32) -> Self {
        self.trip = TripMode::Consecutive { threshold };
        self
    }

    /// Sets the cooldown.
    pub const fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets the number of concurrent half-open probes.
    pub const fn with_half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// Sets the successes needed to close.
    pub const fn with_success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = successes;
        self
    }

    /// Checks the settings against the policy's rules (see [`policy`]); the
    /// error names the field as a configuration file spells it.
    ///
    /// # Errors
    ///
    /// - a consecutive `failure_threshold` of 0 or above 10,000;
    /// - a ratio `window` of 0 or above 10,000, or a `failure_ratio` outside `(0, 1]`;
    /// - a `cooldown` shorter than 1 ms or longer than 30 days;
    /// - `half_open_probes` of 0, above the ratio window or above 255;
    /// - `success_threshold` of 0 or above 255 (probes may succeed one after another, so it may
    ///   exceed `half_open_probes`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::breaker::{BreakerConfig, TripMode};
    ///
    /// let wide = BreakerConfig::new().with_trip(TripMode::Ratio { window: 20_000, ratio: 0.5 });
    /// assert_eq!(wide.validate().unwrap_err().field(), "window");
    /// let long = BreakerConfig::new().with_cooldown(Duration::from_secs(31 * 86_400));
    /// assert_eq!(long.validate().unwrap_err().field(), "cooldown");
    /// ```
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let window = match self.trip {
            TripMode::Consecutive { threshold } => {
                policy::check_failure_threshold(threshold)?;
                None
            }
            TripMode::Ratio { window, ratio } => {
                policy::check_window(window)?;
                policy::check_failure_ratio(ratio)?;
                Some(window)
            }
        };
        policy::check_duration("cooldown", self.cooldown)?;
        policy::check_half_open_probes(self.half_open_probes, window)?;
        policy::check_success_threshold(self.success_threshold)?;
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig::new()
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Healthy: calls go through.
    Closed,
    /// Failing: calls are rejected until the cooldown ends.
    Open,
    /// Testing recovery: a limited number of probes go through.
    HalfOpen,
}

impl BreakerState {
    /// The state as the seed's gauge value: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// The state's name (`"half_open"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

use self::machine::{CLOSED, HasLimits, Limits, MAX_FAILURES, Machine, OPEN, Transition, Window};
pub use self::machine::{Outcome, Ticket};

// The policy's bounds fit the state word and the window: a consecutive threshold up to the longest
// window in the failure count's 14 bits, probes and successes in 8 bits each, and the longest
// window within what `Shared::window` keeps.
const _: () = {
    assert!(policy::bounds::MAX_WINDOW as u64 <= MAX_FAILURES);
    assert!(policy::bounds::MAX_WINDOW <= 65_536);
    assert!(policy::bounds::MAX_HALF_OPEN_PROBES <= 255);
    assert!(policy::bounds::MAX_SUCCESS_THRESHOLD <= 255);
};

mod machine;

/// The atomics the state machine is built on; the loom models swap in loom's.
mod sync {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}

/// What every breaker of one name shares: the name, the settings and the machine's limits. The
/// per-key breakers of a name hold one `Arc` of it rather than a copy each.
pub(crate) struct Shared {
    name: Arc<str>,
    /// The settings, replaced by [`Shared::reconfigure`]; read off the hot path only.
    config: std::sync::Mutex<BreakerConfig>,
    limits: Limits,
    /// A per-key base whose keys are secrets: every output shows a key's redacted form. Set once
    /// and never cleared, so that no later configuration can make a secret show again.
    sensitive: AtomicBool,
    /// The name's shared side ([`crate::store`]), if a backend serves it: asked on slow paths
    /// only.
    store: StoreCell<dyn BreakerStore>,
    /// The per-key map of a per-key base, told when one of its breakers opens or stops being
    /// open, so that it files the key with the open ones or the others (see
    /// [`KeyedBreakers`](crate::registry::KeyedBreakers)). Weak: the map owns the breakers.
    keyed: OnceLock<Weak<dyn Refile>>,
}

/// What a per-key map does when one of its breakers enters or leaves the open state.
pub(crate) trait Refile: Send + Sync {
    /// Files `breaker` by its state now, if it is still in the map.
    fn refile(&self, breaker: &Breaker);
}

/// The machine's limits for `config`.
fn limits_of(config: &BreakerConfig) -> (u64, u64, u64, u64) {
    let threshold = match config.trip {
        TripMode::Consecutive { threshold } => u64::from(threshold).clamp(1, MAX_FAILURES),
        _ => u64::MAX,
    };
    (
        threshold,
        clock::nanos(config.cooldown),
        u64::from(config.half_open_probes.clamp(1, 255)),
        u64::from(config.success_threshold.clamp(1, 255)),
    )
}

/// A ratio window for `trip`, or none.
fn window_of(trip: TripMode) -> Option<Window> {
    match trip {
        TripMode::Ratio { window, ratio } => Some(Window::new(window.clamp(1, 65_536), ratio)),
        _ => None,
    }
}

impl Shared {
    pub(crate) fn new(name: Arc<str>, config: BreakerConfig) -> Arc<Shared> {
        let (threshold, cooldown, probes, successes) = limits_of(&config);
        Arc::new(Shared {
            name,
            config: std::sync::Mutex::new(config),
            limits: Limits::new(threshold, cooldown, probes, successes),
            sensitive: AtomicBool::new(false),
            store: StoreCell::new(),
            keyed: OnceLock::new(),
        })
    }

    /// Tells `map` of every opening and closing of this base's per-key breakers from now on.
    pub(crate) fn set_keyed(&self, map: Weak<dyn Refile>) {
        let _ = self.keyed.set(map);
    }

    /// Whether the keys of this base are shown redacted.
    pub(crate) fn sensitive(&self) -> bool {
        self.sensitive.load(Ordering::Relaxed)
    }

    /// Shows the keys of this base redacted from now on, for good.
    pub(crate) fn mark_sensitive(&self) {
        self.sensitive.store(true, Ordering::Relaxed);
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn config(&self) -> BreakerConfig {
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn window(&self) -> Option<Window> {
        window_of(self.config().trip)
    }

    /// Serves every breaker of this name from `store` (or from local state alone, `None`).
    pub(crate) fn set_store(&self, store: Option<Arc<dyn BreakerStore>>) {
        self.store.set(store);
    }

    /// Replaces the settings in place; returns the trip mode they replaced, for the machines to
    /// follow with [`Breaker::follow_trip`].
    pub(crate) fn reconfigure(&self, config: BreakerConfig) -> TripMode {
        let old = std::mem::replace(
            &mut *self
                .config
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            config,
        );
        let (threshold, cooldown, probes, successes) = limits_of(&config);
        self.limits.set(threshold, cooldown, probes, successes);
        old.trip
    }
}

impl HasLimits for Arc<Shared> {
    fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The bits of `Breaker::meta` that count openings; bit 47 is [`REDACTED`], bit 48 [`HASHED`].
const OPENED_MASK: u64 = (1 << 47) - 1;
/// The key text ends with the key's redacted form (set once, when the breaker is made).
const REDACTED: u64 = 1 << 47;
/// The key text is the stored form of a key too long to keep (see
/// [`KeyedBreakers`](crate::registry::KeyedBreakers)), not a key itself.
const HASHED: u64 = 1 << 48;

/// A circuit breaker. Share it by reference or `Arc`; every method takes `&self`.
///
/// A per-key breaker (see [`KeyedBreakers`](crate::registry::KeyedBreakers)) is small: it shares
/// its name and settings with the other keys of its name and holds only its key; its full name
/// (`name/key`) is made when asked for. When its base's keys are sensitive, every output shows
/// the key's redacted form instead (see [`Breaker::key`]).
pub struct Breaker {
    machine: Machine<Arc<Shared>>,
    /// The key of a per-key breaker (its stored form when [`HASHED`]), followed, when `meta` has
    /// [`REDACTED`], by its redacted form ([`crate::redact::REDACTED_KEY_LEN`] bytes): one
    /// allocation, and the 72 bytes of a per-key breaker kept. The key finds the breaker in its
    /// map and draws on its rate limit.
    key: Option<Box<str>>,
    entered_at: AtomicU64,
    /// Times opened (low 47 bits), [`REDACTED`] (bit 47) and [`HASHED`] (bit 48).
    meta: AtomicU64,
}

fn state_of(s: u64) -> BreakerState {
    match s {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    }
}

impl Breaker {
    /// A closed breaker. The config should be valid (see [`BreakerConfig::validate`]); values out
    /// of range are clamped.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Breaker {
        Breaker::with_shared(
            Shared::new(name.into(), config),
            None,
            0,
            clock::now_nanos(),
        )
    }

    /// A closed per-key breaker of `shared`'s name for `key`. `stored` is the stored form of a key
    /// too long to keep, which the breaker keeps instead (with the redacted form of `key`, so that
    /// a later mark as sensitive can still show it). When the base's keys are sensitive, the
    /// key's redacted form is computed here, once.
    pub(crate) fn keyed(
        shared: &Arc<Shared>,
        key: &str,
        stored: Option<&str>,
        now: u64,
    ) -> Breaker {
        let (text, hashed) = match stored {
            Some(s) => (s, HASHED),
            None => (key, 0),
        };
        if hashed == 0 && !shared.sensitive() {
            return Breaker::with_shared(shared.clone(), Some(key.into()), 0, now);
        }
        let mut buf = String::with_capacity(text.len() + crate::redact::REDACTED_KEY_LEN);
        buf.push_str(text);
        crate::redact::push_redacted_key(&mut buf, &shared.name, key);
        Breaker::with_shared(shared.clone(), Some(buf.into()), hashed | REDACTED, now)
    }

    fn with_shared(shared: Arc<Shared>, key: Option<Box<str>>, meta: u64, now: u64) -> Breaker {
        let window = shared.window();
        Breaker {
            machine: Machine::new(shared, window),
            key,
            entered_at: AtomicU64::new(now),
            meta: AtomicU64::new(meta),
        }
    }

    /// The key of a per-key breaker and its redacted form, if the breaker was made with one.
    #[inline]
    fn key_parts(&self) -> Option<(&str, Option<&str>)> {
        let text = self.key.as_deref()?;
        if self.meta.load(Ordering::Relaxed) & REDACTED == 0 {
            return Some((text, None));
        }
        let at = text.len().saturating_sub(crate::redact::REDACTED_KEY_LEN);
        // The redacted form is ASCII: `at` is a character boundary.
        Some(match (text.get(..at), text.get(at..)) {
            (Some(key), Some(shown)) => (key, Some(shown)),
            _ => (text, None),
        })
    }

    /// The key as kept (a long key's stored form), to find the breaker in its map and to draw on
    /// its rate limit: never to show.
    #[inline]
    pub(crate) fn raw_key(&self) -> Option<&str> {
        self.key_parts().map(|(key, _)| key)
    }

    /// Bytes of key text held: the key (or its stored form) and its redacted form, if kept.
    pub(crate) fn key_text_len(&self) -> usize {
        self.key.as_deref().map_or(0, str::len)
    }

    /// Whether [`Breaker::raw_key`] is the stored form of a long key rather than the key.
    #[inline]
    pub(crate) fn key_is_hashed(&self) -> bool {
        self.meta.load(Ordering::Relaxed) & HASHED != 0
    }

    fn shared(&self) -> &Shared {
        self.machine.limits_source()
    }

    /// The breaker's name: `name/key` for a per-key breaker (made on each call: keep it off hot
    /// paths), with the key as [`Breaker::key`] shows it, else the name it was made with.
    pub fn name(&self) -> Arc<str> {
        match &self.key {
            None => self.shared().name.clone(),
            Some(_) => self.display_name().to_string().into(),
        }
    }

    /// The name without the key: the name the breaker (or its per-key family) was configured by.
    pub fn base_name(&self) -> &str {
        &self.shared().name
    }

    /// The key of a per-key breaker, as every output shows it (logs, events, health, metrics,
    /// [`Rejected::CircuitOpen`](crate::Rejected::CircuitOpen)).
    ///
    /// For a base whose keys are sensitive (`sensitive_key` on the site, `sensitive_keys = true`
    /// in the configuration file) it is the redacted form, `key#` and 16 hex digits (see
    /// [`redacted_key`](crate::redact::redacted_key)), never the key itself. The form is computed
    /// once, when the key's breaker is made; only a key made before its base was marked computes
    /// it each time it is shown (hence the `Cow`).
    ///
    /// A key longer than [`KeyedBreakers::MAX_KEY_LEN`](crate::registry::KeyedBreakers::MAX_KEY_LEN)
    /// bytes is shown by its stored form: its first 64 bytes (fewer, to end on a character),
    /// `…sha256:` and the 64 hex digits of the SHA-256 of the whole key. Its redacted form, when
    /// sensitive, is that of the whole key, as for any key.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let registry = Registry::new();
    /// registry.apply(&RegistryConfig::from_toml_str("[breakers.okta]\nsensitive_keys = true").unwrap());
    /// let b = registry.keyed_breakers("okta").get("secret");
    /// assert_eq!(b.key().as_deref(), Some("key#662a463828fd728b"));
    /// assert_eq!(&*b.name(), "okta/key#662a463828fd728b");
    /// assert_eq!(registry.keyed_breakers("plain").get("acme").key().as_deref(), Some("acme"));
    /// ```
    pub fn key(&self) -> Option<Cow<'_, str>> {
        let (key, shown) = self.key_parts()?;
        if !self.shared().sensitive() {
            return Some(Cow::Borrowed(key));
        }
        Some(match shown {
            Some(shown) => Cow::Borrowed(shown),
            None => Cow::Owned(crate::redact::redacted_key(&self.shared().name, key)),
        })
    }

    /// The name as [`Breaker::name`] gives it, written without allocating (but for a key made
    /// before its base was marked sensitive; see [`Breaker::key`]).
    pub fn display_name(&self) -> impl fmt::Display + '_ {
        struct Name<'a>(&'a str, Option<Cow<'a, str>>);
        impl fmt::Display for Name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &self.1 {
                    None => f.write_str(self.0),
                    Some(k) => write!(f, "{}/{k}", self.0),
                }
            }
        }
        Name(&self.shared().name, self.key())
    }

    /// The breaker's settings.
    pub fn config(&self) -> BreakerConfig {
        self.shared().config()
    }

    /// Replaces the settings of a live breaker, keeping its state: an open breaker stays open
    /// (its cooldown now the new one), counted failures stay counted. A new trip mode or window
    /// size starts an empty window. Calls in flight finish under the new settings.
    ///
    /// ```
    /// use resilience_runtime::breaker::{Breaker, BreakerConfig, BreakerState, Outcome};
    ///
    /// let b = Breaker::new("graph", BreakerConfig::new().with_failure_threshold(5));
    /// for _ in 0..2 {
    ///     b.acquire().map(|t| b.record(t, Outcome::Failure)).unwrap();
    /// }
    /// b.reconfigure(BreakerConfig::new().with_failure_threshold(3)).unwrap();
    /// b.acquire().map(|t| b.record(t, Outcome::Failure)).unwrap();
    /// assert_eq!(b.state(), BreakerState::Open, "the third failure reaches the new threshold");
    /// ```
    ///
    /// # Errors
    ///
    /// The settings are invalid (see [`BreakerConfig::validate`]); nothing changes then.
    pub fn reconfigure(&self, config: BreakerConfig) -> Result<(), InvalidConfig> {
        config.validate()?;
        let old = self.shared().reconfigure(config);
        self.follow_trip(old, config.trip);
        Ok(())
    }

    /// Makes this breaker's window follow a change of its name's trip mode from `old` to `new`
    /// (per-key breakers share their settings and each follows).
    pub(crate) fn follow_trip(&self, old: TripMode, new: TripMode) {
        match (old, new) {
            (TripMode::Ratio { window: a, .. }, TripMode::Ratio { window: b, ratio }) if a == b => {
                self.machine.set_ratio(b, ratio);
            }
            (a, b) if a == b => {}
            (_, b) => self.machine.set_window(window_of(b)),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        state_of(self.machine.state())
    }

    /// The generation: bumped by every transition.
    pub fn generation(&self) -> u32 {
        self.machine.generation()
    }

    /// Failures counted toward opening: consecutive failures, or failures in the window.
    pub fn failures(&self) -> u64 {
        self.machine.failures()
    }

    /// Half-open probes in flight: every probe admitted and not yet recorded or released,
    /// including those of an earlier half-open period, whatever the state now.
    pub fn probes_in_flight(&self) -> u64 {
        self.machine.probes()
    }

    /// How many times the breaker has opened.
    pub fn opened_total(&self) -> u64 {
        self.meta.load(Ordering::Relaxed) & OPENED_MASK
    }

    /// Time spent in the current state.
    pub fn time_in_state(&self) -> Duration {
        Duration::from_nanos(
            clock::now_nanos().saturating_sub(self.entered_at.load(Ordering::Relaxed)),
        )
    }

    /// Asks to call through. A closed breaker admits with one atomic load; an open one whose
    /// cooldown has elapsed turns half-open and admits a probe, if fewer than
    /// `half_open_probes` are in flight.
    ///
    /// # Errors
    ///
    /// The time until the breaker will let a probe through, when it admits nothing now.
    #[inline]
    pub fn acquire(&self) -> Result<Ticket, Duration> {
        if let Some(t) = self.machine.closed_ticket() {
            return Ok(t);
        }
        self.acquire_slow()
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self) -> Result<Ticket, Duration> {
        // A shared store decides whether this replica may probe; a breaker still cooling down
        // refuses without asking it.
        if let Some(store) = self.shared().store.get()
            && self.state() != BreakerState::Closed
            && self.time_in_state() >= self.config().cooldown
        {
            store::guarded("may_probe", Ok(()), || store.may_probe(self))?;
        }
        let (ticket, transition) = self.machine.acquire(clock::now_nanos)?;
        if let Some(tr) = transition {
            self.transitioned(tr);
        }
        Ok(ticket)
    }

    /// How long this open breaker still cools down, without asking it for anything: `None` when
    /// it is not open or its cooldown is over. The engine ends a call at once, rather than wait
    /// out a backoff shorter than this to be refused.
    pub(crate) fn cooldown_left(&self) -> Option<Duration> {
        self.machine.cooldown_left(clock::now_nanos)
    }

    /// Serves this breaker's name from `store` as well as from its local state (see
    /// [`crate::store`]). Per-key breakers share their base's store: setting it on one sets it
    /// for every key of the name.
    pub fn set_store(&self, store: Arc<dyn BreakerStore>) {
        self.shared().set_store(Some(store));
    }

    /// Serves this breaker's name from its local state alone again.
    pub fn clear_store(&self) {
        self.shared().set_store(None);
    }

    /// Opens this breaker because its store says the fleet has (another replica tripped it),
    /// for a full cooldown from now: logged, counted and reported as any opening, and told to
    /// the store with `by_store`. Nothing changes when it is open already.
    pub fn open_by_store(&self) {
        if let Some(tr) = self.machine.force_open(clock::now_nanos()) {
            self.transition_seen(tr, true);
        }
    }

    /// [`Breaker::acquire`] when the breaker is closed: a pure read. `None` when it is not
    /// closed, and then nothing was taken (no probe slot, no transition).
    #[inline(always)]
    pub(crate) fn closed_ticket(&self) -> Option<Ticket> {
        self.machine.closed_ticket()
    }

    /// [`Breaker::acquire`] with a guard that gives a probe slot back if it is dropped unrecorded
    /// (the call was cancelled or panicked).
    ///
    /// # Errors
    ///
    /// The time until the breaker will let a probe through.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        self.acquire().map(|ticket| Permit {
            breaker: self,
            ticket: Some(ticket),
        })
    }

    /// Records the outcome of an admitted call. Results from an older generation are ignored,
    /// but a probe's still gives its slot back.
    #[inline(always)]
    pub fn record(&self, ticket: Ticket, outcome: Outcome) {
        if let Some(tr) = self.machine.record(ticket, outcome, clock::now_nanos) {
            self.transitioned(tr);
        }
    }

    /// Gives an unused ticket back: no health signal.
    pub fn release(&self, ticket: Ticket) {
        self.record(ticket, Outcome::Ignored);
    }

    #[cold]
    fn transitioned(&self, tr: Transition) {
        self.transition_seen(tr, false);
    }

    fn transition_seen(&self, tr: Transition, by_store: bool) {
        if tr.to == OPEN {
            // The count cannot reach the flags' bits: 2^47 openings.
            self.meta.fetch_add(1, Ordering::Relaxed);
        }
        self.entered(tr.at);
        if (tr.from == OPEN) != (tr.to == OPEN) {
            self.refile();
        }
        let (from, to) = (state_of(tr.from), state_of(tr.to));
        self.log_transition(from, to, tr);
        if let Some(store) = self.shared().store.get() {
            store::guarded("transitioned", (), || {
                store.transitioned(self, from, to, by_store);
            });
        }
    }

    /// Tells a per-key breaker's map that it opened or stopped being open.
    fn refile(&self) {
        if self.key.is_none() {
            return;
        }
        if let Some(map) = self.shared().keyed.get().and_then(Weak::upgrade) {
            map.refile(self);
        }
    }

    /// Forces the breaker closed (an operator's reset).
    pub fn reset(&self) {
        self.machine.reset();
        self.entered(clock::now_nanos());
        self.refile();
    }

    fn entered(&self, now: u64) {
        self.entered_at.store(now, Ordering::Relaxed);
    }

    fn log_transition(&self, from: BreakerState, to: BreakerState, tr: Transition) {
        crate::events::breaker_transition(
            &self.name(),
            from,
            to,
            tr.generation,
            std::time::Duration::from_nanos(tr.at),
        );
        if to == BreakerState::Open {
            tracing::warn!(
                breaker = %self.display_name(),
                from = from.as_str(),
                to = to.as_str(),
                cooldown_ms = self.config().cooldown.as_millis() as u64,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                breaker = %self.display_name(),
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker state changed"
            );
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &format_args!("{}", self.display_name()))
            .field("state", &self.state())
            .field("generation", &self.generation())
            .field("failures", &self.failures())
            .field("config", &self.config())
            .finish()
    }
}

/// A guard over a [`Ticket`]: records an outcome, or gives a probe slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    ticket: Option<Ticket>,
}

impl Permit<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.is_some_and(|t| t.is_probe())
    }

    /// Records the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.breaker.record(t, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.breaker.release(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Strategy, prop_assert_eq, prop_oneof, proptest};

    fn consecutive(threshold: u32) -> Breaker {
        Breaker::new(
            "t",
            BreakerConfig::new()
                .with_failure_threshold(threshold)
                .with_cooldown(Duration::from_secs(60)),
        )
    }

    fn fail(b: &Breaker) {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_mode_opens_at_threshold_and_success_resets_the_count() {
        let b = consecutive(3);
        fail(&b);
        fail(&b);
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.failures(), 0);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_total(), 1);
        assert_eq!(b.acquire().unwrap_err(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_outcomes_count_as_neither() {
        let b = consecutive(2);
        fail(&b);
        for _ in 0..10 {
            b.try_acquire().unwrap().record(Outcome::Ignored);
        }
        assert_eq!(b.failures(), 1);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_to_half_open_after_cooldown_then_closed_on_success() {
        let b = consecutive(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(b.acquire().unwrap_err(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // One probe at a time by default.
        assert_eq!(b.acquire().unwrap_err(), Duration::ZERO);
        probe.record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_failure_reopens_with_a_fresh_cooldown() {
        let b = consecutive(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_total(), 2);
        assert_eq!(b.acquire().unwrap_err(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn success_threshold_and_probe_limit() {
        let b = Breaker::new(
            "t",
            BreakerConfig::new()
                .with_failure_threshold(1)
                .with_half_open_probes(2)
                .with_success_threshold(2),
        );
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.acquire().is_err());
        p1.record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p3 = b.try_acquire().unwrap();
        p2.record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        // p3 is from the half-open generation: its failure must not reopen the closed breaker.
        p3.record(Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_gives_its_slot_back() {
        let b = consecutive(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.probes_in_flight(), 1);
        drop(probe);
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_probe_gives_its_slot_back() {
        let b = consecutive(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _probe = b.try_acquire().unwrap();
            panic!("attempt panicked");
        }));
        assert!(r.is_err());
        assert_eq!(b.probes_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_outliving_its_half_open_period_keeps_its_slot() {
        let b = Breaker::new(
            "t",
            BreakerConfig::new()
                .with_failure_threshold(1)
                .with_half_open_probes(2),
        );
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let a = b.acquire().unwrap();
        let p = b.acquire().unwrap();
        assert!(a.is_probe() && p.is_probe());
        // p fails and reopens the breaker while a is still in flight.
        b.record(p, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.probes_in_flight(), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        let c = b.acquire().unwrap();
        assert!(c.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.probes_in_flight(), 2);
        // a still holds the second slot: no third probe in flight.
        assert_eq!(b.acquire().unwrap_err(), Duration::ZERO);
        // a's late success belongs to the last period: it frees the slot and nothing else.
        let generation = b.generation();
        b.record(a, Outcome::Success);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.generation(), generation);
        assert_eq!(b.probes_in_flight(), 1);
        let d = b.acquire().unwrap();
        assert!(d.is_probe());
        assert_eq!(b.probes_in_flight(), 2);
        b.record(c, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        // d outlives its period too: counted until it is given back, then nothing is left.
        assert_eq!(b.probes_in_flight(), 1);
        b.release(d);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.probes_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_whose_stale_probes_fill_the_limit_waits_for_them() {
        let b = consecutive(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let a = b.acquire().unwrap();
        assert!(a.is_probe());
        b.reset();
        assert_eq!(b.probes_in_flight(), 1);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(60)).await;
        // The cooldown is over, but the one probe slot is a's: refused as a full half-open is.
        assert_eq!(b.acquire().unwrap_err(), Duration::ZERO);
        assert_eq!(b.state(), BreakerState::Open);
        // a's failure is stale: it gives the slot back and does not reopen anything.
        b.record(a, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_total(), 2);
        assert_eq!(b.probes_in_flight(), 0);
        let p = b.try_acquire().unwrap();
        assert!(p.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p.record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_breaker_counts_failures_as_usual_beside_a_stale_probe() {
        let b = consecutive(2);
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(60)).await;
        let a = b.acquire().unwrap();
        assert!(a.is_probe());
        b.reset();
        assert_eq!(b.probes_in_flight(), 1);
        let generation = b.generation();
        // Admission in the closed state is unchanged.
        assert!(b.closed_ticket().is_some());
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.failures(), 0);
        fail(&b);
        assert_eq!(b.failures(), 1);
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.failures(), 0);
        fail(&b);
        // The stale probe's failure is not counted.
        b.record(a, Outcome::Failure);
        assert_eq!(b.failures(), 1);
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(
            (b.state(), b.generation()),
            (BreakerState::Closed, generation)
        );
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_result_from_an_old_generation_is_ignored() {
        let b = consecutive(2);
        let slow = b.acquire().unwrap();
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(60)).await;
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        let gen_closed = b.generation();
        // The slow call from the first closed epoch fails now: it must not count.
        b.record(slow, Outcome::Failure);
        assert_eq!(b.failures(), 0);
        assert_eq!(b.generation(), gen_closed);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_mode_opens_only_once_the_window_is_full() {
        let b = Breaker::new(
            "r",
            BreakerConfig::new().with_trip(TripMode::Ratio {
                window: 4,
                ratio: 0.5,
            }),
        );
        fail(&b);
        fail(&b);
        fail(&b);
        // 3 of 3 failed, but the window of 4 is not full yet.
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 3);
        // The success fills the window: [F F F S], 3 of 4 failed >= 50%.
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_that_fills_a_window_at_the_ratio_opens_it() {
        let sequences = [
            [
                Outcome::Success,
                Outcome::Failure,
                Outcome::Failure,
                Outcome::Success,
            ],
            [
                Outcome::Failure,
                Outcome::Failure,
                Outcome::Failure,
                Outcome::Success,
            ],
        ];
        for outcomes in sequences {
            let b = Breaker::new(
                "r",
                BreakerConfig::new().with_trip(TripMode::Ratio {
                    window: 4,
                    ratio: 0.5,
                }),
            );
            let (last, first) = outcomes.split_last().unwrap();
            for &o in first {
                b.try_acquire().unwrap().record(o);
                assert_eq!(b.state(), BreakerState::Closed, "{outcomes:?}");
            }
            b.try_acquire().unwrap().record(*last);
            assert_eq!(b.state(), BreakerState::Open, "{outcomes:?}");
            assert_eq!(b.opened_total(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_below_the_ratio_stays_closed_on_success() {
        let b = Breaker::new(
            "r",
            BreakerConfig::new().with_trip(TripMode::Ratio {
                window: 4,
                ratio: 0.5,
            }),
        );
        for o in [
            Outcome::Failure,
            Outcome::Success,
            Outcome::Success,
            Outcome::Success,
            Outcome::Success,
        ] {
            b.try_acquire().unwrap().record(o);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_mode_stays_closed_below_the_ratio_and_resets_on_close() {
        let b = Breaker::new(
            "r",
            BreakerConfig::new().with_trip(TripMode::Ratio {
                window: 10,
                ratio: 0.5,
            }),
        );
        for i in 0..100 {
            let outcome = if i % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            b.try_acquire().unwrap().record(outcome);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let mut failures = 0;
        while b.state() == BreakerState::Closed {
            fail(&b);
            failures += 1;
        }
        assert!(
            failures <= 5,
            "opened only after {failures} failures in a row"
        );
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(60)).await;
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn the_ratio_threshold_is_exact_for_decimal_ratios() {
        let cases = [
            // window * ratio rounds up past the integer here: 50 * 0.14 = 7.000000000000001.
            (50, 0.14, 7),
            (100, 0.07, 7),
            (25, 0.28, 7),
            (200, 0.55, 110),
            (10, 0.3, 3),
            (3, 1.0 / 3.0, 1),
            (3, 2.0 / 3.0, 2),
            (7, 0.29, 3),
            (4, 0.5, 2),
            (1, 1.0, 1),
            (1, 0.01, 1),
            (1000, 0.001, 1),
            (65_536, 1.0, 65_536),
        ];
        for (window, ratio, expected) in cases {
            assert_eq!(
                machine::ratio_threshold(window, ratio),
                expected,
                "window {window}, ratio {ratio}"
            );
        }
    }

    /// The threshold's definition, by brute force: the fewest failures whose share of the window
    /// reaches the ratio (the whole window when none does).
    fn smallest_reaching(window: u64, ratio: f64) -> u64 {
        (1..=window)
            .find(|&n| n as f64 / window as f64 >= ratio)
            .unwrap_or(window)
    }

    proptest! {
        #[test]
        fn the_ratio_threshold_is_the_fewest_failures_that_reach_the_ratio(
            window in prop_oneof![1u64..=200, 1u64..=65_536],
            ratio in prop_oneof![
                (1u32..=100).prop_map(|k| f64::from(k) / 100.0),
                (1u32..=1000).prop_map(|k| f64::from(k) / 1000.0),
                (1u32..=100, 1u32..=100)
                    .prop_map(|(a, b)| f64::from(a.min(b)) / f64::from(a.max(b))),
                f64::MIN_POSITIVE..=1.0,
            ],
        ) {
            prop_assert_eq!(
                machine::ratio_threshold(window, ratio),
                smallest_reaching(window, ratio)
            );
        }

        #[test]
        fn a_ratio_of_n_in_the_window_needs_exactly_n_failures(
            window in 1u64..=65_536,
            seed in 0u64..=u64::MAX,
        ) {
            let n = 1 + seed % window;
            let ratio = n as f64 / window as f64;
            prop_assert_eq!(machine::ratio_threshold(window, ratio), n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ratio_breaker_opens_at_the_exact_share_of_failures() {
        // 7 of 50 is 14%: the seventh failure in a full window opens it, not an eighth.
        let b = Breaker::new(
            "r",
            BreakerConfig::new().with_trip(TripMode::Ratio {
                window: 50,
                ratio: 0.14,
            }),
        );
        for _ in 0..44 {
            b.try_acquire().unwrap().record(Outcome::Success);
        }
        for _ in 0..6 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 6);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (
                BreakerConfig::new().with_failure_threshold(0),
                "failure_threshold",
            ),
            (
                BreakerConfig::new().with_trip(TripMode::Ratio {
                    window: 0,
                    ratio: 0.5,
                }),
                "window",
            ),
            (
                BreakerConfig::new().with_trip(TripMode::Ratio {
                    window: 10,
                    ratio: 1.5,
                }),
                "failure_ratio",
            ),
            (
                BreakerConfig::new().with_half_open_probes(0),
                "half_open_probes",
            ),
            (
                BreakerConfig::new().with_success_threshold(300),
                "success_threshold",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(c.validate().unwrap_err().field(), field);
        }
    }

    #[test]
    fn many_threads_hammering_a_breaker_leave_it_consistent() {
        let b = Arc::new(Breaker::new(
            "c",
            BreakerConfig::new()
                .with_failure_threshold(50)
                .with_cooldown(Duration::ZERO)
                .with_half_open_probes(3),
        ));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut rng = crate::backoff::Rng::seeded(t);
                    for _ in 0..20_000 {
                        if let Ok(p) = b.try_acquire() {
                            match rng.next_u64() % 3 {
                                0 => p.record(Outcome::Failure),
                                1 => p.record(Outcome::Success),
                                _ => drop(p),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.probes_in_flight(), 0);
    }
}
