//! Every annotated site, listed at run time, and the startup check of a configuration.
//!
//! `#[resilient]` registers each site's `static` in a link-time list ([`linkme`]'s distributed
//! slice), so [`all`] returns every site of the program, called or not. Sites made by hand with
//! [`engine::Site`](crate::engine::Site) are listed once they have been called through a
//! registry ([`report`] merges both).
//!
//! At startup, check the configuration against the sites: a site that names a breaker the
//! configuration does not define runs on the default breaker settings, which is rarely what was
//! meant.
//!
//! ```
//! use resilience_runtime::registry::RegistryConfig;
//! use resilience_runtime::{sites, Registry};
//!
//! let config = RegistryConfig::from_toml_str("[breakers.graph]\nfailure_threshold = 3").unwrap();
//! let report = sites::report(Registry::global());
//! // Fails the start when a site names a breaker that the file does not configure.
//! report.check(&config).unwrap();
//! for site in &report.sites {
//!     println!("{}::{} breaker={:?}", site.module, site.operation, site.breaker);
//! }
//! ```
//!
//! [`linkme`]: https://docs.rs/linkme

use std::fmt;
use std::time::Duration;

use crate::Registry;
use crate::engine::{Policy, Site};
use crate::registry::RegistryConfig;

/// Every site registered by `#[resilient]`, in link order.
pub fn all() -> impl Iterator<Item = &'static Site> {
    crate::__private::SITES.iter().copied()
}

/// One site in a [`SitesReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct SiteInfo {
    /// The operation (the fn's name).
    pub operation: &'static str,
    /// The module path of the fn.
    pub module: &'static str,
    /// The breaker's name, if any.
    pub breaker: Option<&'static str>,
    /// Whether the breaker is one per key.
    pub keyed_breaker: bool,
    /// Whether the per-key breaker's keys are secrets, shown only redacted (`sensitive_key`).
    pub sensitive_key: bool,
    /// The rate limiter's name, if any.
    pub rate_limit: Option<&'static str>,
    /// The bulkhead's name, if any.
    pub bulkhead: Option<&'static str>,
    /// Extra attempts after the first.
    pub retries: u32,
    /// Whether the operation is marked safe to repeat.
    pub idempotent: bool,
    /// The per-attempt timeout.
    pub timeout: Option<Duration>,
    /// The whole call's deadline.
    pub deadline: Option<Duration>,
    /// Whether the site has been called through the registry the report was made from.
    pub called: bool,
}

impl SiteInfo {
    fn from_policy(p: &Policy, called: bool) -> SiteInfo {
        SiteInfo {
            operation: p.operation,
            module: p.module,
            breaker: p.breaker,
            keyed_breaker: p.keyed_breaker,
            sensitive_key: p.sensitive_key,
            rate_limit: p.rate_limit,
            bulkhead: p.bulkhead,
            retries: p.retries,
            idempotent: p.idempotent,
            timeout: p.timeout,
            deadline: p.deadline,
            called,
        }
    }
}

/// Every known site: the registered ones and the ones called through a registry.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SitesReport {
    /// The sites, sorted by module, then operation.
    pub sites: Vec<SiteInfo>,
}

/// Lists every site: the ones `#[resilient]` registered, plus sites made by hand that were called
/// through `registry`. `called` tells which ran through `registry`.
pub fn report(registry: &Registry) -> SitesReport {
    let snapshot = registry.metrics();
    let called = |op: &str, module: &str| {
        snapshot
            .sites
            .iter()
            .any(|s| s.operation == op && s.module == module)
    };
    let mut sites: Vec<SiteInfo> = Vec::new();
    let mut seen: Vec<*const Site> = Vec::new();
    for s in all() {
        if seen.contains(&(s as *const Site)) {
            continue;
        }
        seen.push(s);
        let p = s.policy();
        sites.push(SiteInfo::from_policy(p, called(p.operation, p.module)));
    }
    for s in &snapshot.sites {
        let known = sites
            .iter()
            .any(|i| i.operation == s.operation && i.module == s.module && i.breaker == s.breaker);
        if !known {
            let mut p = Policy::new(s.operation, s.module);
            p.breaker = s.breaker;
            sites.push(SiteInfo::from_policy(&p, true));
        }
    }
    sites.sort_by(|a, b| (a.module, a.operation).cmp(&(b.module, b.operation)));
    SitesReport { sites }
}

impl SitesReport {
    /// The sites that name a breaker `config` does not configure.
    pub fn unconfigured_breakers<'a>(
        &'a self,
        config: &'a RegistryConfig,
    ) -> impl Iterator<Item = &'a SiteInfo> + 'a {
        self.sites.iter().filter(move |s| {
            s.breaker
                .is_some_and(|b| !config.breaker_names().any(|n| n == b))
        })
    }

    /// Checks that every breaker a site names is configured.
    ///
    /// # Errors
    ///
    /// [`UnconfiguredSites`], listing each site and the breaker it names.
    pub fn check(&self, config: &RegistryConfig) -> Result<(), UnconfiguredSites> {
        let sites: Vec<(String, &'static str)> = self
            .unconfigured_breakers(config)
            .filter_map(|s| {
                s.breaker
                    .map(|b| (format!("{}::{}", s.module, s.operation), b))
            })
            .collect();
        if sites.is_empty() {
            Ok(())
        } else {
            Err(UnconfiguredSites { sites })
        }
    }
}

/// Sites that name breakers a configuration does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnconfiguredSites {
    /// `(module::operation, breaker)` for each such site.
    pub sites: Vec<(String, &'static str)>,
}

impl fmt::Display for UnconfiguredSites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} site(s) name breakers the configuration does not define: ",
            self.sites.len()
        )?;
        for (i, (site, breaker)) in self.sites.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{site}` names `{breaker}`")?;
        }
        f.write_str("; add a `[breakers.<name>]` table for each")
    }
}

impl std::error::Error for UnconfiguredSites {}
