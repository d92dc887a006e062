//! Prometheus / OpenMetrics exposition of the seed's metric families, through
//! [`prometheus-client`](https://docs.rs/prometheus-client) (feature `prometheus`).
//!
//! [`Collector`] reads a [`Registry`]'s counters ([`Registry::metrics`]) and breakers
//! ([`Registry::health`]) at scrape time; nothing is copied on the call path. Register it in your
//! own `prometheus_client` registry (a prefix such as `connector` gives the seed's
//! `connector_requests_total`), or call [`encode`] for a ready exposition:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `requests_total` | counter | `connector`, `operation`, `status` (`ok`, `transient`, `throttled`, `permanent`, `policy_violation`, `auth`) |
//! | `requests_total` | counter | `connector`, `operation`, `status` = `rejected`, `reason` (a [`Rejected::kind`](crate::Rejected::kind): one of [`Rejected::KINDS`](crate::Rejected::KINDS)) |
//! | `request_latency_seconds` | histogram | `connector`, `operation` |
//! | `circuit_breaker_state` | gauge (0 closed, 1 open, 2 half-open) | `connector`: the breaker's name (and `key` for per-key breakers, when enabled) |
//! | `retry_total` | counter | `connector`, `operation` |
//! | `retry_success_total` | counter | `connector`, `operation` |
//! | `retry_budget_exhausted_total` | counter | `connector`, `operation` (retries the retry budget refused) |
//! | `credential_refresh_total` | counter | `connector`, `operation`, `result` (`ok`, `error`); for sites that have refreshed |
//! | `fallback_total` | counter | `connector`, `operation` (calls whose error went to the fallback) |
//! | `rate_limit_total` | counter | `connector`, `result` (`allowed`, `blocked`) |
//! | `rate_limit_wait_seconds` | histogram | `limiter` (waits for the limiter's next permit) |
//! | `breaker_key_evictions_total` | counter | `breaker` (a per-key base: keys evicted to keep its `max_keys`) |
//! | `backend_fallback` | gauge (1 when a shared backend is in fallback, else 0) | `backend` |
//! | `backend_errors_total` | counter | `backend` |
//!
//! The two `backend_*` families appear once the registry has a shared backend (see
//! [`crate::store::Backend`]). A call ended by a rejection is counted under its `reason` only
//! (an attempt's timeout that ended the call is not also a `transient` error). The `connector`
//! label of a site is its `#[resilient(connector = "...")]`, else its crate's name (see
//! [`Policy::connector_name`](crate::engine::Policy::connector_name)).
//!
//! ```
//! use resilience_runtime::{prometheus::Collector, Registry};
//!
//! let mut prom = prometheus_client::registry::Registry::with_prefix("connector");
//! prom.register_collector(Box::new(Collector::new(Registry::global().clone())));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::ErrorClass;
use crate::Registry;
use crate::metrics::{LATENCY_BUCKETS, set_latency_enabled};

type Labels = Vec<(&'static str, String)>;

/// A `prometheus_client` collector over a [`Registry`]. Making one turns on latency measurement
/// ([`set_latency_enabled`]).
#[derive(Debug, Clone)]
pub struct Collector {
    registry: Registry,
    per_key_breakers: bool,
}

impl Collector {
    /// A collector over `registry` (usually [`Registry::global`]).
    pub fn new(registry: Registry) -> Collector {
        set_latency_enabled(true);
        Collector {
            registry,
            per_key_breakers: false,
        }
    }

    /// Also exports one `circuit_breaker_state` series per key of per-key breakers (bounded by
    /// each breaker's `max_keys`, but possibly many series). Off by default. The `key` label is
    /// the key as [`Breaker::key`](crate::breaker::Breaker::key) shows it: `key#` and 16 hex
    /// digits for a base whose keys are sensitive.
    pub fn with_per_key_breakers(mut self, enabled: bool) -> Collector {
        self.per_key_breakers = enabled;
        self
    }
}

/// Encodes `registry`'s metric families in the OpenMetrics text format (what Prometheus scrapes),
/// without a prefix.
///
/// # Errors
///
/// Only the formatter's, which writing to a `String` never returns.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(Collector::new(registry.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &prom)?;
    Ok(out)
}

/// The content type of [`encode`]'s output, for an HTTP response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl EncodeMetric for Histogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), fmt::Error> {
    let mut series = series.into_iter().peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let mut m = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Adds one site's histogram to the series of `labels`.
fn add_histogram(
    map: &mut BTreeMap<Labels, (Vec<u64>, f64)>,
    labels: Labels,
    h: &crate::metrics::LatencySnapshot,
) {
    let acc = map
        .entry(labels)
        .or_insert_with(|| (vec![0; LATENCY_BUCKETS.len() + 1], 0.0));
    for (acc, n) in acc.0.iter_mut().zip(&h.buckets) {
        *acc += n;
    }
    acc.1 += h.sum_seconds;
}

/// Cumulative histograms over [`LATENCY_BUCKETS`], from counts per bucket.
fn histograms(map: BTreeMap<Labels, (Vec<u64>, f64)>) -> impl Iterator<Item = (Labels, Histogram)> {
    let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
    map.into_iter().map(move |(l, (counts, sum))| {
        let buckets: Vec<(f64, u64)> = bounds.clone().zip(counts).collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (
            l,
            Histogram {
                buckets,
                sum,
                count,
            },
        )
    })
}

fn counters(map: BTreeMap<Labels, u64>) -> impl Iterator<Item = (Labels, ConstCounter<u64>)> {
    map.into_iter().map(|(l, v)| (l, ConstCounter::new(v)))
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let snapshot = self.registry.metrics();
        let mut requests: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut latency: BTreeMap<Labels, (Vec<u64>, f64)> = BTreeMap::new();
        let mut retries: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut retry_successes: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut rate: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut budget_exhausted: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut refreshes: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut fallbacks: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut rate_waits: BTreeMap<Labels, (Vec<u64>, f64)> = BTreeMap::new();
        for s in &snapshot.sites {
            let m = &s.metrics;
            let site: Labels = vec![
                ("connector", s.connector.clone()),
                ("operation", s.operation.to_owned()),
            ];
            let statuses = std::iter::once(("ok", m.ok))
                .chain(ErrorClass::ALL.map(|c| (c.as_str(), m.errors.get(c))));
            for (status, n) in statuses {
                let mut l = site.clone();
                l.push(("status", status.to_owned()));
                *requests.entry(l).or_default() += n;
            }
            // A rejection is counted by its kind: `status="rejected"` and a `reason`.
            for (reason, n) in m.rejections.iter() {
                let mut l = site.clone();
                l.push(("status", "rejected".to_owned()));
                l.push(("reason", reason.to_owned()));
                *requests.entry(l).or_default() += n;
            }
            add_histogram(&mut latency, site.clone(), &m.latency);
            *retries.entry(site.clone()).or_default() += m.retries;
            *retry_successes.entry(site.clone()).or_default() += m.retry_successes;
            *budget_exhausted.entry(site.clone()).or_default() += m.budget_exhausted;
            *fallbacks.entry(site.clone()).or_default() += m.fallbacks;
            if m.refreshes > 0 {
                let ok = m.refreshes.saturating_sub(m.refresh_errors);
                for (result, n) in [("ok", ok), ("error", m.refresh_errors)] {
                    let mut l = site.clone();
                    l.push(("result", result.to_owned()));
                    *refreshes.entry(l).or_default() += n;
                }
            }
            if let Some(limiter) = s.rate_limit {
                let l = vec![("limiter", limiter.to_owned())];
                add_histogram(&mut rate_waits, l, &m.rate_limit_wait);
            }
            if m.rate_limit_allowed + m.rate_limit_blocked > 0 {
                for (result, n) in [
                    ("allowed", m.rate_limit_allowed),
                    ("blocked", m.rate_limit_blocked),
                ] {
                    let l = vec![
                        ("connector", s.connector.clone()),
                        ("result", result.to_owned()),
                    ];
                    *rate.entry(l).or_default() += n;
                }
            }
        }

        family(
            &mut encoder,
            "requests",
            "Calls of annotated operations, by outcome.",
            None,
            counters(requests),
        )?;
        family(
            &mut encoder,
            "request_latency",
            "Latency of whole calls (retries and waits included).",
            Some(&Unit::Seconds),
            histograms(latency),
        )?;
        let mut states: Vec<(Labels, ConstGauge)> = Vec::new();
        let per_key = self.per_key_breakers;
        self.registry.each_breaker(&mut |b, key| {
            let labels: Labels = match key {
                None => vec![("connector", b.base_name().to_owned())],
                Some(key) if per_key => vec![
                    ("connector", b.base_name().to_owned()),
                    ("key", key.to_owned()),
                ],
                Some(_) => return,
            };
            states.push((labels, ConstGauge::new(i64::from(b.state().as_gauge()))));
        });
        states.sort_by(|a, b| a.0.cmp(&b.0));
        let states = states.into_iter();
        family(
            &mut encoder,
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            None,
            states,
        )?;
        family(
            &mut encoder,
            "retry",
            "Retries made.",
            None,
            counters(retries),
        )?;
        family(
            &mut encoder,
            "retry_success",
            "Calls that succeeded after at least one retry.",
            None,
            counters(retry_successes),
        )?;
        family(
            &mut encoder,
            "rate_limit",
            "Client-side rate limiter decisions.",
            None,
            counters(rate),
        )?;
        family(
            &mut encoder,
            "rate_limit_wait",
            "Waits for a client-side rate limiter's next permit, as the limiter gave them.",
            Some(&Unit::Seconds),
            histograms(rate_waits),
        )?;
        family(
            &mut encoder,
            "retry_budget_exhausted",
            "Retries the retry budget refused: the call ended with its last error.",
            None,
            counters(budget_exhausted),
        )?;
        family(
            &mut encoder,
            "credential_refresh",
            "Credential refreshes after an auth error, by result.",
            None,
            counters(refreshes),
        )?;
        family(
            &mut encoder,
            "fallback",
            "Calls whose error went to the site's fallback.",
            None,
            counters(fallbacks),
        )?;
        let evictions = snapshot
            .keyed_breakers
            .iter()
            .map(|k| (vec![("breaker", k.breaker.clone())], k.key_evictions))
            .collect();
        family(
            &mut encoder,
            "breaker_key_evictions",
            "Keys of a per-key breaker evicted to keep its max_keys; an evicted key starts closed.",
            None,
            counters(evictions),
        )?;
        let backends = self.registry.backends_health();
        let label =
            |b: &crate::registry::BackendHealth| -> Labels { vec![("backend", b.name.clone())] };
        family(
            &mut encoder,
            "backend_fallback",
            "Whether a shared backend is in fallback (its instances answer from local state).",
            None,
            backends
                .iter()
                .map(|b| (label(b), ConstGauge::new(i64::from(b.backend_fallback)))),
        )?;
        family(
            &mut encoder,
            "backend_errors",
            "Round trips to a shared backend that failed or took longer than their limit.",
            None,
            backends
                .iter()
                .map(|b| (label(b), ConstCounter::new(b.backend_errors_total))),
        )?;
        Ok(())
    }
}
