//! Fleets: the `[backends.<name>]` tables of a configuration, the `backend`, `quorum` and `lease`
//! keys that put a breaker, budget or rate limit on one, and what [`Registry::apply`] does with
//! them. Kept apart from the rest of the configuration so that each can change alone.
//!
//! ```toml
//! [backends.fleet]
//! kind = "redis"
//! url = "redis://127.0.0.1:6379"
//! key_prefix = "graph-connector:"   # default "resilience:"
//! round_trip_limit = "5ms"          # default 5ms
//! sync_interval = "500ms"           # default 500ms
//!
//! [breakers.graph]
//! backend = "fleet"
//! quorum = 2                        # replicas that must trip it to open it for all (default 1)
//!
//! [rate_limits.graph]
//! rate = 100
//! backend = "fleet"
//! lease = 5                         # permits per round trip (default 1)
//!
//! [budgets.graph]
//! backend = "fleet"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use super::Registry;
use super::config::{RawConfig, RegistryConfig};
use crate::InvalidConfig;

/// A `[backends.<name>]` table as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    kind: Option<String>,
    url: Option<String>,
    key_prefix: Option<String>,
    round_trip_limit: Option<super::config::DurationText>,
    sync_interval: Option<super::config::DurationText>,
}

impl fmt::Debug for RawBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RawBackend")
            .field("kind", &self.kind)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A configuration's backends, and the instances it puts on them.
#[derive(Debug, Clone, Default)]
pub(super) struct FleetConfig {
    backends: BTreeMap<String, BackendSpec>,
    /// Breaker name -> (backend, quorum).
    breakers: BTreeMap<String, (String, u32)>,
    /// Budget name -> backend.
    budgets: BTreeMap<String, String>,
    /// Rate limit name -> (backend, lease).
    rate_limits: BTreeMap<String, (String, u32)>,
}

/// One backend's settings.
#[derive(Debug, Clone)]
enum BackendSpec {
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisConfig),
}

/// The largest `quorum`: more replicas than any fleet this is meant for.
const MAX_QUORUM: u32 = 1_000;
/// The largest `lease`.
const MAX_LEASE: u32 = 10_000;

impl FleetConfig {
    /// Reads the backends and the `backend`, `quorum` and `lease` keys of `raw`'s tables.
    ///
    /// # Errors
    ///
    /// A backend of another kind than `redis` (or `redis` without the feature), without a
    /// `url`, with a bad URL, prefix or duration; an instance naming a backend that is not
    /// there; a `quorum` or `lease` out of bounds or without a `backend`. Each names its field.
    pub(super) fn validate(raw: &RawConfig) -> Result<FleetConfig, InvalidConfig> {
        let mut out = FleetConfig::default();
        for (name, b) in &raw.backends {
            out.backends
                .insert(name.clone(), backend(&format!("backends.{name}"), b)?);
        }
        let known =
            |table: &str, backend: &Option<String>| -> Result<Option<String>, InvalidConfig> {
                let Some(b) = backend else {
                    return Ok(None);
                };
                if out.backends.contains_key(b) {
                    return Ok(Some(b.clone()));
                }
                let names: Vec<&str> = out.backends.keys().map(String::as_str).collect();
                Err(InvalidConfig::new(
                    format!("{table}.backend"),
                    if names.is_empty() {
                        format!("`{b}` names no backend; add a `[backends.{b}]` table")
                    } else {
                        format!(
                            "`{b}` names no backend; the backends are: {}",
                            names.join(", ")
                        )
                    },
                ))
            };
        let mut breakers = BTreeMap::new();
        for (name, b) in &raw.breakers {
            let table = format!("breakers.{name}");
            let on = known(&table, &b.backend)?;
            let quorum = bounded(&table, "quorum", b.quorum, MAX_QUORUM, on.is_some())?;
            if let Some(on) = on {
                breakers.insert(name.clone(), (on, quorum));
            }
        }
        let mut budgets = BTreeMap::new();
        for (name, b) in &raw.budgets {
            if let Some(on) = known(&format!("budgets.{name}"), &b.backend)? {
                budgets.insert(name.clone(), on);
            }
        }
        let mut rate_limits = BTreeMap::new();
        for (name, r) in &raw.rate_limits {
            let table = format!("rate_limits.{name}");
            let on = known(&table, &r.backend)?;
            let lease = bounded(&table, "lease", r.lease, MAX_LEASE, on.is_some())?;
            if let Some(on) = on {
                rate_limits.insert(name.clone(), (on, lease));
            }
        }
        out.breakers = breakers;
        out.budgets = budgets;
        out.rate_limits = rate_limits;
        Ok(out)
    }

    /// Whether the rate limit `name` is on a backend (which keeps per-key quotas itself).
    pub(super) fn has_rate_limit(raw: &super::config::RawRateLimit) -> bool {
        raw.backend.is_some()
    }
}

/// `key`, a count of 1 to `max` (1 when absent) that needs a `backend` in its table.
fn bounded(
    table: &str,
    key: &str,
    value: Option<u32>,
    max: u32,
    on_backend: bool,
) -> Result<u32, InvalidConfig> {
    let Some(v) = value else {
        return Ok(1);
    };
    if !on_backend {
        return Err(InvalidConfig::new(
            format!("{table}.{key}"),
            format!(
                "`{key}` is for an instance shared on a backend; add `backend = \"<name>\"` or remove it"
            ),
        ));
    }
    if !(1..=max).contains(&v) {
        return Err(InvalidConfig::new(
            format!("{table}.{key}"),
            format!("`{key} = {v}` is outside 1..={max}"),
        ));
    }
    Ok(v)
}

/// A `[backends.<name>]` table at `table`.
fn backend(table: &str, raw: &RawBackend) -> Result<BackendSpec, InvalidConfig> {
    let at = |k: &str| format!("{table}.{k}");
    let kind = raw
        .kind
        .as_deref()
        .ok_or_else(|| InvalidConfig::new(at("kind"), "is missing; write `kind = \"redis\"`"))?;
    if kind != "redis" {
        return Err(InvalidConfig::new(
            at("kind"),
            format!("`{kind}` is not a backend kind; the one kind is \"redis\""),
        ));
    }
    let url = raw.url.as_deref().ok_or_else(|| {
        InvalidConfig::new(
            at("url"),
            "is missing; write the server's URL, e.g. `url = \"redis://127.0.0.1:6379\"`",
        )
    })?;
    let durations = [
        ("round_trip_limit", &raw.round_trip_limit),
        ("sync_interval", &raw.sync_interval),
    ];
    let mut parsed = [None, None];
    for ((key, text), out) in durations.into_iter().zip(parsed.iter_mut()) {
        if let Some(t) = text {
            *out = Some(super::config::duration(table, key, t)?);
        }
    }
    redis_spec(table, url, raw.key_prefix.as_deref(), parsed)
}

#[cfg(feature = "redis")]
fn redis_spec(
    table: &str,
    url: &str,
    prefix: Option<&str>,
    [limit, interval]: [Option<std::time::Duration>; 2],
) -> Result<BackendSpec, InvalidConfig> {
    let mut c = crate::redis::RedisConfig::new(url).map_err(|e| e.within(table))?;
    if let Some(p) = prefix {
        c = c.with_key_prefix(p).map_err(|e| e.within(table))?;
    }
    if let Some(d) = limit {
        c = c.with_round_trip_limit(d);
    }
    if let Some(d) = interval {
        c = c.with_sync_interval(d);
    }
    Ok(BackendSpec::Redis(c))
}

#[cfg(not(feature = "redis"))]
fn redis_spec(
    table: &str,
    _: &str,
    _: Option<&str>,
    _: [Option<std::time::Duration>; 2],
) -> Result<BackendSpec, InvalidConfig> {
    Err(InvalidConfig::new(
        format!("{table}.kind"),
        "`kind = \"redis\"` needs the `redis` feature of resilience-runtime",
    ))
}

/// What a registry has put on backends: the backends by name, and the breaker and budget names
/// on each, attached to their instances as they are made.
#[cfg(feature = "redis")]
#[derive(Default)]
pub(super) struct Attachments {
    backends: super::named::Named<crate::redis::RedisBackend>,
    breakers: super::named::Named<Option<(crate::redis::RedisBackend, u32)>>,
    budgets: super::named::Named<Option<crate::redis::RedisBackend>>,
}

impl Registry {
    /// The Redis backend a configuration applied to this registry named `name`
    /// (`[backends.<name>]`), to wait for its syncs or read its state.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let registry = Registry::new();
    /// registry.apply(&RegistryConfig::from_toml_str(r#"
    ///     [backends.fleet]
    ///     kind = "redis"
    ///     url = "redis://127.0.0.1:6379"
    /// "#).unwrap());
    /// let fleet = registry.redis_backend("fleet").unwrap();
    /// assert_eq!(fleet.config().sync_interval(), std::time::Duration::from_millis(500));
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_backend(&self, name: &str) -> Option<crate::redis::RedisBackend> {
        self.inner.fleet.backends.get(name)
    }

    /// Puts the named breaker `b`, just made, on its backend, if the configuration names one.
    pub(super) fn attach_breaker(&self, name: &str, b: &std::sync::Arc<crate::breaker::Breaker>) {
        #[cfg(feature = "redis")]
        if let Some(Some((backend, quorum))) = self.inner.fleet.breakers.get(name) {
            backend.attach_breaker(b, quorum);
        }
        let _ = (name, b);
    }

    /// Puts the per-key base `k`, just made, on its backend, if the configuration names one.
    pub(super) fn attach_keyed(&self, name: &str, k: &std::sync::Arc<super::KeyedBreakers>) {
        #[cfg(feature = "redis")]
        if let Some(Some((backend, quorum))) = self.inner.fleet.breakers.get(name) {
            backend.attach_keyed(k, quorum);
        }
        let _ = (name, k);
    }

    /// Puts the budget `b`, just made, on its backend, if the configuration names one.
    pub(super) fn attach_budget(&self, name: &str, b: &std::sync::Arc<crate::budget::RetryBudget>) {
        #[cfg(feature = "redis")]
        if let Some(Some(backend)) = self.inner.fleet.budgets.get(name) {
            backend.attach_budget(name, b);
        }
        let _ = (name, b);
    }

    /// Applies the backends of `config` and puts its instances on them: a backend whose
    /// settings did not change is kept (with its connection); instances made already are
    /// attached now, the others when they are made; an instance whose table no longer names a
    /// backend is served from local state alone again.
    pub(super) fn apply_fleet(&self, config: &RegistryConfig) {
        let fleet = config.fleet();
        // Without a backend feature, validation leaves `fleet` empty.
        #[cfg(feature = "redis")]
        self.apply_redis(fleet, config);
        let _ = fleet;
    }

    #[cfg(feature = "redis")]
    fn apply_redis(&self, fleet: &FleetConfig, config: &RegistryConfig) {
        use std::sync::Arc;

        use crate::redis::RedisBackend;
        let att = &self.inner.fleet;
        let mut made: BTreeMap<&str, RedisBackend> = BTreeMap::new();
        for (name, spec) in &fleet.backends {
            let BackendSpec::Redis(c) = spec;
            let backend = match att.backends.get(name) {
                Some(b) if b.config() == c => b,
                _ => RedisBackend::new(c.clone()),
            };
            att.backends.update(name, |_| backend.clone());
            self.add_backend(name, Arc::new(backend.clone()));
            backend.start();
            made.insert(name, backend);
        }
        let mut breaker_names = Vec::new();
        att.breakers
            .for_each(|n, _| breaker_names.push(n.to_owned()));
        for name in breaker_names {
            if !fleet.breakers.contains_key(&name) {
                att.breakers.update(&name, |_| None);
                if let Some(b) = self.inner.breakers.get(&name) {
                    b.clear_store();
                }
                if let Some(k) = self.inner.keyed.get(&name) {
                    k.clear_store();
                }
            }
        }
        for (name, (on, quorum)) in &fleet.breakers {
            let Some(backend) = made.get(on.as_str()) else {
                continue;
            };
            att.breakers
                .update(name, |_| Some((backend.clone(), *quorum)));
            if let Some(b) = self.inner.breakers.get(name) {
                backend.attach_breaker(&b, *quorum);
            }
            if let Some(k) = self.inner.keyed.get(name) {
                backend.attach_keyed(&k, *quorum);
            }
        }
        let mut budget_names = Vec::new();
        att.budgets.for_each(|n, _| budget_names.push(n.to_owned()));
        for name in budget_names {
            if !fleet.budgets.contains_key(&name) {
                att.budgets.update(&name, |_| None);
                if let Some(b) = self.inner.budgets.get(&name) {
                    b.clear_store();
                }
            }
        }
        for (name, on) in &fleet.budgets {
            let Some(backend) = made.get(on.as_str()) else {
                continue;
            };
            att.budgets.update(name, |_| Some(backend.clone()));
            if let Some(b) = self.inner.budgets.get(name) {
                backend.attach_budget(name, &b);
            }
        }
        for (name, (on, lease)) in &fleet.rate_limits {
            let (Some(backend), Some(spec)) = (made.get(on.as_str()), config.rate_limit_spec(name))
            else {
                continue;
            };
            let limit = backend
                .rate_limit(name, spec.rate, spec.per)
                .per_key(spec.per_key)
                .with_lease(*lease);
            self.set_rate_limit(name, Arc::new(limit));
        }
    }
}
