//! Configuration: [`RegistryConfig`], a whole registry's settings, validated as they are read
//! (from TOML with the `config` feature, or from any serde format), and [`Registry::apply`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use resilience_policy as policy;

use super::fleet::{FleetConfig, RawBackend};
use super::site_policy::Layer;
use super::sites::table_path;
use super::{NamedBreaker, Registry};
use crate::InvalidConfig;
use crate::backoff::Jitter;
use crate::breaker::{BreakerConfig, TripMode};
use crate::budget::BudgetConfig;
use crate::limit::{ConcurrencyLimit, Gcra, RateLimit};

impl Registry {
    /// Applies a whole configuration (see [`RegistryConfig`]). Instances already in use are
    /// reconfigured in place and keep their state; sites see the change on their next call.
    ///
    /// A `[sites."<name>"]` table replaces the one applied before for that site (an empty table
    /// gives the site back its attribute's policy); a site the configuration has no table for
    /// keeps the one it had. A table the site cannot take (see [`RegistryConfig`]) is refused
    /// and logged at ERROR, and the site keeps the policy of its code: check a configuration
    /// against the sites first, with `sites::report(&registry).check(&config)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::{Registry, registry::RegistryConfig};
    ///
    /// let registry = Registry::new();
    /// let graph = registry.breaker("graph");
    /// let cfg: RegistryConfig = serde_json::from_str(r#"{"breakers": {"graph": {"cooldown": "30s"}}}"#).unwrap();
    /// registry.apply(&cfg);
    /// assert_eq!(graph.config().cooldown, Duration::from_secs(30));
    /// ```
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
            let live = self.inner.bulkheads.get(name);
            if !live.is_some_and(|h| h.with(|b| b.resize(*n))) {
                self.set_bulkhead(name, Arc::new(ConcurrencyLimit::new(*n)));
            }
        }
        self.apply_fleet(config);
        // After the budgets: a table that names a budget finds it configured.
        self.apply_site_tables(config.sites.iter().map(|(k, v)| (k.as_str(), v)));
    }
}

/// The field a TOML parse error at byte `at` of `text` is about: the table being defined (a
/// duplicate table), or the table and key of the line (a duplicate key). Empty when the error is
/// before any table.
#[cfg(feature = "config")]
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

/// A field's path as the file spells it: dotted, with a key that is not a bare TOML key quoted
/// (`sites."graph::list".retries`), as the loader's own errors name it.
#[cfg(feature = "config")]
fn path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            _ if !out.is_empty() => out.push('.'),
            _ => {}
        }
        match segment {
            Segment::Map { key } if is_bare(key) => out.push_str(key),
            Segment::Map { key } => {
                let quoted = key.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("\"{quoted}\""));
            }
            Segment::Enum { variant } => out.push_str(variant),
            _ => out.push('?'),
        }
    }
    out
}

/// Whether `key` may be written bare in TOML (`graph`, `rate-limits_2`).
#[cfg(feature = "config")]
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A whole registry's configuration, read from TOML (`from_toml_str`, `from_toml_file`: the
/// `config` feature, on by default) or from any serde format (its `Deserialize` impl, with or
/// without the feature; `from_value` with it, for errors that name the field of a wrong type
/// too), then applied with [`Registry::apply`].
///
/// A `[sites."<name>"]` table tunes the policy of the site named `<name>` (`<module
/// path>::<fn>`, or its `#[resilient(name = "...")]`): `retries`, `backoff = { base, max,
/// factor, jitter }`, `timeout`, `deadline` and `budget = "<budget name>"`, over the
/// attribute's (a per-call override, [`with_policy`](crate::with_policy), wins over both).
/// Idempotency, keys and hooks come from code only. Each value is checked at load by the rules
/// the attribute is checked by at compile time; what needs the site (a `retries` for a site that
/// is not safe to repeat, a `timeout` for a blocking fn, a `deadline` the schedule does not fit
/// in, a table naming no site) is refused by the startup check (`sites::report(..).check`),
/// which knows the sites, and at [`Registry::apply`].
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
///
///     [sites."graph::client::list_devices"]
///     retries = 5
///     backoff = { base = "500ms", max = "8s" }
///     timeout = "5s"
///     budget = "graph-reads"
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
    /// `[backends.*]` and the instances on them (see `fleet`).
    fleet: FleetConfig,
    sites: BTreeMap<String, Layer>,
}

/// A configuration read by any serde format; the values are validated as they are read. Needs no
/// feature: without `config` (and its `toml`), read a configuration this way from the format of
/// your choice. An invalid value's error names its field; a wrong type's or unknown key's names
/// what the format knows (the field too with `RegistryConfig::from_value`).
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
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) breakers: BTreeMap<String, RawBreaker>,
    #[serde(default)]
    pub(super) budgets: BTreeMap<String, RawBudget>,
    #[serde(default)]
    pub(super) rate_limits: BTreeMap<String, RawRateLimit>,
    #[serde(default)]
    bulkheads: BTreeMap<String, RawBulkhead>,
    /// Read by `fleet`.
    #[serde(default)]
    pub(super) backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    sites: BTreeMap<String, RawSite>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    retries: Option<u32>,
    backoff: Option<RawBackoff>,
    timeout: Option<DurationText>,
    deadline: Option<DurationText>,
    budget: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    base: Option<DurationText>,
    max: Option<DurationText>,
    factor: Option<f64>,
    jitter: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    failure_threshold: Option<u32>,
    window: Option<u32>,
    failure_ratio: Option<f64>,
    cooldown: Option<DurationText>,
    half_open_probes: Option<u32>,
    success_threshold: Option<u32>,
    max_keys: Option<usize>,
    idle_ttl: Option<DurationText>,
    sensitive_keys: Option<bool>,
    /// Read by `fleet`.
    pub(super) backend: Option<String>,
    pub(super) quorum: Option<u32>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    capacity: Option<u32>,
    retry_cost: Option<u32>,
    refund: Option<f64>,
    enabled: Option<bool>,
    /// Read by `fleet`.
    pub(super) backend: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    rate: u32,
    per: Option<DurationText>,
    per_key: Option<bool>,
    max_keys: Option<usize>,
    /// Read by `fleet`.
    pub(super) backend: Option<String>,
    pub(super) lease: Option<u32>,
}

/// One configured rate limit: `rate` permits per `per`, in bursts of up to `rate`; with
/// `per_key`, one such quota per key (the call's `breaker_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RateLimitSpec {
    pub(super) rate: u32,
    pub(super) per: Duration,
    pub(super) per_key: bool,
    max_keys: usize,
}

impl RateLimitSpec {
    /// The built-in GCRA, whose pause (a `throttled` hint) lets the burst refill from empty
    /// afterwards; a per-key limit on governor's GCRA (the `governor` feature; rejected at load
    /// time without it).
    fn limiter(&self) -> Arc<dyn RateLimit> {
        #[cfg(feature = "governor")]
        if self.per_key {
            use std::num::NonZeroU32;
            let burst = NonZeroU32::new(self.rate).unwrap_or(NonZeroU32::MIN);
            let period = (self.per / self.rate.max(1)).max(Duration::from_nanos(1));
            if let Some(quota) = ::governor::Quota::with_period(period) {
                let quota = quota.allow_burst(burst);
                return Arc::new(crate::governor::KeyedGovernorLimit::<String>::new(
                    quota,
                    self.max_keys,
                ));
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

/// A duration as written in a file: a string with its unit. A bare number is refused at once
/// with the two ways it could have been meant, since `timeout = 10` says neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DurationText(String);

impl std::ops::Deref for DurationText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with its unit, e.g. \"250ms\", \"30s\", \"1m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(bare(v, v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(bare(v, v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(bare(v, v * 1000.0))
            }
        }
        /// `v` written without a unit: read as seconds, or as `ms` milliseconds.
        fn bare<E: serde::de::Error>(v: impl fmt::Display, ms: impl fmt::Display) -> E {
            E::custom(format_args!(
                "`{v}` has no unit: write \"{v}s\" or \"{ms}ms\" (a string with its unit)"
            ))
        }
        d.deserialize_any(Visitor)
    }
}

/// The duration `text` of `key` in the table at `at`, within the policy's bounds.
pub(super) fn duration(at: &str, key: &str, text: &str) -> Result<Duration, InvalidConfig> {
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
    /// Parses and validates a TOML document (the `config` feature).
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let cfg = RegistryConfig::from_toml_str("[breakers.graph]\nfailure_threshold = 3").unwrap();
    /// assert_eq!(cfg.breaker_names().collect::<Vec<_>>(), ["graph"]);
    /// let err = RegistryConfig::from_toml_str("[breakers.graph]\nfailure_threshold = \"3\"").unwrap_err();
    /// assert_eq!(err.field(), "breakers.graph.failure_threshold");
    /// ```
    ///
    /// # Errors
    ///
    /// Syntax errors, unknown keys, wrong types and invalid values, each naming the field
    /// (`breakers.graph.cooldown`).
    #[cfg(feature = "config")]
    pub fn from_toml_str(s: &str) -> Result<RegistryConfig, InvalidConfig> {
        let de = toml::Deserializer::parse(s).map_err(|e| {
            let field = e.span().map(|at| field_at(s, at.start)).unwrap_or_default();
            let mut reason = e.to_string().trim().to_owned();
            if reason.ends_with("duplicate key") {
                reason.push_str("; each table and each key may appear once: merge the two");
            }
            InvalidConfig::new(field, reason)
        })?;
        Self::from_value(de)
    }

    /// Reads, parses and validates a TOML file; errors name the file too (the `config` feature).
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let path = std::env::temp_dir().join("resilience-doc-from-toml-file.toml");
    /// std::fs::write(&path, "[budgets.graph]\ncapacity = 50").unwrap();
    /// assert!(RegistryConfig::from_toml_file(&path).is_ok());
    /// std::fs::write(&path, "[budgets.graph]\ncapacity = \"50\"").unwrap();
    /// let err = RegistryConfig::from_toml_file(&path).unwrap_err();
    /// assert_eq!(err.file(), Some(path.display().to_string().as_str()));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The file cannot be read, or [`RegistryConfig::from_toml_str`] fails.
    #[cfg(feature = "config")]
    pub fn from_toml_file(
        path: impl AsRef<std::path::Path>,
    ) -> Result<RegistryConfig, InvalidConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            InvalidConfig::new("", format!("cannot read: {e}")).in_file(path.display().to_string())
        })?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path.display().to_string()))
    }

    /// Validates a configuration from any serde format; an error names its field, a wrong type's
    /// and an unknown key's too (the `config` feature, for `serde_path_to_error`).
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let json = serde_json::json!({"breakers": {"graph": {"half_open_probes": "two"}}});
    /// let err = RegistryConfig::from_value(json).unwrap_err();
    /// assert_eq!(err.field(), "breakers.graph.half_open_probes");
    /// ```
    ///
    /// # Errors
    ///
    /// As [`RegistryConfig::from_toml_str`].
    #[cfg(feature = "config")]
    pub fn from_value<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<RegistryConfig, InvalidConfig> {
        let raw: RawConfig = serde_path_to_error::deserialize(d).map_err(|e| {
            InvalidConfig::new(path_of(e.path()), e.inner().to_string().trim().to_owned())
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<RegistryConfig, InvalidConfig> {
        let mut out = RegistryConfig {
            fleet: FleetConfig::validate(&raw)?,
            ..RegistryConfig::default()
        };
        for (name, b) in raw.breakers {
            let table = format!("breakers.{name}");
            let at = |f: &str| format!("{table}.{f}");
            let mut c = BreakerConfig::new();
            match (b.failure_threshold, b.window, b.failure_ratio) {
                (Some(_), window @ Some(_), _) | (Some(_), window @ None, Some(_)) => {
                    // Named at the ratio-mode key that was written.
                    let field = if window.is_some() {
                        "window"
                    } else {
                        "failure_ratio"
                    };
                    return Err(InvalidConfig::new(
                        at(field),
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
            // A limit on a backend keeps per-key quotas itself.
            if per_key && !cfg!(feature = "governor") && !FleetConfig::has_rate_limit(&r) {
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
        for (name, raw) in raw.sites {
            let table = table_path(&name);
            let layer = Self::site_table(&table, raw)?;
            out.sites.insert(name, layer);
        }
        Ok(out)
    }

    /// A `[sites."<name>"]` table's values, each checked alone (what needs the site is checked
    /// by the startup check and at apply).
    fn site_table(table: &str, raw: RawSite) -> Result<Layer, InvalidConfig> {
        let mut layer = Layer {
            retries: raw.retries,
            ..Layer::default()
        };
        if let Some(b) = raw.backoff {
            let at = format!("{table}.backoff");
            if let Some(s) = &b.base {
                layer.base = Some(duration(&at, "base", s)?);
            }
            if let Some(s) = &b.max {
                layer.max = Some(duration(&at, "max", s)?);
            }
            layer.factor = b.factor;
            if let Some(j) = &b.jitter {
                let jitter =
                    Jitter::from_name(j).map_err(|v| InvalidConfig::from(v).within(&at))?;
                layer.jitter = Some(jitter);
            }
        }
        if let Some(s) = &raw.timeout {
            layer.timeout = Some(duration(table, "timeout", s)?);
        }
        if let Some(s) = &raw.deadline {
            layer.deadline = Some(duration(table, "deadline", s)?);
        }
        layer.budget = raw.budget.map(Arc::from);
        layer.check().map_err(|e| e.within(table))?;
        Ok(layer)
    }

    /// The names of the sites the `[sites]` tables configure.
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let cfg = RegistryConfig::from_toml_str("[sites.\"graph::list\"]\nretries = 1").unwrap();
    /// assert_eq!(cfg.site_names().collect::<Vec<_>>(), ["graph::list"]);
    /// ```
    pub fn site_names(&self) -> impl Iterator<Item = &str> {
        self.sites.keys().map(String::as_str)
    }

    /// The `[sites]` table of `name`, if any.
    #[cfg(feature = "sites")]
    pub(crate) fn site_table_of(&self, name: &str) -> Option<&Layer> {
        self.sites.get(name)
    }

    /// The names of the configured breakers.
    ///
    /// ```
    /// use resilience_runtime::registry::RegistryConfig;
    ///
    /// let cfg: RegistryConfig = serde_json::from_str(r#"{"breakers": {"okta": {}, "graph": {}}}"#).unwrap();
    /// assert_eq!(cfg.breaker_names().collect::<Vec<_>>(), ["graph", "okta"]);
    /// ```
    pub fn breaker_names(&self) -> impl Iterator<Item = &str> {
        self.breakers.keys().map(String::as_str)
    }

    /// The backends and the instances on them.
    pub(super) fn fleet(&self) -> &FleetConfig {
        &self.fleet
    }

    /// The settings of the rate limit `name`.
    #[cfg(feature = "redis")]
    pub(super) fn rate_limit_spec(&self, name: &str) -> Option<&RateLimitSpec> {
        self.rate_limits.get(name)
    }
}

#[cfg(all(test, feature = "config"))]
mod tests {
    use super::*;

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
            // The breaker, bulkhead and budget values a definition can get wrong, each refused
            // at load with its field (the bounds of `resilience_policy`).
            (
                "[breakers.graph]\nhalf_open_probes = 0",
                "breakers.graph.half_open_probes",
            ),
            (
                "[breakers.graph]\nwindow = 20\nfailure_ratio = 0.5\nhalf_open_probes = 30",
                "breakers.graph.half_open_probes",
            ),
            (
                "[breakers.graph]\nsuccess_threshold = 0",
                "breakers.graph.success_threshold",
            ),
            (
                "[breakers.graph]\nsuccess_threshold = 300",
                "breakers.graph.success_threshold",
            ),
            (
                "[breakers.graph]\nwindow = 0\nfailure_ratio = 0.5",
                "breakers.graph.window",
            ),
            (
                "[breakers.graph]\nwindow = 20\nfailure_ratio = 0.0",
                "breakers.graph.failure_ratio",
            ),
            (
                "[breakers.graph]\ncooldown = \"0s\"",
                "breakers.graph.cooldown",
            ),
            (
                "[breakers.graph]\nidle_ttl = \"0s\"",
                "breakers.graph.idle_ttl",
            ),
            ("[breakers.graph]\nmax_keys = 0", "breakers.graph.max_keys"),
            ("[budgets.graph]\ncapacity = 0", "budgets.graph.capacity"),
            (
                "[budgets.graph]\ncapacity = 10\nretry_cost = 20",
                "budgets.graph.retry_cost",
            ),
            ("[budgets.graph]\nrefund = -1.0", "budgets.graph.refund"),
            (
                "[rate_limits.graph]\nrate = 5\nper = \"0s\"",
                "rate_limits.graph.per",
            ),
            ("[rate_limits.graph]\nrate = 0", "rate_limits.graph.rate"),
            (
                "[bulkheads.graph]\nmax_concurrent = 0",
                "bulkheads.graph.max_concurrent",
            ),
            (
                "[sites.\"graph::list\"]\nretires = 3",
                "sites.\"graph::list\".retires",
            ),
            (
                "[sites.\"graph::list\"]\nretries = \"3\"",
                "sites.\"graph::list\".retries",
            ),
            (
                "[sites.\"graph::list\"]\nretries = 21",
                "sites.\"graph::list\".retries",
            ),
            (
                "[sites.graph]\nbackoff = { bse = \"1s\" }",
                "sites.graph.backoff.bse",
            ),
            (
                "[sites.\"graph::list\"]\nbackoff = { base = \"soon\" }",
                "sites.\"graph::list\".backoff.base",
            ),
            (
                "[sites.\"graph::list\"]\nbackoff = { base = \"2s\", max = \"1s\" }",
                "sites.\"graph::list\".backoff.base",
            ),
            (
                "[sites.\"graph::list\"]\nbackoff = { factor = 0.5 }",
                "sites.\"graph::list\".backoff.factor",
            ),
            (
                "[sites.\"graph::list\"]\nbackoff = { jitter = \"gaussian\" }",
                "sites.\"graph::list\".backoff.jitter",
            ),
            (
                "[sites.\"graph::list\"]\ntimeout = \"0s\"",
                "sites.\"graph::list\".timeout",
            ),
            (
                "[sites.\"graph::list\"]\ntimeout = \"1m\"\ndeadline = \"10s\"",
                "sites.\"graph::list\".timeout",
            ),
            (
                "[sites.\"graph::list\"]\ndeadline = \"31days\"",
                "sites.\"graph::list\".deadline",
            ),
            (
                "[sites.\"graph::list\"]\nbudget = \" \"",
                "sites.\"graph::list\".budget",
            ),
            (
                "[sites.\"graph::list\"]\nidempotent = true",
                "sites.\"graph::list\".idempotent",
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
    fn a_sites_table_keeps_what_it_sets_and_its_errors_say_what_to_write() {
        let cfg = RegistryConfig::from_toml_str(
            "[sites.\"graph::list\"]\nretries = 5\nbackoff = { base = \"500ms\", max = \"8s\", factor = 3, jitter = \"full\" }\ntimeout = \"5s\"\ndeadline = \"2m\"\nbudget = \"graph-reads\"\n[sites.empty]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.site_names().collect::<Vec<_>>(),
            ["empty", "graph::list"]
        );
        let table = &cfg.sites["graph::list"];
        assert_eq!(
            *table,
            Layer {
                retries: Some(5),
                base: Some(Duration::from_millis(500)),
                max: Some(Duration::from_secs(8)),
                factor: Some(3.0),
                jitter: Some(Jitter::Full),
                timeout: Some(Duration::from_secs(5)),
                deadline: Some(Duration::from_secs(120)),
                budget: Some("graph-reads".into()),
            }
        );
        assert_eq!(cfg.sites["empty"], Layer::default());
        let err =
            RegistryConfig::from_toml_str("[sites.\"graph::list\"]\nretries = 21").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sites.\"graph::list\".retries`: `retries = 21` is above the limit of 20; lower it (a `deadline` bounds a long outage better than more retries)"
        );
        let err = RegistryConfig::from_toml_str("[sites.\"graph::list\"]\nidempotent = true")
            .unwrap_err();
        // Idempotency comes from code only.
        assert!(
            err.reason().ends_with(
                "unknown field `idempotent`, expected one of `retries`, `backoff`, `timeout`, `deadline`, `budget`"
            ),
            "{err}"
        );
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
}
