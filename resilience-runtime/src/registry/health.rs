//! Health: a snapshot of a registry's breakers whose size does not grow with the keys, and the
//! visits the exports (Prometheus, the axum handler) make of the same instances.

use super::{KeyedBreakers, Registry, SitePolicy};
use crate::breaker::{Breaker, BreakerState};

impl Registry {
    /// A snapshot of every breaker: state, counts and time in state; and the policy in force
    /// at every site called through the registry, with where each value came from.
    ///
    /// Named breakers are listed one by one. A per-key base is summarised, however many keys it
    /// has: its key count by state and its [`KeyedHealth::WORST`] worst keys, so the report's
    /// size does not grow with the tenants. The report is healthy when no named breaker is open
    /// and no base has more than [`KeyedHealth::DEFAULT_OPEN_SHARE`] of its keys open (one
    /// tenant's open breaker does not make the instance unhealthy).
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// let registry = Registry::new();
    /// registry.breaker("graph");
    /// registry.keyed_breakers("okta").get("tenant-1");
    /// let report = registry.health();
    /// assert!(report.healthy);
    /// assert_eq!(report.breakers[0].name, "graph");
    /// assert_eq!(report.keyed[0].keys, 1);
    /// ```
    pub fn health(&self) -> HealthReport {
        let mut breakers: Vec<BreakerHealth> = Vec::new();
        self.inner
            .breakers
            .for_each(|_, b| breakers.push(BreakerHealth::of(b, None)));
        breakers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut keyed: Vec<KeyedHealth> = Vec::new();
        self.inner
            .keyed
            .for_each(|name, k| keyed.push(KeyedHealth::of(name, k)));
        keyed.sort_by(|a, b| a.name.cmp(&b.name));
        let backends = self.backends_health();
        // A backend in fallback does not make the instance unhealthy: its calls go on, decided
        // by local state (see `BackendState::Fallback`).
        let healthy = breakers.iter().all(|b| b.state != BreakerState::Open)
            && keyed
                .iter()
                .all(|k| !k.over_share(KeyedHealth::DEFAULT_OPEN_SHARE));
        HealthReport {
            healthy,
            breakers,
            keyed,
            backends,
            sites: self.site_policies(),
        }
    }

    /// The shared backends' health, sorted by name.
    pub(crate) fn backends_health(&self) -> Vec<BackendHealth> {
        let mut backends: Vec<BackendHealth> = Vec::new();
        self.inner
            .backends
            .for_each(|name, b| backends.push(b.health(name)));
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        backends
    }

    /// Visits every breaker, per-key ones included (for an export that asks for them).
    #[cfg(feature = "prometheus")]
    pub(crate) fn each_breaker(&self, f: &mut dyn FnMut(&Breaker, Option<&str>)) {
        self.inner.breakers.for_each(|_, b| f(b, None));
        self.inner.keyed.for_each(|_, k| k.each(f));
    }

    /// The state of the per-key breaker `base/key`, if that key is live.
    #[cfg(feature = "axum")]
    pub(crate) fn key_state(&self, base: &str, key: &str) -> Option<BreakerState> {
        let k = self.inner.keyed.get(base)?;
        let mut state = None;
        k.each(&mut |b, k| {
            if k == Some(key) {
                state = Some(b.state());
            }
        });
        state
    }
}

/// One breaker in a [`HealthReport`].
///
/// ```
/// use resilience_runtime::{Registry, breaker::BreakerState};
///
/// let registry = Registry::new();
/// registry.keyed_breakers("okta").get("tenant-1");
/// let worst = &registry.health().keyed[0].worst[0];
/// assert_eq!((worst.name.as_str(), worst.key.as_deref()), ("okta/tenant-1", Some("tenant-1")));
/// assert_eq!((worst.state, worst.gauge), (BreakerState::Closed, 0));
/// ```
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
///
/// ```
/// use resilience_runtime::Registry;
///
/// let registry = Registry::new();
/// registry.keyed_breakers("okta").get("tenant-1");
/// let okta = &registry.health().keyed[0];
/// assert_eq!((okta.keys, okta.closed, okta.open), (1, 1, 0));
/// assert!(!okta.over_share(0.5));
/// ```
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
///
/// ```
/// use resilience_runtime::Registry;
///
/// let report = Registry::new().health();
/// assert!(report.healthy && report.breakers.is_empty() && report.keyed.is_empty());
/// assert!(report.sites.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// False when a named breaker is open, or more than half of a base's keys are.
    pub healthy: bool,
    /// The named breakers, sorted by name.
    pub breakers: Vec<BreakerHealth>,
    /// The per-key bases, sorted by name.
    pub keyed: Vec<KeyedHealth>,
    /// The shared backends (see [`crate::store::Backend`]), sorted by name.
    pub backends: Vec<BackendHealth>,
    /// The policy in force at each site called through the registry (its attribute's, with the
    /// configuration's `[sites]` table over it) and where each value came from, sorted by name.
    pub sites: Vec<SitePolicy>,
}

/// Whether a replica shares state through its backend now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendState {
    /// Not reached yet: the instances on it answer from local state.
    Connecting,
    /// Reached: the instances on it share their state with the fleet.
    Shared,
    /// A round trip failed or took longer than its limit: the instances on it answer from local
    /// state (a limiter from an in-process one of the same rate) until the backend answers again.
    Fallback,
}

impl BackendState {
    /// The state's name (`"fallback"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendState::Connecting => "connecting",
            BackendState::Shared => "shared",
            BackendState::Fallback => "fallback",
        }
    }
}

/// One shared backend in a [`HealthReport`].
///
/// ```
/// use resilience_runtime::registry::{BackendHealth, BackendState};
///
/// let h = BackendHealth::new("fleet", "redis", BackendState::Shared);
/// assert!(!h.backend_fallback);
/// assert_eq!(serde_json::to_value(&h).unwrap()["state"], "shared");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BackendHealth {
    /// The backend's name (`[backends.<name>]`).
    pub name: String,
    /// Its kind (`"redis"`).
    pub kind: String,
    /// Where it is, with any password redacted.
    pub url: String,
    /// Sharing, or answering from local state.
    pub state: BackendState,
    /// The state is not [`BackendState::Shared`]: local state decides this replica's calls.
    pub backend_fallback: bool,
    /// Round trips that failed or took longer than their limit.
    pub backend_errors_total: u64,
    /// Times the backend went from sharing to fallback.
    pub fallbacks_total: u64,
}

impl BackendHealth {
    /// A backend's health, with no errors counted.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, state: BackendState) -> Self {
        BackendHealth {
            name: name.into(),
            kind: kind.into(),
            url: String::new(),
            state,
            backend_fallback: state != BackendState::Shared,
            backend_errors_total: 0,
            fallbacks_total: 0,
        }
    }

    /// Sets where it is (redacted by the caller).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets the errors counted.
    pub fn with_errors_total(mut self, errors: u64) -> Self {
        self.backend_errors_total = errors;
        self
    }

    /// Sets the times it fell back.
    pub fn with_fallbacks_total(mut self, fallbacks: u64) -> Self {
        self.fallbacks_total = fallbacks;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
