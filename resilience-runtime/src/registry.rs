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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::InvalidConfig;
use crate::breaker::{Breaker, BreakerConfig};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::limit::{Bulkhead, RateLimit};

// One module per concept; `Registry` and its named instances stay here, and every public item
// is re-exported, so paths do not depend on the split.
mod config; // `RegistryConfig`, `Registry::apply`; file loading behind the `config` feature
mod fleet; // `[backends.*]` and the instances a configuration puts on them
mod health; // `HealthReport`, `Registry::health`, the exports' visits
mod keyed; // per-key breakers
mod named; // the store of named instances, the handles sites hold
mod scope; // `Registry::scope`/`enter`/`current`, `with_policy`: per thread, per poll
mod site_policy; // `[sites]` tables and per-call overrides over a site's attribute
mod sites; // what each site uses, resolved on its first call; `Registry::metrics`

pub use self::config::RegistryConfig;
pub use self::health::{BackendHealth, BackendState, BreakerHealth, HealthReport, KeyedHealth};
pub use self::keyed::KeyedBreakers;
#[cfg(feature = "governor")]
pub(crate) use self::keyed::long_form as long_key_form;

pub(crate) use self::scope::scoped_registry;
pub use self::scope::{Scoped, WithPolicy, with_policy};
pub(crate) use self::site_policy::{Effective, Layer};
pub use self::site_policy::{PolicyOverride, PolicySource, PolicySources, SitePolicy};
pub(crate) use self::sites::{SiteState, attribute_policy};
#[cfg(feature = "sites")]
pub(crate) use self::{
    site_policy::serialize_backoff,
    sites::{resolve_table, table_path},
};

use self::named::{BulkheadHandle, LimiterHandle, Named};

/// A sleep for the blocking engine; tests install one that records instead of sleeping.
pub type BlockingSleep = Arc<dyn Fn(Duration) + Send + Sync>;

#[derive(Default)]
struct Inner {
    id: u64,
    breaker_configs: Named<NamedBreaker>,
    budget_configs: Named<BudgetConfig>,
    breakers: Named<Arc<Breaker>>,
    keyed: Named<Arc<KeyedBreakers>>,
    budgets: Named<Arc<RetryBudget>>,
    limiters: Named<LimiterHandle>,
    bulkheads: Named<BulkheadHandle>,
    /// Shared backends, for health.
    backends: Named<Arc<dyn crate::store::Backend>>,
    /// The instances a configuration puts on a backend (see `fleet`).
    #[cfg(feature = "redis")]
    fleet: fleet::Attachments,
    /// The configuration's `[sites."<name>"]` tables, by site name.
    site_tables: Named<Layer>,
    sites: RwLock<sites::Sites>,
    seed: Mutex<Option<u64>>,
    sleep: Mutex<Option<BlockingSleep>>,
}

/// The settings of a breaker name: its breaker's, and its per-key base's bounds.
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
///
/// ```
/// use resilience_runtime::Registry;
///
/// let registry = Registry::new();
/// let same = registry.clone();
/// assert!(std::sync::Arc::ptr_eq(&registry.breaker("graph"), &same.breaker("graph")));
/// ```
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

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// A new, empty, isolated registry.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// assert!(!Registry::new().ptr_eq(Registry::global()));
    /// ```
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
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// assert!(Registry::global().ptr_eq(&Registry::current()));
    /// ```
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Whether two handles refer to the same registry.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// let r = Registry::new();
    /// assert!(r.ptr_eq(&r.clone()) && !r.ptr_eq(&Registry::new()));
    /// ```
    pub fn ptr_eq(&self, other: &Registry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Fixes the seed of jitter for every site resolved afterwards, for exact tests.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// let r = Registry::new().with_seed(7);
    /// ```
    pub fn with_seed(self, seed: u64) -> Registry {
        if let Ok(mut s) = self.inner.seed.lock() {
            *s = Some(seed);
        }
        self
    }

    /// Replaces the blocking engine's sleep (tests record the waits instead of sleeping).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use resilience_runtime::Registry;
    ///
    /// let waits = Arc::new(Mutex::new(Vec::new()));
    /// let seen = waits.clone();
    /// let r = Registry::new().with_blocking_sleep(move |d| seen.lock().unwrap().push(d));
    /// ```
    pub fn with_blocking_sleep(self, sleep: impl Fn(Duration) + Send + Sync + 'static) -> Registry {
        if let Ok(mut s) = self.inner.sleep.lock() {
            *s = Some(Arc::new(sleep));
        }
        self
    }

    /// Configures the breaker `name` (and its per-key breakers).
    ///
    /// ```
    /// use resilience_runtime::{Registry, breaker::BreakerConfig};
    ///
    /// let registry = Registry::new();
    /// registry.configure_breaker("graph", BreakerConfig::new().with_failure_threshold(3)).unwrap();
    /// let err = registry.configure_breaker("graph", BreakerConfig::new().with_failure_threshold(0)).unwrap_err();
    /// assert_eq!(err.field(), "breakers.graph.failure_threshold");
    /// ```
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
    fn set_breaker(&self, name: &str, named: NamedBreaker) {
        let named = self
            .inner
            .breaker_configs
            .update(name, |before| NamedBreaker {
                sensitive_keys: named.sensitive_keys || before.is_some_and(|n| n.sensitive_keys),
                ..named
            });
        if let Some(b) = self.inner.breakers.get(name) {
            // Validated by every caller.
            let _ = b.reconfigure(named.config);
        }
        if let Some(k) = self.inner.keyed.get(name) {
            if named.sensitive_keys {
                k.mark_sensitive();
            }
            let _ = k.reconfigure(named.config, named.max_keys, named.idle_ttl);
        }
    }

    /// Configures the retry budget `name`. The budget, if made already, keeps its tokens.
    ///
    /// ```
    /// use resilience_runtime::{Registry, budget::BudgetConfig};
    ///
    /// let registry = Registry::new();
    /// let err = registry.configure_budget("graph", BudgetConfig::new().with_retry_cost(0)).unwrap_err();
    /// assert_eq!(err.field(), "budgets.graph.retry_cost");
    /// ```
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
        self.inner.budget_configs.update(name, |_| config);
        if let Some(b) = self.inner.budgets.get(name) {
            // Validated by every caller.
            let _ = b.reconfigure(config);
        }
    }

    /// Installs the rate limiter `name`. Sites already using the name use this one from their
    /// next call.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use resilience_runtime::{Registry, limit::Gcra};
    ///
    /// let registry = Registry::new();
    /// registry.set_rate_limit("graph", Arc::new(Gcra::new(100, Duration::from_secs(1))));
    /// ```
    pub fn set_rate_limit(&self, name: &str, limiter: Arc<dyn RateLimit>) {
        self.inner.limiters.install(name, limiter);
    }

    /// Installs the bulkhead `name`. Sites already using the name use this one from their next
    /// call; a call inside the one replaced leaves it for the new one, which may then admit one
    /// call more than its cap until that call ends. To change only the cap, apply a
    /// configuration (`[bulkheads.<name>]`): a [`ConcurrencyLimit`](crate::limit::ConcurrencyLimit)
    /// is resized in place.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use resilience_runtime::{Registry, limit::ConcurrencyLimit};
    ///
    /// let registry = Registry::new();
    /// registry.set_bulkhead("graph", Arc::new(ConcurrencyLimit::new(8)));
    /// ```
    pub fn set_bulkhead(&self, name: &str, bulkhead: Arc<dyn Bulkhead>) {
        self.inner.bulkheads.install(name, bulkhead);
    }

    /// Lists `backend` as `name` in [`Registry::health`] (see [`crate::store::Backend`]); one
    /// added before under that name is replaced.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// assert!(Registry::new().health().backends.is_empty());
    /// ```
    pub fn add_backend(&self, name: &str, backend: Arc<dyn crate::store::Backend>) {
        self.inner.backends.update(name, |_| backend);
    }

    /// The breaker `name`, made with its configured (or default) settings on first use.
    ///
    /// ```
    /// use resilience_runtime::{Registry, breaker::BreakerState};
    ///
    /// let registry = Registry::new();
    /// assert_eq!(registry.breaker("graph").state(), BreakerState::Closed);
    /// ```
    pub fn breaker(&self, name: &str) -> Arc<Breaker> {
        self.inner.breakers.get_or_insert_with(name, || {
            let b = Arc::new(Breaker::new(name, self.named_breaker(name).config));
            self.attach_breaker(name, &b);
            b
        })
    }

    /// The per-key breakers of `name`.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// let registry = Registry::new();
    /// assert_eq!(&*registry.keyed_breakers("okta").get("tenant-1").name(), "okta/tenant-1");
    /// ```
    pub fn keyed_breakers(&self, name: &str) -> Arc<KeyedBreakers> {
        self.keyed_base(name, false)
    }

    /// The per-key breakers of `name`, marked sensitive first if `sensitive` (a site's
    /// `sensitive_key`) or the configuration says so, so that a key is never made unmarked.
    fn keyed_base(&self, name: &str, sensitive: bool) -> Arc<KeyedBreakers> {
        let base = self.inner.keyed.get_or_insert_with(name, || {
            let named = self.named_breaker(name);
            let k = KeyedBreakers::new(name.into(), named.config, named.max_keys, named.idle_ttl);
            if named.sensitive_keys || sensitive {
                k.mark_sensitive();
            }
            let k = Arc::new(k);
            self.attach_keyed(name, &k);
            k
        });
        // Made earlier, or by another thread meanwhile: unmarked, maybe.
        if sensitive {
            base.mark_sensitive();
        }
        base
    }

    /// The retry budget `name`, made with its configured (or default) settings on first use.
    ///
    /// ```
    /// use resilience_runtime::{Registry, budget::BudgetConfig};
    ///
    /// let registry = Registry::new();
    /// registry.configure_budget("graph", BudgetConfig::new().with_capacity(50)).unwrap();
    /// assert_eq!(registry.budget("graph").config().capacity, 50);
    /// ```
    pub fn budget(&self, name: &str) -> Arc<RetryBudget> {
        self.inner.budgets.get_or_insert_with(name, || {
            let config = self.inner.budget_configs.get(name).unwrap_or_default();
            let b = Arc::new(RetryBudget::new(config));
            self.attach_budget(name, &b);
            b
        })
    }

    fn named_breaker(&self, name: &str) -> NamedBreaker {
        self.inner.breaker_configs.get(name).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;

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
}
