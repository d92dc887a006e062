//! Site resolution: what each site called through a registry uses (its breaker, budget, limiter
//! and bulkhead handles, its counters, the policy a `[sites]` table makes of its attribute's),
//! resolved on its first call and kept, and the per-site metrics read from them. (The list of
//! every annotated site, called or not, is `crate::sites`, feature `sites`.)
//!
//! A site's policy follows reconfiguration the way its rate limiter does: the state holds it in
//! an [`ArcSwapOption`](arc_swap::ArcSwapOption) that [`Registry::apply`] replaces whole, and
//! each call reads it once, at its start. A site no table overrides holds none: the flag
//! `overridden` (one load) tells its calls to read the attribute's policy, and keeps them on the
//! fast path.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::named::{BulkheadHandle, Handle, LimiterHandle, Named};
use super::site_policy::{self, Effective, Layer, PolicySources, SitePolicy};
use super::{BlockingSleep, KeyedBreakers, Registry};
use crate::InvalidConfig;
use crate::breaker::Breaker;
use crate::budget::RetryBudget;
use crate::engine::{Policy, Site};
use crate::limit::{ConcurrencyLimit, Gcra};
use crate::metrics::{Counters, MetricsSnapshot, SiteSnapshot};

/// Everything one site needs, resolved once.
pub(crate) struct SiteState {
    pub(crate) site: &'static Site,
    /// The site's name ([`Policy::site_name`]): what a `[sites."<name>"]` table names.
    pub(crate) name: Arc<str>,
    pub(crate) connector: Arc<str>,
    pub(crate) breaker: Option<Arc<Breaker>>,
    pub(crate) keyed: Option<Arc<KeyedBreakers>>,
    /// The attribute's retry budget ([`Policy::budget_name`]); a table or a call may name
    /// another (`Effective::budget`).
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) budget_name: Arc<str>,
    /// The policy the configuration's `[sites]` table makes of the attribute's; `None` while no
    /// table applies, and then the calls read the attribute's.
    file: arc_swap::ArcSwapOption<Effective>,
    /// Whether `file` holds a policy: read at the start of every call (the fast path, which a
    /// site with one does not take, included) before `file` is.
    overridden: AtomicBool,
    /// A per-call override the site could not take has been logged.
    refused_call: AtomicBool,
    /// Whether this is the global registry's state, whose `overridden` the site itself also
    /// keeps (`Site::overridden_globally`), for the fast path.
    global: bool,
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
            .field("name", &self.name)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl SiteState {
    /// Whether a `[sites]` table overrides the attribute's policy: a call at a site where none
    /// does (and in no scope) may take the fast path.
    #[inline(always)]
    pub(crate) fn overridden(&self) -> bool {
        self.overridden.load(Ordering::Relaxed)
    }

    /// The policy a call starting now runs under, when it is not the attribute's: the file's,
    /// with the per-call override in force (if any) over it. `rejects`: whether the call's
    /// hooks take the runtime's rejections (what a `timeout` or `deadline` needs).
    #[inline]
    pub(crate) fn effective(&self, rejects: bool) -> Option<Arc<Effective>> {
        if crate::context::in_scope()
            && let Some(call) = super::scope::call_override()
        {
            return self.with_call(&call, rejects);
        }
        if !self.overridden() {
            return None;
        }
        self.file.load_full()
    }

    /// The file's policy with a call's override over it: what of the override the site can
    /// take ([`Layer::fitted_to`]). When the merged policy breaks a rule the call runs on the
    /// file's, and the site says so once.
    #[cold]
    #[inline(never)]
    fn with_call(&self, call: &Layer, rejects: bool) -> Option<Arc<Effective>> {
        let file = self.file.load_full().filter(|_| self.overridden());
        let attr = self.site.policy();
        let call = call.fitted_to(attr, rejects);
        if call == Layer::default() {
            return file;
        }
        let file_layer = file.as_ref().and_then(|f| f.file.as_ref());
        let (policy, budget, sources) = site_policy::merge(attr, file_layer, Some(&call));
        if let Err(e) = policy.validate() {
            if !self.refused_call.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    site = &*self.name,
                    field = e.field(),
                    "the per-call policy override breaks a rule at this site, which runs without it: {}",
                    e.reason()
                );
            }
            return file;
        }
        let (budget, budget_name) = match budget {
            // Named by the call: looked up per call (a call with an override takes the full path).
            Some(name) if sources.budget == site_policy::PolicySource::Call => {
                (crate::Registry::current().budget(&name), name)
            }
            _ => match &file {
                Some(f) => (f.budget.clone(), f.budget_name.clone()),
                None => (self.budget.clone(), self.budget_name.clone()),
            },
        };
        Some(Arc::new(Effective {
            policy,
            budget,
            budget_name,
            sources,
            file: file_layer.cloned(),
        }))
    }

    /// Installs the policy of the file's table (or none).
    fn set_file(&self, file: Option<Arc<Effective>>) {
        let overridden = file.is_some();
        self.file.store(file);
        self.overridden.store(overridden, Ordering::Release);
        if self.global {
            self.site.set_overridden_globally(overridden);
        }
    }

    /// The site's policy in force, and where each value came from: `call`'s when given (a
    /// call's), else the file's, else the attribute's.
    pub(crate) fn report(&self, call: Option<&Effective>) -> SitePolicy {
        let file = if call.is_none() && self.overridden() {
            self.file.load_full()
        } else {
            None
        };
        match call.or(file.as_deref()) {
            Some(e) => site_policy_of(&self.name, &e.policy, &e.budget_name, e.sources),
            None => site_policy_of(
                &self.name,
                self.site.policy(),
                &self.budget_name,
                PolicySources::ATTRIBUTE,
            ),
        }
    }
}

/// The report of a site's policy.
pub(crate) fn site_policy_of(
    name: &str,
    p: &Policy,
    budget: &str,
    sources: PolicySources,
) -> SitePolicy {
    SitePolicy {
        name: name.to_owned(),
        operation: p.operation,
        module: p.module,
        retries: p.retries,
        backoff: p.backoff,
        timeout: p.timeout,
        deadline: p.deadline,
        budget: budget.to_owned(),
        sources,
    }
}

/// The report of the attribute's policy of a site with no state in the registry in force.
pub(crate) fn attribute_policy(p: &Policy) -> SitePolicy {
    site_policy_of(
        &p.site_name(),
        p,
        &p.budget_name(),
        PolicySources::ATTRIBUTE,
    )
}

/// The path of the `[sites."<name>"]` table of a site, as errors name it.
pub(crate) fn table_path(name: &str) -> String {
    let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!("sites.\"{quoted}\"")
}

/// What the table `table` makes of the policy `attr` of the site `name`, judged by the rules
/// `#[resilient]` applies; the error names the table's field (`sites."m::f".retries`).
pub(crate) fn resolve_table(
    attr: &Policy,
    name: &str,
    table: &Layer,
) -> Result<(Policy, Arc<str>, PolicySources), InvalidConfig> {
    let (policy, budget, sources) = site_policy::merge(attr, Some(table), None);
    site_policy::judge(attr, table, &policy).map_err(|e| e.within(&table_path(name)))?;
    let budget = budget.unwrap_or_else(|| attr.budget_name().into());
    Ok((policy, budget, sources))
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
        let name: Arc<str> = p.site_name().into();
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
        let file = self.file_policy(p, &name);
        let global = self.ptr_eq(Registry::global());
        if global {
            site.set_overridden_globally(file.is_some());
        }
        let state = Arc::new(SiteState {
            site,
            name,
            connector: p.connector_name().into(),
            gate_breaker: breaker.clone().filter(|_| simple_gate),
            breaker,
            keyed,
            budget,
            budget_name,
            overridden: AtomicBool::new(file.is_some()),
            file: arc_swap::ArcSwapOption::new(file),
            refused_call: AtomicBool::new(false),
            global,
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

    /// The policy the configuration's table for the site `name` makes of `attr`; `None` without
    /// a table, with an empty one, or when the table is refused (logged at ERROR: the site keeps
    /// its attribute's policy, and the startup check reports the same error).
    fn file_policy(&self, attr: &Policy, name: &str) -> Option<Arc<Effective>> {
        let table = self.inner.site_tables.get(name)?;
        if table == Layer::default() {
            return None;
        }
        match resolve_table(attr, name, &table) {
            Ok((policy, budget_name, sources)) => Some(Arc::new(Effective {
                policy,
                budget: self.budget(&budget_name),
                budget_name,
                sources,
                file: Some(table),
            })),
            Err(e) => {
                tracing::error!(
                    site = name,
                    field = e.field(),
                    "the configuration's table for the site is refused, and the site keeps the policy of its code: {}",
                    e.reason()
                );
                None
            }
        }
    }

    /// Records the `[sites]` tables of a configuration and gives every site already called the
    /// policy its table makes, from its next call. (The site list's write lock serialises this
    /// with the resolution of a new site, which reads the tables recorded, and with another
    /// reconfiguration: the last one's tables are the ones in force.)
    pub(super) fn apply_site_tables<'a>(&self, tables: impl Iterator<Item = (&'a str, &'a Layer)>) {
        let mut any = false;
        for (name, table) in tables {
            self.inner.site_tables.update(name, |_| table.clone());
            any = true;
        }
        if !any {
            return;
        }
        let sites = self
            .inner
            .sites
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for state in &sites.order {
            state.set_file(self.file_policy(state.site.policy(), &state.name));
        }
    }

    /// The sites called through this registry, in the order of their first call.
    #[cfg(feature = "sites")]
    pub(crate) fn called_sites(&self) -> Vec<Arc<SiteState>> {
        self.inner
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .clone()
    }

    /// The policy a site not called through this registry yet would run under: its attribute's
    /// with the registry's `[sites]` table over it (unless the site cannot take the table).
    #[cfg(feature = "sites")]
    pub(crate) fn table_policy(&self, attr: &Policy) -> SitePolicy {
        let name = attr.site_name();
        let resolved = self
            .inner
            .site_tables
            .get(&name)
            .filter(|t| *t != Layer::default())
            .and_then(|t| resolve_table(attr, &name, &t).ok());
        match resolved {
            Some((policy, budget, sources)) => site_policy_of(&name, &policy, &budget, sources),
            None => attribute_policy(attr),
        }
    }

    /// The state of `site` in this registry, if it has been called through it.
    pub(crate) fn called_site(&self, site: &'static Site) -> Option<Arc<SiteState>> {
        self.inner
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .cloned()
    }

    /// The policy of every site called through this registry, sorted by name.
    pub(crate) fn site_policies(&self) -> Vec<SitePolicy> {
        let sites = self
            .inner
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .clone();
        let mut out: Vec<SitePolicy> = sites.iter().map(|s| s.report(None)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
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
                        rate_limit: p.rate_limit,
                        metrics: s.counters.snapshot(),
                    }
                })
                .collect(),
            keyed_breakers: self.keyed_metrics(),
        }
    }

    /// The counters of every per-key base, by name.
    fn keyed_metrics(&self) -> Vec<crate::metrics::KeyedBreakerMetrics> {
        let mut out = Vec::new();
        self.inner
            .keyed
            .for_each(|name, k| out.push(k.metrics(name)));
        out.sort_by(|a, b| a.breaker.cmp(&b.breaker));
        out
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
