//! Site resolution: what each site called through a registry uses (its breaker, budget, limiter
//! and bulkhead handles, its counters), resolved on its first call and kept, and the per-site
//! metrics read from them. (The list of every annotated site, called or not, is `crate::sites`,
//! feature `sites`.)

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::named::{BulkheadHandle, Handle, LimiterHandle, Named};
use super::{BlockingSleep, KeyedBreakers, Registry};
use crate::breaker::Breaker;
use crate::budget::RetryBudget;
use crate::engine::Site;
use crate::limit::{ConcurrencyLimit, Gcra};
use crate::metrics::{Counters, MetricsSnapshot, SiteSnapshot};

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

/// The sites called through a registry: found by address in one hash look-up (a scoped
/// registry is asked on every call), listed in the order they were first called.
#[derive(Default)]
pub(super) struct Sites {
    by_site: HashMap<usize, Arc<SiteState>>,
    order: Vec<Arc<SiteState>>,
}

impl Sites {
    fn get(&self, site: &'static Site) -> Option<&Arc<SiteState>> {
        self.by_site.get(&(std::ptr::from_ref(site) as usize))
    }
}

impl Registry {
    pub(crate) fn site_state(&self, site: &'static Site) -> Arc<SiteState> {
        let known = self
            .inner
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .cloned();
        if let Some(s) = known {
            return s;
        }
        let mut sites = self
            .inner
            .sites
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sites.get(site) {
            return s.clone();
        }
        let p = site.policy();
        let (breaker, keyed) = match (p.breaker, p.keyed_breaker) {
            (Some(name), true) => (None, Some(self.keyed_base(name, p.sensitive_key))),
            (Some(name), false) => (Some(self.breaker(name)), None),
            (None, _) => (None, None),
        };
        let budget_name: Arc<str> = p.budget_name().into();
        let budget = self.budget(&budget_name);
        let limiter = p.rate_limit.map(|name| {
            gate_or_default(
                &self.inner.limiters,
                name,
                || Arc::new(Gcra::new(10, Duration::from_secs(1))),
                || {
                    tracing::warn!(
                        limiter = name,
                        operation = p.operation,
                        "rate limit is not configured; using 10 per second"
                    );
                },
            )
        });
        let bulkhead = p.bulkhead.map(|name| {
            gate_or_default(
                &self.inner.bulkheads,
                name,
                || Arc::new(ConcurrencyLimit::new(16)),
                || {
                    tracing::warn!(
                        bulkhead = name,
                        operation = p.operation,
                        "bulkhead is not configured; using 16 concurrent calls"
                    );
                },
            )
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

    /// The counters of every site called through this registry, in the order of their first call.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// assert!(Registry::new().metrics().sites.is_empty());
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        let sites = self
            .inner
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner)
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
        }
    }
}

/// The handle of the rate limiter or bulkhead `name`. A name nothing installed gets `default`,
/// after `warn`: a missing configuration shows in the logs but does not fail the call.
fn gate_or_default<T: ?Sized>(
    store: &Named<Arc<Handle<T>>>,
    name: &'static str,
    default: impl FnOnce() -> Arc<T>,
    warn: impl FnOnce(),
) -> (Arc<str>, Arc<Handle<T>>) {
    let handle = store.get(name).unwrap_or_else(|| {
        warn();
        store.get_or_insert_with(name, || Handle::new(default()))
    });
    (Arc::from(name), handle)
}
