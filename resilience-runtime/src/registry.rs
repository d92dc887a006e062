//! Named breakers, budgets and limits; configuration; health; isolated registries for tests.
//!
//! A [`Registry`] owns every named instance. Annotated sites use the process-wide one
//! ([`Registry::global`]) unless a test runs them inside [`Registry::scope`] (async) or
//! [`Registry::enter`] (blocking) of an isolated registry, so state never leaks between tests.
//!
//! Each site resolves its breaker, budget and limits once, on its first call, and caches them: a
//! call through the global registry hashes no string. Configuring later changes the instances in
//! place ([`Registry::configure_breaker`], [`Registry::configure_budget`], [`Registry::apply`]): a
//! breaker keeps its state and a budget its tokens, every site sees the new settings on its next
//! call, and health shows the very instances the sites use. A rate limiter or bulkhead installed
//! later replaces the one sites use, from their next call.
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::{Registry, breaker::BreakerConfig};
//!
//! let registry = Registry::new();
//! registry.configure_breaker("graph", BreakerConfig::new().with_cooldown(Duration::from_secs(30))).unwrap();
//! assert_eq!(registry.breaker("graph").config().cooldown, Duration::from_secs(30));
//! assert_eq!(registry.health().breakers.len(), 1);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use resilience_policy as policy;

use crate::InvalidConfig;
use crate::breaker::{Breaker, BreakerConfig, BreakerState, TripMode};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::engine::Site;
use crate::limit::{Bulkhead, ConcurrencyLimit, Gcra, RateLimit};
use crate::metrics::{Counters, MetricsSnapshot, SiteSnapshot};

/// A sleep for the blocking engine; tests install one that records instead of sleeping.
pub type BlockingSleep = Arc<dyn Fn(Duration) + Send + Sync>;

mod keyed;
pub use self::keyed::KeyedBreakers;
#[cfg(feature = "governor")]
pub(crate) use self::keyed::long_form as long_key_form;

/// Everything one site needs, resolved once.
pub(crate) struct SiteState {
    pub(crate) site: &'static Site,
    pub(crate) connector: Arc<str>,
    pub(crate) breaker: Option<Arc<Breaker>>,
    pub(crate) keyed: Option<Arc<KeyedBreakers>>,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) limiter: Option<(Arc<str>, LimiterHandle)>,
    pub(crate) bulkhead: Option<(Arc<str>, BulkheadHandle)>,
    pub(crate) counters: Counters,
    /// Neither a rate limiter nor a bulkhead: the gate before an attempt is the breaker only.
    pub(crate) simple_gate: bool,
    /// `breaker`, when it is the whole gate (`simple_gate`): the fast path checks both at once.
    pub(crate) gate_breaker: Option<Arc<Breaker>>,
    pub(crate) seed: Option<u64>,
    pub(crate) calls: AtomicU64,
    pub(crate) sleep: Option<BlockingSleep>,
}

impl fmt::Debug for SiteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteState")
            .field("operation", &self.site.policy().operation)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

/// A named rate limiter or bulkhead as sites hold it: the instance installed last, read per call,
/// so that installing another reaches every site on its next call.
pub(crate) struct Handle<T: ?Sized>(arc_swap::ArcSwap<Arc<T>>);

impl<T: ?Sized> Handle<T> {
    fn new(instance: Arc<T>) -> Arc<Handle<T>> {
        Arc::new(Handle(arc_swap::ArcSwap::from_pointee(instance)))
    }

    /// Runs `f` with the current instance: a lock-free load, so that calls through one limiter
    /// or bulkhead do not contend on a lock.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.0.load())
    }

    fn set(&self, instance: Arc<T>) {
        self.0.store(Arc::new(instance));
    }
}

/// The sites called through a registry: found by address in one hash look-up (a scoped
/// registry is asked on every call), listed in the order they were first called.
#[derive(Default)]
struct Sites {
    by_site: HashMap<usize, Arc<SiteState>>,
    order: Vec<Arc<SiteState>>,
}

impl Sites {
    fn get(&self, site: &'static Site) -> Option<&Arc<SiteState>> {
        self.by_site.get(&(std::ptr::from_ref(site) as usize))
    }
}

/// A named rate limiter as sites hold it.
pub(crate) type LimiterHandle = Arc<Handle<dyn RateLimit>>;
/// A named bulkhead as sites hold it.
pub(crate) type BulkheadHandle = Arc<Handle<dyn Bulkhead>>;

#[derive(Default)]
struct Inner {
    id: u64,
    breaker_configs: RwLock<HashMap<String, NamedBreaker>>,
    budget_configs: RwLock<HashMap<String, BudgetConfig>>,
    breakers: RwLock<HashMap<Arc<str>, Arc<Breaker>>>,
    keyed: RwLock<HashMap<Arc<str>, Arc<KeyedBreakers>>>,
    budgets: RwLock<HashMap<Arc<str>, Arc<RetryBudget>>>,
    limiters: RwLock<HashMap<Arc<str>, LimiterHandle>>,
    bulkheads: RwLock<HashMap<Arc<str>, BulkheadHandle>>,
    sites: RwLock<Sites>,
    seed: Mutex<Option<u64>>,
    sleep: Mutex<Option<BlockingSleep>>,
}

#[derive(Debug, Clone, Copy)]
struct NamedBreaker {
    config: BreakerConfig,
    max_keys: usize,
    idle_ttl: Duration,
    /// `sensitive_keys = true`: the per-key base's keys are shown redacted.
    sensitive_keys: bool,
}

impl Default for NamedBreaker {
    fn default() -> Self {
        NamedBreaker {
            config: BreakerConfig::new(),
            max_keys: 10_000,
            idle_ttl: Duration::from_secs(600),
            sensitive_keys: false,
        }
    }
}

/// Named breakers, budgets, rate limiters and bulkheads, with their configuration.
///
/// Cloning a registry is cheap and gives a handle to the same instances.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static SCOPED: std::cell::RefCell<Option<Registry>> = const { std::cell::RefCell::new(None) };
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// A new, empty, isolated registry.
    pub fn new() -> Registry {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Registry {
            inner: Arc::new(Inner {
                id: IDS.fetch_add(1, Ordering::Relaxed),
                ..Inner::default()
            }),
        }
    }

    /// The process-wide registry that annotated sites use by default.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// The registry in force here: the one of the innermost [`Registry::scope`] or
    /// [`Registry::enter`], else the global one.
    pub fn current() -> Registry {
        scoped().unwrap_or_else(|| Registry::global().clone())
    }

    /// Runs `fut` with this registry in force for every resilient call it makes.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let r = Registry::new();
    /// let same = r.scope(async { Registry::current() }).await;
    /// assert!(same.ptr_eq(&r));
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> Scoped<F> {
        // From now on calls look for a scoped registry (and take the engine's full path).
        crate::engine::set_full_path(crate::engine::FULL_PATH_SCOPED, true);
        Scoped {
            registry: self.clone(),
            fut: Box::pin(fut),
        }
    }

    /// Runs `f` with this registry in force on this thread.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        // From now on calls look for a scoped registry (and take the engine's full path).
        crate::engine::set_full_path(crate::engine::FULL_PATH_SCOPED, true);
        let _guard = ScopeGuard::install(self.clone());
        f()
    }

    /// Whether two handles refer to the same registry.
    pub fn ptr_eq(&self, other: &Registry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Fixes the seed of jitter for every site resolved afterwards, for exact tests.
    pub fn with_seed(self, seed: u64) -> Registry {
        if let Ok(mut s) = self.inner.seed.lock() {
            *s = Some(seed);
        }
        self
    }

    /// Replaces the blocking engine's sleep (tests record the waits instead of sleeping).
    pub fn with_blocking_sleep(self, sleep: impl Fn(Duration) + Send + Sync + 'static) -> Registry {
        if let Ok(mut s) = self.inner.sleep.lock() {
            *s = Some(Arc::new(sleep));
        }
        self
    }

    /// Configures the breaker `name` (and its per-key breakers).
    ///
    /// # Errors
    ///
    /// The config is invalid (see [`BreakerConfig::validate`]); the field is prefixed with
    /// `breakers.<name>`.
    pub fn configure_breaker(
        &self,
        name: &str,
        config: BreakerConfig,
    ) -> Result<(), InvalidConfig> {
        config
            .validate()
            .map_err(|e| e.within(&format!("breakers.{name}")))?;
        self.set_breaker(
            name,
            NamedBreaker {
                config,
                ..NamedBreaker::default()
            },
        );
        Ok(())
    }

    /// Records the settings of `name` and applies them in place to the instances already made:
    /// sites that use them see the new settings on their next call, and the breakers keep their
    /// state. Sensitive keys stay sensitive: settings without the mark do not take it back.
    fn set_breaker(&self, name: &str, mut named: NamedBreaker) {
        if let Ok(mut c) = self.inner.breaker_configs.write() {
            named.sensitive_keys |= c.get(name).is_some_and(|n| n.sensitive_keys);
            c.insert(name.to_owned(), named);
        }
        let live = self
            .inner
            .breakers
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned());
        if let Some(b) = live {
            // Validated by every caller.
            let _ = b.reconfigure(named.config);
        }
        let live = self
            .inner
            .keyed
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned());
        if let Some(k) = live {
            if named.sensitive_keys {
                k.mark_sensitive();
            }
            let _ = k.reconfigure(named.config, named.max_keys, named.idle_ttl);
        }
    }

    /// Configures the retry budget `name`.
    ///
    /// # Errors
    ///
    /// The config is invalid (see [`BudgetConfig::validate`]).
    pub fn configure_budget(&self, name: &str, config: BudgetConfig) -> Result<(), InvalidConfig> {
        config
            .validate()
            .map_err(|e| e.within(&format!("budgets.{name}")))?;
        self.set_budget(name, config);
        Ok(())
    }

    /// Records the settings of budget `name` and applies them in place to the budget already made
    /// (it keeps its tokens).
    fn set_budget(&self, name: &str, config: BudgetConfig) {
        if let Ok(mut c) = self.inner.budget_configs.write() {
            c.insert(name.to_owned(), config);
        }
        let live = self
            .inner
            .budgets
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned());
        if let Some(b) = live {
            // Validated by every caller.
            let _ = b.reconfigure(config);
        }
    }

    /// Installs the rate limiter `name`. Sites already using the name use this one from their
    /// next call.
    pub fn set_rate_limit(&self, name: &str, limiter: Arc<dyn RateLimit>) {
        let mut l = match self.inner.limiters.write() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        match l.get(name) {
            Some(h) => h.set(limiter),
            None => {
                l.insert(name.into(), Handle::new(limiter));
            }
        }
    }

    /// Installs the bulkhead `name`. Sites already using the name use this one from their next
    /// call; a call inside the one replaced leaves it for the new one, which may then admit one
    /// call more than its cap until that call ends. To change only the cap, apply a
    /// configuration (`[bulkheads.<name>]`): a [`ConcurrencyLimit`] is resized in place.
    pub fn set_bulkhead(&self, name: &str, bulkhead: Arc<dyn Bulkhead>) {
        let mut l = match self.inner.bulkheads.write() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        match l.get(name) {
            Some(h) => h.set(bulkhead),
            None => {
                l.insert(name.into(), Handle::new(bulkhead));
            }
        }
    }

    /// Applies a whole configuration (see [`RegistryConfig`]). Instances already in use are
    /// reconfigured in place and keep their state; sites see the change on their next call.
    pub fn apply(&self, config: &RegistryConfig) {
        for (name, b) in &config.breakers {
            self.set_breaker(name, *b);
        }
        for (name, b) in &config.budgets {
            self.set_budget(name, *b);
        }
        for (name, r) in &config.rate_limits {
            self.set_rate_limit(name, r.limiter());
        }
        for (name, n) in &config.bulkheads {
            let live = self
                .inner
                .bulkheads
                .read()
                .ok()
                .and_then(|m| m.get(name.as_str()).cloned());
            if !live.is_some_and(|h| h.with(|b| b.resize(*n))) {
                self.set_bulkhead(name, Arc::new(ConcurrencyLimit::new(*n)));
            }
        }
    }

    /// The breaker `name`, made with its configured (or default) settings on first use.
    pub fn breaker(&self, name: &str) -> Arc<Breaker> {
        if let Some(b) = self
            .inner
            .breakers
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return b;
        }
        let named = self.named_breaker(name);
        let mut m = match self.inner.breakers.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.into())
            .or_insert_with(|| Arc::new(Breaker::new(name, named.config)))
            .clone()
    }

    /// The per-key breakers of `name`.
    pub fn keyed_breakers(&self, name: &str) -> Arc<KeyedBreakers> {
        self.keyed_base(name, false)
    }

    /// The per-key breakers of `name`, marked sensitive first if `sensitive` (a site's
    /// `sensitive_key`) or the configuration says so, so that a key is never made unmarked.
    fn keyed_base(&self, name: &str, sensitive: bool) -> Arc<KeyedBreakers> {
        if let Some(b) = self
            .inner
            .keyed
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            if sensitive {
                b.mark_sensitive();
            }
            return b;
        }
        let named = self.named_breaker(name);
        let mut m = match self.inner.keyed.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let b = m
            .entry(name.into())
            .or_insert_with(|| {
                let k =
                    KeyedBreakers::new(name.into(), named.config, named.max_keys, named.idle_ttl);
                if named.sensitive_keys || sensitive {
                    k.mark_sensitive();
                }
                Arc::new(k)
            })
            .clone();
        // Another thread may have made it meanwhile, unmarked.
        if sensitive {
            b.mark_sensitive();
        }
        b
    }

    /// The retry budget `name`.
    pub fn budget(&self, name: &str) -> Arc<RetryBudget> {
        if let Some(b) = self
            .inner
            .budgets
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return b;
        }
        let config = self
            .inner
            .budget_configs
            .read()
            .ok()
            .and_then(|c| c.get(name).copied())
            .unwrap_or_default();
        let mut m = match self.inner.budgets.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.into())
            .or_insert_with(|| Arc::new(RetryBudget::new(config)))
            .clone()
    }

    fn named_breaker(&self, name: &str) -> NamedBreaker {
        self.inner
            .breaker_configs
            .read()
            .ok()
            .and_then(|c| c.get(name).copied())
            .unwrap_or_default()
    }

    pub(crate) fn site_state(&self, site: &'static Site) -> Arc<SiteState> {
        let known = self
            .inner
            .sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(site)
            .cloned();
        if let Some(s) = known {
            return s;
        }
        let mut sites = self
            .inner
            .sites
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = sites.get(site) {
            return s.clone();
        }
        let p = site.policy();
        let (breaker, keyed) = match (p.breaker, p.keyed_breaker) {
            (Some(name), true) => (None, Some(self.keyed_base(name, p.sensitive_key))),
            (Some(name), false) => (Some(self.breaker(name)), None),
            (None, _) => (None, None),
        };
        let budget_name: Arc<str> = p
            .breaker
            .map(Arc::from)
            .unwrap_or_else(|| format!("{}::{}", p.module, p.operation).into());
        let budget = self.budget(&budget_name);
        let limiter = p.rate_limit.map(|name| {
            let handle = |r: &Registry| {
                r.inner
                    .limiters
                    .read()
                    .ok()
                    .and_then(|m| m.get(name).cloned())
            };
            let l = handle(self).unwrap_or_else(|| {
                tracing::warn!(
                    limiter = name,
                    operation = p.operation,
                    "rate limit is not configured; using 10 per second"
                );
                self.set_rate_limit(name, Arc::new(Gcra::new(10, Duration::from_secs(1))));
                handle(self)
                    .unwrap_or_else(|| Handle::new(Arc::new(Gcra::new(10, Duration::from_secs(1)))))
            });
            (Arc::from(name), l)
        });
        let bulkhead = p.bulkhead.map(|name| {
            let handle = |r: &Registry| {
                r.inner
                    .bulkheads
                    .read()
                    .ok()
                    .and_then(|m| m.get(name).cloned())
            };
            let b = handle(self).unwrap_or_else(|| {
                tracing::warn!(
                    bulkhead = name,
                    operation = p.operation,
                    "bulkhead is not configured; using 16 concurrent calls"
                );
                self.set_bulkhead(name, Arc::new(ConcurrencyLimit::new(16)));
                handle(self).unwrap_or_else(|| Handle::new(Arc::new(ConcurrencyLimit::new(16))))
            });
            (Arc::from(name), b)
        });
        let simple_gate = limiter.is_none() && bulkhead.is_none();
        let state = Arc::new(SiteState {
            site,
            connector: p.breaker.unwrap_or(p.module).into(),
            gate_breaker: breaker.clone().filter(|_| simple_gate),
            breaker,
            keyed,
            budget,
            simple_gate,
            limiter,
            bulkhead,
            counters: Counters::default(),
            seed: self.inner.seed.lock().ok().and_then(|s| *s),
            calls: AtomicU64::new(0),
            sleep: self.inner.sleep.lock().ok().and_then(|s| s.clone()),
        });
        sites
            .by_site
            .insert(std::ptr::from_ref(site) as usize, state.clone());
        sites.order.push(state.clone());
        state
    }

    /// The counters of every site called through this registry, and of its per-key breakers.
    pub fn metrics(&self) -> MetricsSnapshot {
        let sites = self
            .inner
            .sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .order
            .clone();
        MetricsSnapshot {
            sites: sites
                .iter()
                .map(|s| {
                    let p = s.site.policy();
                    SiteSnapshot {
                        connector: s.connector.to_string(),
                        operation: p.operation,
                        module: p.module,
                        breaker: p.breaker,
                        metrics: s.counters.snapshot(),
                    }
                })
                .collect(),
            keyed_breakers: self.keyed_metrics(),
        }
    }

    fn keyed_metrics(&self) -> Vec<crate::metrics::KeyedBreakerMetrics> {
        let mut out: Vec<_> = match self.inner.keyed.read() {
            Ok(m) => m.iter().map(|(name, k)| k.metrics(name)).collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by(|a, b| a.breaker.cmp(&b.breaker));
        out
    }

    /// A snapshot of every breaker: state, counts and time in state.
    ///
    /// Named breakers are listed one by one. A per-key base is summarised, however many keys it
    /// has: its key count by state and its [`KeyedHealth::WORST`] worst keys, so the report's
    /// size does not grow with the tenants. The report is healthy when no named breaker is open
    /// and no base has more than [`KeyedHealth::DEFAULT_OPEN_SHARE`] of its keys open (one
    /// tenant's open breaker does not make the instance unhealthy).
    pub fn health(&self) -> HealthReport {
        let mut breakers: Vec<BreakerHealth> = Vec::new();
        if let Ok(m) = self.inner.breakers.read() {
            breakers.extend(m.values().map(|b| BreakerHealth::of(b, None)));
        }
        breakers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut keyed: Vec<KeyedHealth> = Vec::new();
        if let Ok(m) = self.inner.keyed.read() {
            keyed.extend(m.iter().map(|(name, k)| KeyedHealth::of(name, k)));
        }
        keyed.sort_by(|a, b| a.name.cmp(&b.name));
        let healthy = breakers.iter().all(|b| b.state != BreakerState::Open)
            && keyed
                .iter()
                .all(|k| !k.over_share(KeyedHealth::DEFAULT_OPEN_SHARE));
        HealthReport {
            healthy,
            breakers,
            keyed,
        }
    }

    /// Visits every breaker, per-key ones included (for an export that asks for them).
    #[cfg(feature = "prometheus")]
    pub(crate) fn each_breaker(&self, f: &mut dyn FnMut(&Breaker, Option<&str>)) {
        if let Ok(m) = self.inner.breakers.read() {
            for b in m.values() {
                f(b, None);
            }
        }
        if let Ok(m) = self.inner.keyed.read() {
            for k in m.values() {
                k.each(f);
            }
        }
    }

    /// The state of the per-key breaker `base/key`, if that key is live.
    #[cfg(feature = "axum")]
    pub(crate) fn key_state(&self, base: &str, key: &str) -> Option<BreakerState> {
        let k = self.inner.keyed.read().ok()?.get(base)?.clone();
        let mut state = None;
        k.each(&mut |b, k| {
            if k == Some(key) {
                state = Some(b.state());
            }
        });
        state
    }
}

fn scoped() -> Option<Registry> {
    if !crate::engine::full_path(crate::engine::FULL_PATH_SCOPED) {
        return None;
    }
    SCOPED.with(|s| s.try_borrow().ok().and_then(|s| s.clone()))
}

/// The registry in force, if it is not the global one (hot path: one relaxed load when no test
/// ever scoped a registry).
#[inline]
pub(crate) fn scoped_registry() -> Option<Registry> {
    if !crate::engine::full_path(crate::engine::FULL_PATH_SCOPED) {
        return None;
    }
    scoped()
}

struct ScopeGuard {
    prev: Option<Registry>,
}

impl ScopeGuard {
    fn install(r: Registry) -> ScopeGuard {
        let prev = SCOPED.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.replace(r)));
        ScopeGuard { prev }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        SCOPED.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = prev;
            }
        });
    }
}

/// The future returned by [`Registry::scope`].
pub struct Scoped<F> {
    registry: Registry,
    fut: Pin<Box<F>>,
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _g = ScopeGuard::install(self.registry.clone());
        self.fut.as_mut().poll(cx)
    }
}

/// One breaker in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakerHealth {
    /// The breaker's name (`name/key` for a per-key breaker).
    pub name: String,
    /// The key, for a per-key breaker.
    pub key: Option<String>,
    /// The state.
    pub state: BreakerState,
    /// The state as the gauge value (0 closed, 1 open, 2 half-open).
    pub gauge: u8,
    /// Failures counted toward opening.
    pub failures: u64,
    /// Times opened.
    pub opened_total: u64,
    /// Half-open probes in flight.
    pub probes_in_flight: u64,
    /// Milliseconds in the current state.
    pub time_in_state_ms: u64,
}

impl BreakerHealth {
    fn of(b: &Breaker, key: Option<&str>) -> BreakerHealth {
        BreakerHealth {
            name: b.display_name().to_string(),
            key: key.map(str::to_owned),
            state: b.state(),
            gauge: b.state().as_gauge(),
            failures: b.failures(),
            opened_total: b.opened_total(),
            probes_in_flight: b.probes_in_flight(),
            time_in_state_ms: b.time_in_state().as_millis() as u64,
        }
    }
}

/// One per-key base (`breaker_key`), summarised: its keys by state and its worst keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyedHealth {
    /// The base's name.
    pub name: String,
    /// Live keys.
    pub keys: u64,
    /// Keys whose breaker is open.
    pub open: u64,
    /// Keys whose breaker is half-open.
    pub half_open: u64,
    /// Keys whose breaker is closed.
    pub closed: u64,
    /// Up to [`KeyedHealth::WORST`] keys, worst first: open, then half-open, then by failures
    /// counted.
    pub worst: Vec<BreakerHealth>,
}

impl KeyedHealth {
    /// How many of a base's keys the report lists.
    pub const WORST: usize = 10;
    /// The share of a base's keys that may be open before the base is unhealthy.
    pub const DEFAULT_OPEN_SHARE: f64 = 0.5;

    fn of(name: &str, k: &KeyedBreakers) -> KeyedHealth {
        let mut h = KeyedHealth {
            name: name.to_owned(),
            keys: 0,
            open: 0,
            half_open: 0,
            closed: 0,
            worst: Vec::new(),
        };
        // Rank: open first, then half-open, then failures; kept to the worst few as it goes, so
        // a million keys cost no more memory than ten.
        let rank = |b: &BreakerHealth| {
            let s = match b.state {
                BreakerState::Open => 2,
                BreakerState::HalfOpen => 1,
                BreakerState::Closed => 0,
            };
            (std::cmp::Reverse(s), std::cmp::Reverse(b.failures))
        };
        k.each(&mut |b, key| {
            h.keys += 1;
            match b.state() {
                BreakerState::Open => h.open += 1,
                BreakerState::HalfOpen => h.half_open += 1,
                BreakerState::Closed => h.closed += 1,
            }
            let entry = BreakerHealth::of(b, key);
            let at = h
                .worst
                .partition_point(|w| (rank(w), &w.name) <= (rank(&entry), &entry.name));
            if at < Self::WORST {
                h.worst.insert(at, entry);
                h.worst.truncate(Self::WORST);
            }
        });
        h
    }

    /// Whether more than `share` of the base's keys are open.
    pub fn over_share(&self, share: f64) -> bool {
        self.keys > 0 && self.open as f64 > share * self.keys as f64
    }
}

/// Every named breaker of a registry, and a summary of each per-key base. Serialises to JSON for
/// a health endpoint; its size does not grow with the number of keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// False when a named breaker is open, or more than half of a base's keys are.
    pub healthy: bool,
    /// The named breakers, sorted by name.
    pub breakers: Vec<BreakerHealth>,
    /// The per-key bases, sorted by name.
    pub keyed: Vec<KeyedHealth>,
}

/// The field a TOML parse error at byte `at` of `text` is about: the table being defined (a
/// duplicate table), or the table and key of the line (a duplicate key). Empty when the error is
/// before any table.
fn field_at(text: &str, at: usize) -> String {
    let mut table = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let t = line.trim();
        let header = t
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .map(|h| h.trim_matches(['[', ' ']).replace(' ', ""));
        if let Some(h) = header {
            if at < end {
                return h;
            }
            table = h;
        } else if at < end {
            let key = t.split('=').next().unwrap_or("").trim();
            return match (table.is_empty(), key.is_empty()) {
                (_, true) => table,
                (true, false) => key.to_owned(),
                (false, false) => format!("{table}.{key}"),
            };
        }
        start = end;
    }
    table
}

/// A whole registry's configuration, loadable from TOML (or any serde format through
/// [`RegistryConfig::from_value`]).
///
/// Every value is held to the bounds `#[resilient]` applies at compile time (the table in
/// [`policy`]): durations from 1 ms to 30 days, a `window` and a consecutive
/// `failure_threshold` up to 10,000, `half_open_probes` up to the window, `max_keys` up to 10⁸,
/// a `rate` up to 10⁹ per `per`. A value out of bounds is refused at load, naming its field.
///
/// ```
/// use resilience_runtime::registry::RegistryConfig;
///
/// let cfg = RegistryConfig::from_toml_str(r#"
///     [breakers.graph]
///     failure_threshold = 3
///     cooldown = "30s"
///
///     [breakers.okta]
///     window = 20
///     failure_ratio = 0.5
///     max_keys = 1000
///     sensitive_keys = true  # keys are secrets: shown as `key#` and 16 hex digits
///
///     [budgets.graph]
///     capacity = 50
///
///     [rate_limits.graph]
///     rate = 100
///     per = "1s"
///
///     [bulkheads.graph]
///     max_concurrent = 8
/// "#).unwrap();
/// let err = RegistryConfig::from_toml_str("[breakers.graph]\ncooldown = \"soon\"").unwrap_err();
/// assert_eq!(err.field(), "breakers.graph.cooldown");
/// let err = RegistryConfig::from_toml_str("[rate_limits.okta]\nrate = 1\nper = \"600years\"").unwrap_err();
/// assert_eq!(err.field(), "rate_limits.okta.per");
/// ```
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    breakers: BTreeMap<String, NamedBreaker>,
    budgets: BTreeMap<String, BudgetConfig>,
    rate_limits: BTreeMap<String, RateLimitSpec>,
    bulkheads: BTreeMap<String, usize>,
}

/// A configuration read by any serde format; the values are validated as they are read.
///
/// ```
/// use resilience_runtime::registry::RegistryConfig;
/// let cfg: RegistryConfig = serde_json::from_str(r#"{"breakers": {"graph": {"cooldown": "30s"}}}"#).unwrap();
/// assert_eq!(cfg.breaker_names().collect::<Vec<_>>(), ["graph"]);
/// let err = serde_json::from_str::<RegistryConfig>(r#"{"breakers": {"graph": {"cooldown": "soon"}}}"#).unwrap_err();
/// assert!(err.to_string().contains("breakers.graph.cooldown"), "{err}");
/// ```
impl<'de> serde::Deserialize<'de> for RegistryConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <RawConfig as serde::Deserialize>::deserialize(d)?;
        RegistryConfig::validate(raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    breakers: BTreeMap<String, RawBreaker>,
    #[serde(default)]
    budgets: BTreeMap<String, RawBudget>,
    #[serde(default)]
    rate_limits: BTreeMap<String, RawRateLimit>,
    #[serde(default)]
    bulkheads: BTreeMap<String, RawBulkhead>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_threshold: Option<u32>,
    window: Option<u32>,
    failure_ratio: Option<f64>,
    cooldown: Option<String>,
    half_open_probes: Option<u32>,
    success_threshold: Option<u32>,
    max_keys: Option<usize>,
    idle_ttl: Option<String>,
    sensitive_keys: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    capacity: Option<u32>,
    retry_cost: Option<u32>,
    refund: Option<f64>,
    enabled: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    rate: u32,
    per: Option<String>,
    per_key: Option<bool>,
    max_keys: Option<usize>,
}

/// One configured rate limit: `rate` permits per `per`, in bursts of up to `rate`; with
/// `per_key`, one such quota per key (the call's `breaker_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RateLimitSpec {
    rate: u32,
    per: Duration,
    per_key: bool,
    max_keys: usize,
}

impl RateLimitSpec {
    /// governor's GCRA when the `governor` feature is on, else the built-in one (same algorithm,
    /// no dependency). A per-key limit needs governor (rejected at load time without it).
    fn limiter(&self) -> Arc<dyn RateLimit> {
        #[cfg(feature = "governor")]
        {
            use std::num::NonZeroU32;
            let burst = NonZeroU32::new(self.rate).unwrap_or(NonZeroU32::MIN);
            let period = (self.per / self.rate.max(1)).max(Duration::from_nanos(1));
            if let Some(quota) = ::governor::Quota::with_period(period) {
                let quota = quota.allow_burst(burst);
                return if self.per_key {
                    Arc::new(crate::governor::KeyedGovernorLimit::<String>::new(
                        quota,
                        self.max_keys,
                    ))
                } else {
                    Arc::new(crate::governor::GovernorLimit::new(quota))
                };
            }
        }
        Arc::new(Gcra::new(self.rate, self.per))
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBulkhead {
    max_concurrent: usize,
}

/// The duration `text` of `key` in the table at `at`, within the policy's bounds.
fn duration(at: &str, key: &str, text: &str) -> Result<Duration, InvalidConfig> {
    let d = humantime::parse_duration(text).map_err(|e| {
        InvalidConfig::new(
            format!("{at}.{key}"),
            format!("`{text}` is not a duration ({e}); write it with a unit, e.g. \"250ms\", \"30s\", \"1m\""),
        )
    })?;
    checked(
        at,
        policy::check_duration(key, d).map_err(|v| v.written_as(text)),
    )?;
    Ok(d)
}

/// A policy rule's verdict on a value of the table at `at`, with the field's whole path.
fn checked(at: &str, verdict: Result<(), policy::Violation>) -> Result<(), InvalidConfig> {
    verdict.map_err(|v| InvalidConfig::from(v).within(at))
}

impl RegistryConfig {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    ///
    /// Syntax errors, unknown keys, wrong types and invalid values, each naming the field
    /// (`breakers.graph.cooldown`).
    pub fn from_toml_str(s: &str) -> Result<RegistryConfig, InvalidConfig> {
        let de = toml::Deserializer::parse(s).map_err(|e| {
            let field = e.span().map(|at| field_at(s, at.start)).unwrap_or_default();
            let mut reason = e.to_string().trim().to_owned();
            if reason.ends_with("duplicate key") {
                reason.push_str("; each table and each key may appear once: merge the two");
            }
            InvalidConfig::new(field, reason)
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            InvalidConfig::new(
                e.path().to_string(),
                e.inner().to_string().trim().to_owned(),
            )
        })?;
        Self::validate(raw)
    }

    /// Reads, parses and validates a TOML file; errors name the file too.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or [`RegistryConfig::from_toml_str`] fails.
    pub fn from_toml_file(
        path: impl AsRef<std::path::Path>,
    ) -> Result<RegistryConfig, InvalidConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            InvalidConfig::new("", format!("cannot read: {e}")).in_file(path.display().to_string())
        })?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path.display().to_string()))
    }

    /// Validates a configuration from any serde format.
    ///
    /// # Errors
    ///
    /// As [`RegistryConfig::from_toml_str`].
    pub fn from_value<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<RegistryConfig, InvalidConfig> {
        let raw: RawConfig = serde_path_to_error::deserialize(d).map_err(|e| {
            InvalidConfig::new(
                e.path().to_string(),
                e.inner().to_string().trim().to_owned(),
            )
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<RegistryConfig, InvalidConfig> {
        let mut out = RegistryConfig::default();
        for (name, b) in raw.breakers {
            let table = format!("breakers.{name}");
            let at = |f: &str| format!("{table}.{f}");
            let mut c = BreakerConfig::new();
            match (b.failure_threshold, b.window, b.failure_ratio) {
                (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                    return Err(InvalidConfig::new(
                        at("window"),
                        "give either `failure_threshold` (consecutive mode) or `window` and `failure_ratio` (ratio mode), not both",
                    ));
                }
                (Some(t), None, None) => c.trip = TripMode::Consecutive { threshold: t },
                (None, Some(window), Some(ratio)) => c.trip = TripMode::Ratio { window, ratio },
                (None, Some(_), None) => {
                    return Err(InvalidConfig::new(
                        at("failure_ratio"),
                        "is missing; ratio mode needs `window` and `failure_ratio`",
                    ));
                }
                (None, None, Some(_)) => {
                    return Err(InvalidConfig::new(
                        at("window"),
                        "is missing; ratio mode needs `window` and `failure_ratio`",
                    ));
                }
                (None, None, None) => {}
            }
            if let Some(s) = &b.cooldown {
                c.cooldown = duration(&table, "cooldown", s)?;
            }
            if let Some(p) = b.half_open_probes {
                c.half_open_probes = p;
            }
            if let Some(s) = b.success_threshold {
                c.success_threshold = s;
            }
            c.validate().map_err(|e| e.within(&table))?;
            let mut named = NamedBreaker {
                config: c,
                ..NamedBreaker::default()
            };
            if let Some(k) = b.max_keys {
                checked(
                    &table,
                    policy::check_max_keys(u64::try_from(k).unwrap_or(u64::MAX)),
                )?;
                named.max_keys = k;
            }
            if let Some(s) = &b.idle_ttl {
                named.idle_ttl = duration(&table, "idle_ttl", s)?;
            }
            named.sensitive_keys = b.sensitive_keys.unwrap_or(false);
            out.breakers.insert(name, named);
        }
        for (name, b) in raw.budgets {
            let table = format!("budgets.{name}");
            let mut c = BudgetConfig::new();
            if let Some(v) = b.capacity {
                c.capacity = v;
            }
            if let Some(v) = b.retry_cost {
                c.retry_cost = v;
            }
            if let Some(v) = b.refund {
                checked(&table, policy::check_refund(v))?;
                c.refund_milli = (v * 1000.0).round() as u32;
            }
            if let Some(v) = b.enabled {
                c.enabled = v;
            }
            c.validate().map_err(|e| e.within(&table))?;
            out.budgets.insert(name, c);
        }
        for (name, r) in raw.rate_limits {
            let table = format!("rate_limits.{name}");
            checked(&table, policy::check_rate(u64::from(r.rate)))?;
            let per = match &r.per {
                Some(s) => duration(&table, "per", s)?,
                None => Duration::from_secs(1),
            };
            let per_key = r.per_key.unwrap_or(false);
            if per_key && !cfg!(feature = "governor") {
                return Err(InvalidConfig::new(
                    format!("{table}.per_key"),
                    "a per-key rate limit needs the `governor` feature of resilience-runtime",
                ));
            }
            let max_keys = r.max_keys.unwrap_or(10_000);
            checked(
                &table,
                policy::check_max_keys(u64::try_from(max_keys).unwrap_or(u64::MAX)),
            )?;
            out.rate_limits.insert(
                name,
                RateLimitSpec {
                    rate: r.rate,
                    per,
                    per_key,
                    max_keys,
                },
            );
        }
        for (name, b) in raw.bulkheads {
            let table = format!("bulkheads.{name}");
            checked(
                &table,
                policy::check_max_concurrent(u64::try_from(b.max_concurrent).unwrap_or(u64::MAX)),
            )?;
            out.bulkheads.insert(name, b.max_concurrent);
        }
        Ok(out)
    }

    /// The names of the configured breakers.
    pub fn breaker_names(&self) -> impl Iterator<Item = &str> {
        self.breakers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolated_registries_do_not_share_state() {
        let a = Registry::new();
        let b = Registry::new();
        let ba = a.breaker("graph");
        for _ in 0..5 {
            ba.try_acquire()
                .unwrap()
                .record(crate::breaker::Outcome::Failure);
        }
        assert_eq!(a.breaker("graph").state(), BreakerState::Open);
        assert_eq!(b.breaker("graph").state(), BreakerState::Closed);
        assert!(!a.health().healthy);
        assert!(b.health().healthy);
    }

    #[test]
    fn a_bad_configuration_file_is_rejected_with_the_field_named() {
        let cases = [
            (
                "[breakers.graph]\ncooldown = \"soon\"",
                "breakers.graph.cooldown",
            ),
            (
                "[breakers.graph]\nfailure_threshold = 0",
                "breakers.graph.failure_threshold",
            ),
            (
                "[breakers.graph]\ncoldown = \"1s\"",
                "breakers.graph.coldown",
            ),
            (
                "[breakers.graph]\nfailure_threshold = \"five\"",
                "breakers.graph.failure_threshold",
            ),
            (
                "[breakers.graph]\nwindow = 10",
                "breakers.graph.failure_ratio",
            ),
            (
                "[breakers.graph]\nwindow = 10\nfailure_ratio = 2.0",
                "breakers.graph.failure_ratio",
            ),
            (
                "[budgets.graph]\nretry_cost = 0",
                "budgets.graph.retry_cost",
            ),
            ("[rate_limits.graph]\nrate = 0", "rate_limits.graph.rate"),
            (
                "[bulkheads.graph]\nmax_concurrent = 0",
                "bulkheads.graph.max_concurrent",
            ),
        ];
        for (text, field) in cases {
            let err = RegistryConfig::from_toml_str(text).unwrap_err();
            assert_eq!(err.field(), field, "{text}: {err}");
        }
        let err = RegistryConfig::from_toml_str("[breakers.graph]\ncoldown = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("coldown"), "{err}");
    }

    #[test]
    fn a_per_key_rate_limit_needs_governor() {
        let r = RegistryConfig::from_toml_str("[rate_limits.okta]\nrate = 5\nper_key = true\n");
        if cfg!(feature = "governor") {
            assert!(r.is_ok());
        } else {
            assert_eq!(r.unwrap_err().field(), "rate_limits.okta.per_key");
        }
        let e = RegistryConfig::from_toml_str("[rate_limits.okta]\nrate = 5\nmax_keys = 0\n")
            .unwrap_err();
        assert_eq!(e.field(), "rate_limits.okta.max_keys");
    }

    #[test]
    fn a_configuration_file_configures_instances() {
        let cfg = RegistryConfig::from_toml_str(
            "[breakers.graph]\nfailure_threshold = 3\ncooldown = \"30s\"\nhalf_open_probes = 2\n[breakers.okta]\nwindow = 20\nfailure_ratio = 0.25\n",
        )
        .unwrap();
        let r = Registry::new();
        r.apply(&cfg);
        let g = r.breaker("graph");
        assert_eq!(g.config().trip, TripMode::Consecutive { threshold: 3 });
        assert_eq!(g.config().cooldown, Duration::from_secs(30));
        assert_eq!(g.config().half_open_probes, 2);
        assert_eq!(
            r.breaker("okta").config().trip,
            TripMode::Ratio {
                window: 20,
                ratio: 0.25
            }
        );
        let json = serde_json::json!({"breakers": {"graph": {"cooldown": "1m"}}});
        let cfg = RegistryConfig::from_value(json).unwrap();
        assert_eq!(cfg.breaker_names().collect::<Vec<_>>(), ["graph"]);
    }

    #[test]
    fn sensitive_keys_in_a_configuration_file_redact_the_bases_keys() {
        let cfg = RegistryConfig::from_toml_str(
            "[breakers.okta]\nfailure_threshold = 2\nsensitive_keys = true\n[breakers.graph]\nsensitive_keys = false\n",
        )
        .unwrap();
        let r = Registry::new();
        // One base made before the file is applied, one after: both are marked.
        let early = r.keyed_breakers("okta").get("early-secret");
        r.apply(&cfg);
        let okta = r.keyed_breakers("okta");
        assert!(okta.is_sensitive());
        let b = okta.get("secret");
        assert_eq!(b.config().trip, TripMode::Consecutive { threshold: 2 });
        assert_eq!(b.key().as_deref(), Some("key#662a463828fd728b"));
        assert!(early.key().unwrap().starts_with("key#"));
        assert!(!r.keyed_breakers("graph").is_sensitive());
        let later = Registry::new();
        later.apply(&cfg);
        assert_eq!(
            &*later.keyed_breakers("okta").get("secret").name(),
            "okta/key#662a463828fd728b"
        );
        // Settings without the mark do not take it back.
        later
            .configure_breaker("okta", BreakerConfig::new())
            .unwrap();
        later.apply(
            &RegistryConfig::from_toml_str("[breakers.okta]\nsensitive_keys = false").unwrap(),
        );
        assert!(later.keyed_breakers("okta").is_sensitive());
        let json = serde_json::json!({"breakers": {"okta": {"sensitive_keys": true}}});
        let from_json = Registry::new();
        from_json.apply(&RegistryConfig::from_value(json).unwrap());
        assert!(from_json.keyed_breakers("okta").is_sensitive());
    }

    #[test]
    fn a_sensitive_keys_that_is_not_a_boolean_is_refused_with_its_field() {
        for text in [
            "[breakers.okta]\nsensitive_keys = \"yes\"",
            "[breakers.okta]\nsensitive_keys = 1",
        ] {
            let err = RegistryConfig::from_toml_str(text).unwrap_err();
            assert_eq!(err.field(), "breakers.okta.sensitive_keys", "{text}: {err}");
            assert!(err.to_string().contains("bool"), "{err}");
        }
        let json = serde_json::json!({"breakers": {"okta": {"sensitive_keys": "yes"}}});
        let err = RegistryConfig::from_value(json).unwrap_err();
        assert_eq!(err.field(), "breakers.okta.sensitive_keys");
    }

    #[test]
    fn keyed_breakers_are_bounded_and_evict_idle_keys() {
        let r = Registry::new();
        r.set_breaker(
            "t",
            NamedBreaker {
                max_keys: 3,
                ..NamedBreaker::default()
            },
        );
        let k = r.keyed_breakers("t");
        for t in ["a", "b", "c", "d", "e"] {
            let b = k.get(t);
            assert_eq!(b.name().as_ref(), format!("t/{t}"));
        }
        assert_eq!(k.len(), 3);
        // The same key gives the same breaker.
        assert!(Arc::ptr_eq(&k.get("e"), &k.get("e")));
    }

    #[test]
    fn health_serialises_every_named_breaker_and_each_keyed_base() {
        let r = Registry::new();
        r.breaker("graph");
        r.keyed_breakers("okta").get("tenant-1");
        let json = serde_json::to_value(r.health()).unwrap();
        assert_eq!(json["healthy"], true);
        assert_eq!(json["breakers"][0]["name"], "graph");
        assert_eq!(json["breakers"][0]["state"], "closed");
        assert_eq!(json["breakers"].as_array().map(Vec::len), Some(1));
        assert_eq!(json["keyed"][0]["name"], "okta");
        assert_eq!(json["keyed"][0]["keys"], 1);
        assert_eq!(json["keyed"][0]["worst"][0]["key"], "tenant-1");
    }

    #[tokio::test]
    async fn scope_installs_the_registry_for_the_future_only() {
        let r = Registry::new();
        assert!(r.scope(async { Registry::current() }).await.ptr_eq(&r));
        assert!(Registry::current().ptr_eq(Registry::global()));
        assert!(r.enter(Registry::current).ptr_eq(&r));
    }
}
