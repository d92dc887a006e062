//! Every annotated site, listed at run time, and the startup check of a configuration.
//!
//! `#[resilient]` registers each site's `static` in a link-time list ([`linkme`]'s distributed
//! slice), so [`all`] returns every site of the program, called or not. Sites made by hand with
//! [`engine::Site`](crate::engine::Site) are listed once they have been called through a
//! registry ([`report`] merges both).
//!
//! The list holds the sites linked into the running binary. A binary of its own that only
//! checks a file (a test, a CI tool) must reference the connector's code (call one of its fns,
//! for instance), or the linker may leave its sites out and the check reports the file's
//! `[sites]` tables as naming no site.
//!
//! At startup (and before applying a reloaded file), check the configuration against the sites
//! with [`SitesReport::check`]: a site that names a breaker the configuration does not define runs
//! on the default breaker settings, which is rarely what was meant; a `[sites."<name>"]` table
//! that names no site, or that its site cannot take, and two sites with one name, are errors.
//!
//! Each site is listed with the policy in force ([`SiteInfo`]): its attribute's, with the
//! registry's `[sites]` table over it, and where each value came from.
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

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::engine::{Policy, Site};
use crate::registry::{PolicySources, RegistryConfig, SitePolicy};
use crate::{InvalidConfig, Registry};

/// Every site registered by `#[resilient]`, in link order.
pub fn all() -> impl Iterator<Item = &'static Site> {
    crate::__private::SITES.iter().copied()
}

/// One site in a [`SitesReport`]: what its code says, and the policy in force at it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct SiteInfo {
    /// The site's name: `#[resilient(name = "...")]`, else `<module path>::<fn>`. What a
    /// `[sites."<name>"]` table names.
    pub name: String,
    /// The operation (the fn's name).
    pub operation: &'static str,
    /// The module path of the fn.
    pub module: &'static str,
    /// The `connector` label of the site's metrics
    /// ([`Policy::connector_name`]): `#[resilient(connector = "...")]`, else the crate's name.
    pub connector: &'static str,
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
    /// Extra attempts after the first, in force (see `sources`).
    pub retries: u32,
    /// The backoff schedule in force.
    #[serde(serialize_with = "crate::registry::serialize_backoff")]
    pub backoff: Backoff,
    /// Whether the operation is marked safe to repeat.
    pub idempotent: bool,
    /// The per-attempt timeout in force.
    pub timeout: Option<Duration>,
    /// The whole call's deadline in force.
    pub deadline: Option<Duration>,
    /// The retry budget in force.
    pub budget: String,
    /// Where each value in force came from: the attribute, or the registry's `[sites]` table.
    pub sources: PolicySources,
    /// Whether the site has been called through the registry the report was made from.
    pub called: bool,
    /// The site's policy in code, for the check of a configuration.
    #[serde(skip)]
    attribute: &'static Policy,
}

impl SiteInfo {
    fn new(site: &'static Site, now: SitePolicy, called: bool) -> SiteInfo {
        let p = site.policy();
        SiteInfo {
            name: now.name,
            operation: p.operation,
            module: p.module,
            connector: p.connector_name(),
            breaker: p.breaker,
            keyed_breaker: p.keyed_breaker,
            sensitive_key: p.sensitive_key,
            rate_limit: p.rate_limit,
            bulkhead: p.bulkhead,
            retries: now.retries,
            backoff: now.backoff,
            idempotent: p.idempotent,
            timeout: now.timeout,
            deadline: now.deadline,
            budget: now.budget,
            sources: now.sources,
            called,
            attribute: p,
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
/// through `registry`. `called` tells which ran through `registry`. Each shows the policy in force
/// in `registry`: its attribute's, with the `[sites]` table applied to `registry` over it.
pub fn report(registry: &Registry) -> SitesReport {
    let called = registry.called_sites();
    let mut sites: Vec<SiteInfo> = Vec::new();
    let mut seen: Vec<*const Site> = Vec::new();
    let hand_made = called.iter().map(|s| s.site);
    for s in all().chain(hand_made) {
        if seen.contains(&(s as *const Site)) {
            continue;
        }
        seen.push(s);
        let state = called.iter().find(|c| std::ptr::eq(c.site, s));
        let now = match state {
            Some(state) => state.report(None),
            None => registry.table_policy(s.policy()),
        };
        sites.push(SiteInfo::new(s, now, state.is_some()));
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

    /// Checks `config` against the sites: every breaker a site names is configured, no two sites
    /// share a name, and each `[sites."<name>"]` table names a site that can take it (a site
    /// safe to repeat for `retries`, an async site that takes rejections for `timeout` and
    /// `deadline`, a merged policy that passes the rules `#[resilient]` applies).
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    /// use resilience_runtime::{sites, Registry};
    ///
    /// let config = RegistryConfig::from_toml_str("[sites.\"billing::charge\"]\nretries = 1").unwrap();
    /// let err = sites::report(Registry::global()).check(&config).unwrap_err();
    /// assert_eq!(err.tables[0].field(), "sites.\"billing::charge\"");
    /// assert!(err.tables[0].reason().starts_with("names no site"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`SiteCheckError`], listing every problem found.
    pub fn check(&self, config: &RegistryConfig) -> Result<(), SiteCheckError> {
        let unconfigured_breakers: Vec<(String, &'static str)> = self
            .unconfigured_breakers(config)
            .filter_map(|s| {
                s.breaker
                    .map(|b| (format!("{}::{}", s.module, s.operation), b))
            })
            .collect();
        // A `[breakers.<name>]` table no site names, near in spelling to a breaker a site names
        // without a table, is most likely that breaker misspelt.
        let unused: Vec<&str> = config
            .breaker_names()
            .filter(|n| !self.sites.iter().any(|s| s.breaker == Some(*n)))
            .collect();
        let mut breaker_suggestions: Vec<(&'static str, String)> = Vec::new();
        for (_, b) in &unconfigured_breakers {
            if breaker_suggestions.iter().any(|(n, _)| n == b) {
                continue;
            }
            if let Some(near) = nearest(b, unused.iter().copied()) {
                breaker_suggestions.push((b, near.to_owned()));
            }
        }
        let mut by_name: BTreeMap<&str, Vec<&SiteInfo>> = BTreeMap::new();
        for s in &self.sites {
            by_name.entry(&s.name).or_default().push(s);
        }
        let duplicate_names = by_name
            .iter()
            .filter(|(_, sites)| sites.len() > 1)
            .map(|(name, sites)| {
                let at = sites
                    .iter()
                    .map(|s| format!("{}::{}", s.module, s.operation))
                    .collect();
                ((*name).to_owned(), at)
            })
            .collect();
        let mut tables = Vec::new();
        for name in config.site_names() {
            let Some(table) = config.site_table_of(name) else {
                continue;
            };
            match by_name.get(name).and_then(|sites| sites.first()) {
                None => tables.push(InvalidConfig::new(
                    crate::registry::table_path(name),
                    unknown_site(name, by_name.keys().copied()),
                )),
                Some(site) => {
                    if let Err(e) = crate::registry::resolve_table(site.attribute, name, table) {
                        tables.push(e);
                    }
                }
            }
        }
        let err = SiteCheckError {
            unconfigured_breakers,
            breaker_suggestions,
            duplicate_names,
            tables,
        };
        if err.unconfigured_breakers.is_empty()
            && err.duplicate_names.is_empty()
            && err.tables.is_empty()
        {
            Ok(())
        } else {
            Err(err)
        }
    }
}

/// Why the table of `name` names no site, with the nearest site name when one is near.
fn unknown_site<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let nearest = nearest(name, known);
    let mut reason = "names no site of this program; a site is named `<module path>::<fn>`, or \
                      by its `#[resilient(name = \"...\")]` (`sites::report` lists them)"
        .to_owned();
    if let Some(k) = nearest {
        reason.push_str(&format!("; did you mean `{k}`?"));
    }
    reason
}

/// The name of `known` nearest to `name` in spelling, if one is near enough to be a typo.
fn nearest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein's distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What [`SitesReport::check`] found wrong with a configuration, given the sites.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteCheckError {
    /// `(module::operation, breaker)` for each site that names a breaker the configuration does
    /// not define.
    pub unconfigured_breakers: Vec<(String, &'static str)>,
    /// `(breaker, table)` for each breaker of `unconfigured_breakers` that a `[breakers.<table>]`
    /// of a near spelling, which no site names, most likely meant.
    pub breaker_suggestions: Vec<(&'static str, String)>,
    /// Each name that two or more sites share, with the sites (`module::operation`).
    pub duplicate_names: Vec<(String, Vec<String>)>,
    /// The `[sites]` tables that name no site, or that their site cannot take: each names the
    /// table's field (`sites."graph::list".retries`).
    pub tables: Vec<InvalidConfig>,
}

impl fmt::Display for SiteCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut next = |f: &mut fmt::Formatter<'_>| {
            let sep = if first { "" } else { "\n" };
            first = false;
            f.write_str(sep)
        };
        if !self.unconfigured_breakers.is_empty() {
            next(f)?;
            write!(
                f,
                "{} site(s) name breakers the configuration does not define: ",
                self.unconfigured_breakers.len()
            )?;
            for (i, (site, breaker)) in self.unconfigured_breakers.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "`{site}` names `{breaker}`")?;
                if let Some((_, table)) =
                    self.breaker_suggestions.iter().find(|(b, _)| b == breaker)
                {
                    write!(
                        f,
                        " (`[breakers.{table}]` names no site's breaker: did you mean \
                         `[breakers.{breaker}]`?)"
                    )?;
                }
            }
            f.write_str("; add a `[breakers.<name>]` table for each")?;
        }
        for (name, sites) in &self.duplicate_names {
            next(f)?;
            write!(f, "{} sites are named `{name}`", sites.len())?;
            if sites.iter().any(|s| s != name) {
                f.write_str(" (")?;
                for (i, s) in sites.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{s}`")?;
                }
                f.write_str(")")?;
            } else {
                f.write_str(" (fns of one name in one module, methods of two types say)")?;
            }
            f.write_str(
                ", so a `[sites]` table cannot tell them apart; give all but one a \
                 `#[resilient(name = \"...\")]` of its own",
            )?;
        }
        for e in &self.tables {
            next(f)?;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SiteCheckError {}
