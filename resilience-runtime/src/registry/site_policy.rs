//! Site policies at run time: what a configuration file's `[sites."<name>"]` table and a per-call
//! override ([`with_policy`](crate::with_policy)) change of a site's policy, the rules that judge
//! the result against the site, and where each value in force came from.
//!
//! A site's code says what only code can know (idempotency, keys, hooks, which breaker) and the
//! defaults of the rest; a file and a call may change `retries`, `backoff`, `timeout`,
//! `deadline` and the retry `budget`. Each value comes from the highest of three layers that
//! sets it: the call's override, then the file, then the attribute.
//!
//! A site with nothing over its attribute keeps no policy of its own: its calls read the
//! attribute's `&'static Policy`, as before there were layers. A site a file overrides holds the
//! merged policy in its state ([`Effective`], swapped whole when the registry is reconfigured),
//! and its calls take the engine's full path.

use std::sync::Arc;
use std::time::Duration;

use resilience_policy as rules;

use crate::InvalidConfig;
use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::engine::Policy;

/// Values over a site's attribute: a `[sites."<name>"]` table, or a per-call override. `None`
/// leaves the value to the layer below.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Layer {
    pub(crate) retries: Option<u32>,
    pub(crate) base: Option<Duration>,
    pub(crate) max: Option<Duration>,
    pub(crate) factor: Option<f64>,
    pub(crate) jitter: Option<Jitter>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) budget: Option<Arc<str>>,
}

impl Layer {
    const EMPTY: Layer = Layer {
        retries: None,
        base: None,
        max: None,
        factor: None,
        jitter: None,
        timeout: None,
        deadline: None,
        budget: None,
    };

    /// Whether the layer sets any backoff value.
    fn sets_backoff(&self) -> bool {
        self.base.is_some() || self.max.is_some() || self.factor.is_some() || self.jitter.is_some()
    }

    /// This layer over `under`: each value of `self`, else `under`'s.
    pub(crate) fn over(&self, under: &Layer) -> Layer {
        Layer {
            retries: self.retries.or(under.retries),
            base: self.base.or(under.base),
            max: self.max.or(under.max),
            factor: self.factor.or(under.factor),
            jitter: self.jitter.or(under.jitter),
            timeout: self.timeout.or(under.timeout),
            deadline: self.deadline.or(under.deadline),
            budget: self.budget.clone().or_else(|| under.budget.clone()),
        }
    }

    /// Checks the values by themselves, by the rules `#[resilient]` applies to the same keys:
    /// what can be judged without the site (bounds, `base <= max` and `timeout <= deadline`
    /// when both are given). The field is the key (`retries`, `backoff.base`).
    pub(crate) fn check(&self) -> Result<(), InvalidConfig> {
        if let Some(n) = self.retries {
            rules::check_retries(n)?;
        }
        let within_backoff = |v: rules::Violation| InvalidConfig::from(v).within("backoff");
        if let Some(d) = self.base {
            rules::check_duration("base", d).map_err(within_backoff)?;
        }
        if let Some(d) = self.max {
            rules::check_duration("max", d).map_err(within_backoff)?;
        }
        if let (Some(base), Some(max)) = (self.base, self.max) {
            rules::check_backoff_order(base, max).map_err(within_backoff)?;
        }
        if let Some(f) = self.factor {
            rules::check_backoff_factor(f).map_err(within_backoff)?;
        }
        if let Some(Jitter::Proportional(p)) = self.jitter {
            rules::check_jitter_fraction(p).map_err(within_backoff)?;
        }
        if let Some(t) = self.timeout {
            rules::check_duration("timeout", t)?;
        }
        if let Some(d) = self.deadline {
            rules::check_duration("deadline", d)?;
            if let Some(t) = self.timeout {
                rules::check_timeout_within_deadline(t, d)?;
            }
        }
        if let Some(b) = &self.budget {
            rules::check_name("budget", b)?;
        }
        Ok(())
    }

    /// What of this call override `attr`'s site can take: retries only at a site safe to repeat
    /// (a call cannot make a create retry), a `timeout` or `deadline` only at an async site that
    /// takes the runtime's rejections (`rejects`). A file's table is refused instead
    /// ([`judge`]): it names one site, and the operator is told.
    pub(crate) fn fitted_to(&self, attr: &Policy, rejects: bool) -> Layer {
        let timed = rejects && !attr.blocking;
        Layer {
            retries: self.retries.filter(|&n| n == 0 || attr.safe_to_repeat()),
            timeout: self.timeout.filter(|_| timed),
            deadline: self.deadline.filter(|_| timed),
            ..self.clone()
        }
    }
}

/// Where a value of a site's policy came from.
///
/// ```
/// use resilience_runtime::registry::PolicySource;
///
/// assert_eq!(serde_json::to_string(&PolicySource::File).unwrap(), "\"file\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PolicySource {
    /// The site's code: `#[resilient(...)]` (or its default), or a hand-built
    /// [`Policy`](crate::engine::Policy).
    Attribute,
    /// The configuration's `[sites."<name>"]` table.
    File,
    /// A per-call override ([`with_policy`](crate::with_policy)).
    Call,
}

/// Where each value of a site's policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PolicySources {
    /// Of `retries`.
    pub retries: PolicySource,
    /// Of `backoff`: the highest layer that sets any of its values.
    pub backoff: PolicySource,
    /// Of `timeout`.
    pub timeout: PolicySource,
    /// Of `deadline`.
    pub deadline: PolicySource,
    /// Of `budget`.
    pub budget: PolicySource,
}

impl PolicySources {
    /// Every value from the attribute: what a site with nothing over it reports.
    ///
    /// ```
    /// use resilience_runtime::registry::{PolicySource, PolicySources};
    ///
    /// assert_eq!(PolicySources::ATTRIBUTE.timeout, PolicySource::Attribute);
    /// ```
    pub const ATTRIBUTE: PolicySources = PolicySources {
        retries: PolicySource::Attribute,
        backoff: PolicySource::Attribute,
        timeout: PolicySource::Attribute,
        deadline: PolicySource::Attribute,
        budget: PolicySource::Attribute,
    };
}

/// A site's policy in force: its attribute's, with a configuration's `[sites."<name>"]` table
/// and a per-call override over it, and where each value came from. What
/// [`Registry::health`](crate::Registry::health), the site report (`sites::report`) and
/// [`CallContext::policy`](crate::CallContext::policy) show.
///
/// ```
/// use resilience_runtime::engine::{Hooks, Policy, Site, execute};
/// use resilience_runtime::registry::{PolicySource, RegistryConfig};
/// use resilience_runtime::{Classify, ErrorClass, Registry};
///
/// #[derive(Debug)]
/// struct Busy;
/// impl Classify for Busy {
///     fn class(&self) -> ErrorClass { ErrorClass::Transient }
/// }
/// static SITE: Site = Site::new(&Policy::new("list", "graph::users").with_retries(2).idempotent());
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let registry = Registry::new();
/// registry.apply(&RegistryConfig::from_toml_str("[sites.\"graph::users::list\"]\nretries = 5").unwrap());
/// let _ = registry.scope(execute(&SITE, Hooks::new(), || async { Ok::<_, Busy>(()) })).await;
/// let site = &registry.health().sites[0];
/// assert_eq!((site.name.as_str(), site.retries), ("graph::users::list", 5));
/// assert_eq!(site.sources.retries, PolicySource::File);
/// assert_eq!(site.sources.timeout, PolicySource::Attribute);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct SitePolicy {
    /// The site's name: `#[resilient(name = "...")]`, else `<module path>::<fn>`.
    pub name: String,
    /// The operation (the fn's name).
    pub operation: &'static str,
    /// The module path of the fn.
    pub module: &'static str,
    /// Extra attempts after the first.
    pub retries: u32,
    /// The backoff schedule.
    #[serde(serialize_with = "serialize_backoff")]
    pub backoff: Backoff,
    /// The per-attempt timeout.
    pub timeout: Option<Duration>,
    /// The whole call's deadline.
    pub deadline: Option<Duration>,
    /// The retry budget's name.
    pub budget: String,
    /// Where each value came from.
    pub sources: PolicySources,
}

/// A backoff's `factor` is a finite number (the rules refuse the rest), so equality is total
/// (which lets a [`HealthReport`](super::HealthReport) be `Eq`).
impl Eq for SitePolicy {}

pub(crate) fn serialize_backoff<S: serde::Serializer>(
    b: &Backoff,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut out = s.serialize_struct("Backoff", 4)?;
    out.serialize_field("base", &b.base)?;
    out.serialize_field("max", &b.max)?;
    out.serialize_field("factor", &b.factor)?;
    out.serialize_field("jitter", b.jitter.name())?;
    out.end()
}

/// A per-call override of the policy of every site called inside it: `retries`, `backoff`,
/// `timeout`, `deadline` and the retry `budget`, over the configuration's `[sites]` table and the
/// attribute (a call's values win). Apply it with [`with_policy`](crate::with_policy), which
/// checks it first, by the rules `#[resilient]` applies to the same keys.
///
/// Each site takes what its code allows: retries only a site safe to repeat (`idempotent` or an
/// `idempotency_key`; a create is never made to retry), a `timeout` or `deadline` only an async
/// site whose error type takes the runtime's rejections. When the merged policy breaks a rule
/// at a site (a `timeout` over its `deadline`, a `deadline` the retries cannot fit in), that site
/// runs without the override, and says so once at ERROR.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::registry::PolicyOverride;
///
/// let tenant = PolicyOverride::new()
///     .with_retries(1)
///     .with_timeout(Duration::from_secs(2));
/// assert!(tenant.validate().is_ok());
/// let err = PolicyOverride::new().with_retries(50).validate().unwrap_err();
/// assert_eq!(err.field(), "retries");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOverride {
    pub(crate) layer: Layer,
}

impl PolicyOverride {
    /// An override that changes nothing.
    pub const fn new() -> PolicyOverride {
        PolicyOverride {
            layer: Layer::EMPTY,
        }
    }

    /// Sets the extra attempts after the first (0 to 20), at sites safe to repeat.
    pub const fn with_retries(mut self, retries: u32) -> PolicyOverride {
        self.layer.retries = Some(retries);
        self
    }

    /// Sets the whole backoff schedule.
    pub const fn with_backoff(mut self, backoff: Backoff) -> PolicyOverride {
        self.layer.base = Some(backoff.base);
        self.layer.max = Some(backoff.max);
        self.layer.factor = Some(backoff.factor);
        self.layer.jitter = Some(backoff.jitter);
        self
    }

    /// Sets the per-attempt timeout, at async sites that take rejections.
    pub const fn with_timeout(mut self, timeout: Duration) -> PolicyOverride {
        self.layer.timeout = Some(timeout);
        self
    }

    /// Sets the whole call's deadline, at async sites that take rejections.
    pub const fn with_deadline(mut self, deadline: Duration) -> PolicyOverride {
        self.layer.deadline = Some(deadline);
        self
    }

    /// Spends the named retry budget (a tenant's, say) instead of the site's.
    pub fn with_budget(mut self, name: impl Into<Arc<str>>) -> PolicyOverride {
        self.layer.budget = Some(name.into());
        self
    }

    /// Checks the values by the rules `#[resilient]` applies to the same keys: what can be
    /// judged without a site. The rest is judged at each site (see the type's docs).
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::registry::PolicyOverride;
    ///
    /// let err = PolicyOverride::new()
    ///     .with_timeout(Duration::from_secs(60))
    ///     .with_deadline(Duration::from_secs(10))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "timeout");
    /// ```
    ///
    /// # Errors
    ///
    /// - `retries` above 20;
    /// - a duration (`timeout`, `deadline`, backoff `base` and `max`) outside 1 ms to 30 days;
    /// - backoff `base` longer than `max`, a `factor` below 1, a proportional jitter outside 0
    ///   to 1 (the field is `backoff.base`, `backoff.factor`, ...);
    /// - a `timeout` longer than the `deadline`;
    /// - an empty `budget` name.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.layer.check()
    }
}

/// A site's policy merged from its layers, held by its state (the file's) or by one call (with
/// the call's override): what the engine reads instead of the attribute's `&'static Policy`.
#[derive(Debug)]
pub(crate) struct Effective {
    pub(crate) policy: Policy,
    /// The budget the site's retries spend.
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) budget_name: Arc<str>,
    pub(crate) sources: PolicySources,
    /// The file's layer this was merged with (a call's override merges over it again).
    pub(crate) file: Option<Layer>,
}

/// `attr` with `file`, then `call`, over it: the policy, the budget's name when a layer names
/// one, and where each value came from.
pub(crate) fn merge(
    attr: &Policy,
    file: Option<&Layer>,
    call: Option<&Layer>,
) -> (Policy, Option<Arc<str>>, PolicySources) {
    let mut p = *attr;
    let mut sources = PolicySources::ATTRIBUTE;
    let mut budget = None;
    for (layer, source) in [(file, PolicySource::File), (call, PolicySource::Call)] {
        let Some(l) = layer else { continue };
        if let Some(n) = l.retries {
            p.retries = n;
            sources.retries = source;
        }
        if l.sets_backoff() {
            p.backoff = Backoff {
                base: l.base.unwrap_or(p.backoff.base),
                max: l.max.unwrap_or(p.backoff.max),
                factor: l.factor.unwrap_or(p.backoff.factor),
                jitter: l.jitter.unwrap_or(p.backoff.jitter),
            };
            sources.backoff = source;
        }
        if let Some(t) = l.timeout {
            p.timeout = Some(t);
            sources.timeout = source;
        }
        if let Some(d) = l.deadline {
            p.deadline = Some(d);
            sources.deadline = source;
        }
        if let Some(b) = &l.budget {
            budget = Some(b.clone());
            sources.budget = source;
        }
    }
    (p, budget, sources)
}

/// Judges `layer` for the site of `attr`, merged into `merged`, by the rules `#[resilient]`
/// applies at compile time: a site not safe to repeat gets no retries, a blocking site or one
/// that takes no rejections gets no `timeout` or `deadline`, and the merged policy passes
/// [`Policy::validate`] (bounds, a schedule that holds, `timeout <= deadline`, a `deadline` that
/// holds the worst case). The field is the key (`retries`, `backoff.base`).
pub(crate) fn judge(attr: &Policy, layer: &Layer, merged: &Policy) -> Result<(), InvalidConfig> {
    if let Some(n) = layer.retries {
        rules::check_retries_are_safe(n, attr.idempotent, attr.idempotency_key).map_err(|v| {
            v.with_fix(
                "a configuration cannot make an operation safe to repeat: mark the site \
                 `idempotent` (or give it an `idempotency_key`) in code, or remove `retries`",
            )
        })?;
    }
    // Retry settings for a site that never retries (and that no layer may give retries) do
    // nothing; `backoff` also spaces a bulkhead's waits.
    for (key, set) in [
        ("backoff", layer.sets_backoff() && attr.bulkhead.is_none()),
        ("budget", layer.budget.is_some()),
    ] {
        if set {
            rules::check_used_by_retries(key, merged.retries, attr.safe_to_repeat()).map_err(
                |v| {
                    v.with_fix(format!(
                        "remove `{key}`: a configuration cannot make an operation safe to repeat, \
                         so this site never retries; mark it `idempotent` in code first"
                    ))
                },
            )?;
        }
    }
    for (key, set) in [
        ("timeout", layer.timeout.is_some()),
        ("deadline", layer.deadline.is_some()),
    ] {
        if !set {
            continue;
        }
        rules::check_needs_async(key, attr.operation, !attr.blocking)
            .map_err(|v| v.with_fix(format!("remove `{key}`: the site is a blocking fn")))?;
        if !attr.needs_rejected() {
            return Err(InvalidConfig::new(
                key,
                format!(
                    "`{key}` ends a call with the runtime's `Rejected`, and `{}` names nothing the \
                     runtime rejects with (no breaker, timeout, deadline, rate limit or bulkhead), \
                     so its error type need not carry one; give the site a `{key}` in code (the \
                     file then tunes it), or remove `{key}`",
                    attr.operation
                ),
            ));
        }
    }
    merged.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn each_value_comes_from_the_highest_layer_that_sets_it() {
        let attr = Policy::new("list", "m")
            .with_retries(1)
            .idempotent()
            .with_timeout(5 * S);
        let file = Layer {
            retries: Some(3),
            base: Some(S / 2),
            budget: Some("file".into()),
            ..Layer::EMPTY
        };
        let call = Layer {
            retries: Some(2),
            deadline: Some(60 * S),
            ..Layer::EMPTY
        };
        let (p, budget, sources) = merge(&attr, Some(&file), Some(&call));
        assert_eq!(p.retries, 2);
        assert_eq!(p.backoff.base, S / 2);
        assert_eq!(p.backoff.max, Backoff::new().max);
        assert_eq!((p.timeout, p.deadline), (Some(5 * S), Some(60 * S)));
        assert_eq!(budget.as_deref(), Some("file"));
        assert_eq!(
            sources,
            PolicySources {
                retries: PolicySource::Call,
                backoff: PolicySource::File,
                timeout: PolicySource::Attribute,
                deadline: PolicySource::Call,
                budget: PolicySource::File,
            }
        );
        let (same, none, attribute) = merge(&attr, None, None);
        assert_eq!(
            (same, none, attribute),
            (attr, None, PolicySources::ATTRIBUTE)
        );
    }

    #[test]
    fn a_layer_is_judged_against_the_site() {
        let plain = Policy::new("create", "m").with_breaker("b");
        let retries = Layer {
            retries: Some(2),
            ..Layer::EMPTY
        };
        let (merged, ..) = merge(&plain, Some(&retries), None);
        let err = judge(&plain, &retries, &merged).unwrap_err();
        assert_eq!(err.field(), "retries");
        assert!(err.reason().contains("mark the site `idempotent`"), "{err}");

        let untimed = Policy::new("list", "m").idempotent();
        let timeout = Layer {
            timeout: Some(S),
            ..Layer::EMPTY
        };
        let (merged, ..) = merge(&untimed, Some(&timeout), None);
        assert_eq!(
            judge(&untimed, &timeout, &merged).unwrap_err().field(),
            "timeout"
        );
        let blocking = Policy::new("read", "m").with_breaker("b").blocking();
        let (merged, ..) = merge(&blocking, Some(&timeout), None);
        let err = judge(&blocking, &timeout, &merged).unwrap_err();
        assert_eq!(
            err.reason(),
            "`timeout` needs an async fn: a blocking call cannot be interrupted; remove `timeout`: the site is a blocking fn"
        );

        // Retry settings for a site that never retries are refused, by the attribute's rule.
        let backoff = Layer {
            base: Some(S),
            ..Layer::EMPTY
        };
        let (merged, ..) = merge(&plain, Some(&backoff), None);
        let err = judge(&plain, &backoff, &merged).unwrap_err();
        assert_eq!(err.field(), "backoff");
        assert!(err.reason().starts_with("`backoff` has no effect"), "{err}");
        let budget = Layer {
            budget: Some("reads".into()),
            ..Layer::EMPTY
        };
        let (merged, ..) = merge(&plain, Some(&budget), None);
        assert_eq!(
            judge(&plain, &budget, &merged).unwrap_err().field(),
            "budget"
        );
        let (merged, ..) = merge(&untimed, Some(&budget), None);
        assert!(judge(&untimed, &budget, &merged).is_ok());

        // Cross-key rules see the merged policy: the file's timeout over the attribute's deadline.
        let timed = Policy::new("list", "m").with_deadline(10 * S);
        let long = Layer {
            timeout: Some(20 * S),
            ..Layer::EMPTY
        };
        let (merged, ..) = merge(&timed, Some(&long), None);
        assert_eq!(
            judge(&timed, &long, &merged).unwrap_err().field(),
            "timeout"
        );
    }

    #[test]
    fn a_call_override_is_fitted_to_what_the_site_can_take() {
        let layer = Layer {
            retries: Some(2),
            timeout: Some(S),
            ..Layer::EMPTY
        };
        let create = Policy::new("create", "m").with_breaker("b");
        let fitted = layer.fitted_to(&create, true);
        assert_eq!((fitted.retries, fitted.timeout), (None, Some(S)));
        let read = Policy::new("read", "m").idempotent().blocking();
        let fitted = layer.fitted_to(&read, true);
        assert_eq!((fitted.retries, fitted.timeout), (Some(2), None));
    }

    #[test]
    fn values_are_checked_alone_with_their_keys() {
        let cases = [
            (
                Layer {
                    retries: Some(21),
                    ..Layer::EMPTY
                },
                "retries",
            ),
            (
                Layer {
                    base: Some(Duration::ZERO),
                    ..Layer::EMPTY
                },
                "backoff.base",
            ),
            (
                Layer {
                    base: Some(2 * S),
                    max: Some(S),
                    ..Layer::EMPTY
                },
                "backoff.base",
            ),
            (
                Layer {
                    factor: Some(0.5),
                    ..Layer::EMPTY
                },
                "backoff.factor",
            ),
            (
                Layer {
                    timeout: Some(2 * S),
                    deadline: Some(S),
                    ..Layer::EMPTY
                },
                "timeout",
            ),
            (
                Layer {
                    budget: Some(" ".into()),
                    ..Layer::EMPTY
                },
                "budget",
            ),
        ];
        for (layer, field) in cases {
            assert_eq!(layer.check().unwrap_err().field(), field, "{layer:?}");
        }
        assert!(Layer::EMPTY.check().is_ok());
    }
}
