//! Rate limits, retry budgets and breaker state shared by every replica of a connector, on Redis
//! (feature `redis`).
//!
//! A [`RedisBackend`] serves the named instances a configuration puts on it (`backend = "fleet"`
//! in their table) through the [store seam](crate::store):
//!
//! | instance | shared how | on the call path |
//! |---|---|---|
//! | rate limit ([`RedisRateLimit`]) | GCRA in a Lua script on the server's clock, per limit or per key | one round trip per permit ([`Permit::Ask`](crate::store::Permit::Ask)), or per `lease` permits |
//! | breaker | transitions published; the fleet's open breakers read every `sync_interval`; probes leased | none: the closed check stays local |
//! | retry budget | spends and refunds flushed, the fleet's balance read, every `sync_interval` | none: answered from the last balance read |
//!
//! Redis trouble never takes the connector down. A round trip that fails or takes longer than
//! `round_trip_limit` puts the backend in [fallback](crate::registry::BackendState::Fallback):
//! every instance on it answers from local state (a limiter from an in-process GCRA of the same
//! rate), health and the backend's counters say so, and the backend rejoins when a later sync
//! reaches the server. No call waits for Redis longer than `round_trip_limit`.
//!
//! The consistency each instance gives, the key layout and the fallback are described in
//! `docs/fleet.md`.
//!
//! ```no_run
//! use resilience_runtime::Registry;
//! use resilience_runtime::registry::RegistryConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = RegistryConfig::from_toml_str(r#"
//!     [backends.fleet]
//!     kind = "redis"
//!     url = "redis://:s3cret@127.0.0.1:6379"
//!     key_prefix = "graph-connector:"
//!     round_trip_limit = "5ms"
//!     sync_interval = "500ms"
//!
//!     [breakers.graph]
//!     backend = "fleet"
//!     quorum = 2
//!
//!     [rate_limits.graph]
//!     rate = 100
//!     per = "1s"
//!     backend = "fleet"
//!     lease = 5
//!
//!     [budgets.graph]
//!     backend = "fleet"
//! "#).unwrap();
//! // Inside the runtime: the backend connects on its own task.
//! Registry::global().apply(&config);
//! let fleet = &Registry::global().health().backends[0];
//! assert_eq!(fleet.url, "redis://:[redacted]@127.0.0.1:6379");
//! # }
//! ```
//!
//! TLS: `rediss://` URLs need one of redis-rs's TLS features (`tokio-rustls-comp` or
//! `tokio-native-tls-comp`), which this crate does not turn on; enable one in your own
//! dependency on `redis` (the same version) and the backend connects with it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};

use crate::InvalidConfig;
use crate::breaker::Breaker;
use crate::budget::RetryBudget;
use crate::registry::{BackendHealth, BackendState, KeyedBreakers};

mod breakers;
mod budgets;
mod limiter;
mod scripts;
mod task;

pub use self::limiter::RedisRateLimit;

/// What a publication queue holds at most; a transition published while it is full is dropped
/// (and counted as an error), never waited for.
const QUEUE: usize = 1024;

/// A Redis backend's settings.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::redis::RedisConfig;
///
/// let c = RedisConfig::new("redis://app:hunter2@10.0.0.5:6379/2")?
///     .with_key_prefix("okta-connector:")?
///     .with_round_trip_limit(Duration::from_millis(10))
///     .with_sync_interval(Duration::from_millis(250));
/// assert_eq!(c.url(), "redis://app:[redacted]@10.0.0.5:6379/2");
/// assert!(!format!("{c:?}").contains("hunter2"));
/// assert_eq!(RedisConfig::new("http://x").unwrap_err().field(), "url");
/// # Ok::<(), resilience_runtime::InvalidConfig>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// The URL as written: shown nowhere.
    written: String,
    /// The URL with its password redacted: what every output shows.
    shown: String,
    client: redis::Client,
    key_prefix: String,
    round_trip_limit: Duration,
    sync_interval: Duration,
}

impl RedisConfig {
    /// The server at `url` (`redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS,
    /// `redis+unix:///path`), keys under `resilience:`, a round trip limit of 5 ms and a sync
    /// every 500 ms.
    ///
    /// # Errors
    ///
    /// `url` is not a Redis URL (the error shows it with its password redacted).
    pub fn new(url: impl Into<String>) -> Result<RedisConfig, InvalidConfig> {
        let url = url.into();
        let shown = redact_url(&url);
        let client = redis::Client::open(url.as_str()).map_err(|e| {
            let reason = scrub(&e.to_string(), &url, &shown);
            InvalidConfig::new(
                "url",
                format!(
                    "`{shown}` is not a Redis URL ({reason}); write e.g. \"redis://127.0.0.1:6379\""
                ),
            )
        })?;
        Ok(RedisConfig {
            written: url,
            shown,
            client,
            key_prefix: "resilience:".to_owned(),
            round_trip_limit: Duration::from_millis(5),
            sync_interval: Duration::from_millis(500),
        })
    }

    /// Puts every key under `prefix`.
    ///
    /// # Errors
    ///
    /// The prefix holds `{` or `}`, which would change the keys' hash tags (the field is
    /// `key_prefix`).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Result<Self, InvalidConfig> {
        let prefix = prefix.into();
        if prefix.contains(['{', '}']) {
            return Err(InvalidConfig::new(
                "key_prefix",
                format!(
                    "`{prefix}` holds `{{` or `}}`, which Redis Cluster reads as a hash tag; use letters, digits, `:`, `-` or `_`"
                ),
            ));
        }
        self.key_prefix = prefix;
        Ok(self)
    }

    /// The longest a call waits for a round trip before its replica answers from local state.
    pub fn with_round_trip_limit(mut self, limit: Duration) -> Self {
        self.round_trip_limit = limit.max(Duration::from_micros(1));
        self
    }

    /// How often breaker state and budgets are synced, and an unreachable server tried again.
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The URL with its password redacted.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The round trip limit.
    pub fn round_trip_limit(&self) -> Duration {
        self.round_trip_limit
    }

    /// The sync interval.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }
}

impl PartialEq for RedisConfig {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.written,
            &self.key_prefix,
            self.round_trip_limit,
            self.sync_interval,
        ) == (
            &other.written,
            &other.key_prefix,
            other.round_trip_limit,
            other.sync_interval,
        )
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.shown)
            .field("key_prefix", &self.key_prefix)
            .field("round_trip_limit", &self.round_trip_limit)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

/// `url` with the password of its user part, and any `password`/`pass` query value, replaced by
/// `[redacted]`.
///
/// ```
/// use resilience_runtime::redis::redact_url;
///
/// assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:[redacted]@h:6379");
/// assert_eq!(redact_url("rediss://u:pw@h/0"), "rediss://u:[redacted]@h/0");
/// assert_eq!(redact_url("redis://token@h"), "redis://[redacted]@h");
/// assert_eq!(redact_url("redis+unix:///run/r.sock?pass=pw&db=1"), "redis+unix:///run/r.sock?pass=[redacted]&db=1");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    const R: &str = crate::redact::REDACTED;
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:{R}@{host}"),
            None => format!("{R}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = String::with_capacity(url.len() + R.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&authority);
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
                {
                    format!("{k}={R}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `text` (an error's message) with the URL as written replaced by its redacted form, and the
/// password itself wherever it still appears.
fn scrub(text: &str, url: &str, shown: &str) -> String {
    let mut out = text.replace(url, shown);
    if let Some(password) = password_of(url)
        && !password.is_empty()
    {
        out = out.replace(password, crate::redact::REDACTED);
    }
    out
}

/// The password of `url`'s user part, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let (user, _) = authority.rsplit_once('@')?;
    Some(user.split_once(':').map_or(user, |(_, p)| p))
}

const CONNECTING: u8 = 0;
const SHARED: u8 = 1;
const FALLBACK: u8 = 2;

/// What the backend's handles and its task share.
pub(crate) struct Inner {
    config: RedisConfig,
    /// This replica's id in Redis (probe slots, trips): random per backend.
    replica: String,
    /// The connection, made by the task on the runtime it runs on.
    conn: arc_swap::ArcSwapOption<ConnectionManager>,
    state: AtomicU8,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    /// Whether the task runs, and the runtime it runs on (for blocking calls outside one).
    running: AtomicBool,
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    /// Publications and probe requests for the task; its receiver while no task runs.
    ops: mpsc::Sender<task::Op>,
    rx: Mutex<Option<mpsc::Receiver<task::Op>>>,
    /// Completed syncs, for [`RedisBackend::wait_for_syncs`].
    syncs: watch::Sender<u64>,
    breakers: breakers::Registered,
    budgets: budgets::Registered,
}

impl Inner {
    fn key(&self, tag: &str, rest: &str) -> String {
        format!("{}{{{tag}}}{rest}", self.config.key_prefix)
    }

    /// Whether instances share state now (else they answer locally).
    fn sharing(&self) -> bool {
        self.state.load(Ordering::Acquire) == SHARED
    }

    /// The connection, when sharing.
    fn shared_conn(&self) -> Option<ConnectionManager> {
        if !self.sharing() {
            return None;
        }
        self.conn.load().as_deref().cloned()
    }

    /// A round trip failed or took too long: local state decides from now on.
    fn failed(&self, what: &'static str, error: &dyn fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.state.swap(FALLBACK, Ordering::AcqRel) == SHARED {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            let error = scrub(&error.to_string(), &self.config.written, &self.config.shown);
            tracing::warn!(
                backend = %self.config.shown,
                op = what,
                error = %error,
                "redis backend unreachable or slow; instances on it answer from local state"
            );
        }
    }

    /// A round trip succeeded: the fleet's state is shared again.
    fn succeeded(&self) {
        if self.state.swap(SHARED, Ordering::AcqRel) != SHARED {
            tracing::info!(
                backend = %self.config.shown,
                "redis backend reached; instances on it share state"
            );
        }
    }

    /// Queues `op` for the task, never waiting: a full queue drops it (counted as an error).
    fn publish(&self, op: task::Op) {
        if self.ops.try_send(op).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The task's connection settings: its own reconnection paced by the sync interval, whose
    /// ticks also retry a server that is gone.
    fn manager_config(&self) -> ConnectionManagerConfig {
        let c = &self.config;
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(c.sync_interval.max(c.round_trip_limit)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(1))
            .set_max_delay(c.sync_interval)
    }
}

/// The shared side of named instances, on one Redis server (or cluster node set through one
/// URL), for every replica that names it.
///
/// Made from a [`RedisConfig`] (no I/O), usually by [`Registry::apply`](crate::Registry::apply)
/// from a `[backends.<name>]` table. It connects on a task of its own, started on the first use
/// inside a tokio runtime (an `apply` inside one, or any call on an instance it serves), and
/// keeps the connection, the breakers' and budgets' sync, and the publications there; dropping
/// every handle stops it. Cloning gives a handle to the same backend.
///
/// ```no_run
/// use std::time::Duration;
/// use std::sync::Arc;
/// use resilience_runtime::Registry;
/// use resilience_runtime::redis::{RedisBackend, RedisConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::new(RedisConfig::new("redis://127.0.0.1:6379")?);
/// let registry = Registry::new();
/// registry.set_rate_limit("graph", Arc::new(backend.rate_limit("graph", 100, Duration::from_secs(1))));
/// backend.attach_breaker(&registry.breaker("graph"), 1);
/// backend.attach_budget("graph", &registry.budget("graph"));
/// registry.add_backend("fleet", Arc::new(backend.clone()));
/// backend.start();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.config.shown)
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("replica", &self.inner.replica)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `config`; nothing is connected until [`RedisBackend::start`] (or a first
    /// use) inside a tokio runtime.
    pub fn new(config: RedisConfig) -> RedisBackend {
        let (ops, rx) = mpsc::channel(QUEUE);
        RedisBackend {
            inner: Arc::new(Inner {
                config,
                replica: replica_id(),
                conn: arc_swap::ArcSwapOption::empty(),
                state: AtomicU8::new(CONNECTING),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                running: AtomicBool::new(false),
                runtime: Mutex::new(None),
                ops,
                rx: Mutex::new(Some(rx)),
                syncs: watch::Sender::new(0),
                breakers: breakers::Registered::default(),
                budgets: budgets::Registered::default(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// This replica's id in Redis (the holder of a probe slot, a trip toward a quorum).
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// Starts the backend's task on the current tokio runtime, if it does not run yet; nothing
    /// outside a runtime. Every use of an instance it serves starts it too.
    pub fn start(&self) {
        task::start(&self.inner);
    }

    /// Sharing, connecting, or answering from local state.
    pub fn state(&self) -> BackendState {
        match self.inner.state.load(Ordering::Acquire) {
            SHARED => BackendState::Shared,
            CONNECTING => BackendState::Connecting,
            _ => BackendState::Fallback,
        }
    }

    /// Round trips that failed or took longer than the limit, and publications dropped.
    pub fn errors_total(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Times the backend went from sharing to fallback.
    pub fn fallbacks_total(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// Waits until `n` more syncs have completed (each one a pass over the breakers and budgets
    /// on the server); never returns while the server cannot be reached. Bound it with a timeout.
    pub async fn wait_for_syncs(&self, n: u64) {
        let mut rx = self.inner.syncs.subscribe();
        let target = rx.borrow_and_update().saturating_add(n);
        let _ = rx.wait_for(|done| *done >= target).await;
    }

    /// A rate limit of `rate` permits per `per` (bursts of up to `rate`) shared by every replica
    /// that makes one of the same `name` on this server.
    pub fn rate_limit(&self, name: &str, rate: u32, per: Duration) -> RedisRateLimit {
        RedisRateLimit::new(self.inner.clone(), name, rate, per)
    }

    /// Shares the state of the named breaker `breaker` with the fleet: it opens for every
    /// replica once `quorum` replicas tripped it within one cooldown, and probes are leased.
    pub fn attach_breaker(&self, breaker: &Arc<Breaker>, quorum: u32) {
        let store = self
            .inner
            .breakers
            .attach_named(&self.inner, breaker, quorum);
        breaker.set_store(store);
        self.start();
    }

    /// Shares the state of every per-key breaker of `keyed` with the fleet, as
    /// [`RedisBackend::attach_breaker`] does for one breaker.
    pub fn attach_keyed(&self, keyed: &Arc<KeyedBreakers>, quorum: u32) {
        let store = self.inner.breakers.attach_keyed(&self.inner, keyed, quorum);
        keyed.set_store(store);
        self.start();
    }

    /// Bounds the retries of the budget `name` (`budget`, this replica's) by one budget for the
    /// whole fleet.
    pub fn attach_budget(&self, name: &str, budget: &Arc<RetryBudget>) {
        let store = self.inner.budgets.attach(&self.inner, name, budget);
        budget.set_store(store);
        self.start();
    }

    /// Whether `other` is a handle to this backend.
    pub fn ptr_eq(&self, other: &RedisBackend) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl crate::store::Backend for RedisBackend {
    fn health(&self, name: &str) -> BackendHealth {
        BackendHealth::new(name, "redis", self.state())
            .with_url(self.inner.config.shown.clone())
            .with_errors_total(self.errors_total())
            .with_fallbacks_total(self.fallbacks_total())
    }
}

/// A random id for this replica's backend (64 bits from the process's hasher seeds and the time).
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// A lock, poisoned or not: every write under these locks is one assignment.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
