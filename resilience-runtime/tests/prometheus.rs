//! The seed 001 metric families, scraped and parsed (feature `prometheus`).
#![cfg(feature = "prometheus")]

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use resilience_runtime::breaker::BreakerConfig;
use resilience_runtime::engine::{HookSet, Hooks, Policy, Site, execute};
use resilience_runtime::limit::Gcra;
use resilience_runtime::prometheus::{self, Collector};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};

#[derive(Debug)]
enum E {
    Busy,
    Bad,
    Rejected(Rejected),
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        match self {
            E::Busy => ErrorClass::Transient,
            E::Bad => ErrorClass::Permanent,
            E::Rejected(r) => r.class(),
        }
    }
    fn code(&self) -> Option<&str> {
        match self {
            E::Busy => Some("503"),
            E::Bad => Some("400"),
            E::Rejected(r) => r.code(),
        }
    }
}

impl CarriesRejected for E {
    fn from_rejected(r: Rejected) -> Self {
        E::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            E::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

fn hooks<T>() -> impl HookSet<T, E> {
    Hooks::new().with_from_rejected(E::Rejected)
}

static LIST: Site = Site::new(
    &Policy::new("list_devices", "graph::client")
        .with_retries(2)
        .idempotent()
        .with_breaker("graph"),
);
static SYNC: Site = Site::new(&Policy::new("sync", "graph::client").with_breaker("graph"));
static GET_USER: Site = Site::new(&Policy::new("get_user", "okta::client"));
static SEND: Site =
    Site::new(&Policy::new("send_message", "slack::client").with_rate_limit("slack"));

/// One scripted attempt: a value, or a maker of the error.
type Outcome = Result<u32, fn() -> E>;

async fn run(site: &'static Site, outcomes: &[Outcome]) -> Result<u32, E> {
    let mut i = 0;
    execute(site, hooks(), || {
        let o = outcomes.get(i).cloned().unwrap_or(Ok(0));
        i += 1;
        async move { o.map_err(|f| f()) }
    })
    .await
}

fn sample<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Value {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:#?}");
    &found[0].value
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

#[tokio::test(start_paused = true)]
async fn the_exposition_has_the_seed_families_with_their_labels_and_values() {
    let registry = Registry::new().with_seed(7);
    let collector = Collector::new(registry.clone()); // turns latency on before the calls
    registry
        .configure_breaker(
            "graph",
            BreakerConfig::new()
                .with_failure_threshold(2)
                .with_cooldown(Duration::from_secs(60)),
        )
        .unwrap();
    registry.set_rate_limit(
        "slack",
        std::sync::Arc::new(Gcra::new(1, Duration::from_secs(1))),
    );

    registry
        .scope(async {
            // One retry, then success.
            assert!(run(&LIST, &[Err(|| E::Busy), Ok(1)]).await.is_ok());
            // A permanent failure: counted, never retried.
            assert!(run(&GET_USER, &[Err(|| E::Bad)]).await.is_err());
            // Two transient failures open `graph`; the third call is rejected.
            assert!(run(&SYNC, &[Err(|| E::Busy)]).await.is_err());
            assert!(run(&SYNC, &[Err(|| E::Busy)]).await.is_err());
            assert!(matches!(
                run(&SYNC, &[Ok(1)]).await,
                Err(E::Rejected(Rejected::CircuitOpen { .. }))
            ));
            // One permit per second: the second message is blocked.
            assert!(run(&SEND, &[Ok(1)]).await.is_ok());
            assert!(matches!(
                run(&SEND, &[Ok(1)]).await,
                Err(E::Rejected(Rejected::RateLimited { .. }))
            ));
        })
        .await;

    let text = prometheus::encode(&registry).unwrap();
    let scrape = parse(&text);
    let list = [("connector", "graph"), ("operation", "list_devices")];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = list.to_vec();
        l.push(extra);
        l
    };

    // requests_total{connector, operation, status}
    assert_eq!(
        number(sample(&scrape, "requests_total", &with(("status", "ok")))),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            "requests_total",
            &with(("status", "transient"))
        )),
        0.0
    );
    let user = [
        ("connector", "okta::client"),
        ("operation", "get_user"),
        ("status", "permanent"),
    ];
    assert_eq!(number(sample(&scrape, "requests_total", &user)), 1.0);
    let sync = |status| {
        [
            ("connector", "graph"),
            ("operation", "sync"),
            ("status", status),
        ]
    };
    assert_eq!(
        number(sample(&scrape, "requests_total", &sync("transient"))),
        2.0
    );
    assert_eq!(
        number(sample(&scrape, "requests_total", &sync("rejected"))),
        1.0
    );

    // retry_total / retry_success_total{connector, operation}
    assert_eq!(number(sample(&scrape, "retry_total", &list)), 1.0);
    assert_eq!(number(sample(&scrape, "retry_success_total", &list)), 1.0);
    assert_eq!(
        number(sample(&scrape, "retry_total", &[("operation", "sync")])),
        0.0
    );

    // circuit_breaker_state{connector}: 1 = open
    match sample(&scrape, "circuit_breaker_state", &[("connector", "graph")]) {
        Value::Gauge(v) => assert_eq!(*v, 1.0),
        other => panic!("circuit_breaker_state is a gauge, got {other:?}"),
    }

    // rate_limit_total{connector, result}
    let slack = |result| [("connector", "slack::client"), ("result", result)];
    assert_eq!(
        number(sample(&scrape, "rate_limit_total", &slack("allowed"))),
        1.0
    );
    assert_eq!(
        number(sample(&scrape, "rate_limit_total", &slack("blocked"))),
        1.0
    );

    // request_latency_seconds{connector, operation}: the retried call waited its backoff (~1s of
    // paused time), so it sits above 1s and below 2.5s.
    match sample(&scrape, "request_latency_seconds", &list) {
        Value::Histogram(buckets) => {
            let le = |b: f64| buckets.iter().find(|c| c.less_than == b).map(|c| c.count);
            assert_eq!(le(1.0), Some(0.0), "{buckets:?}");
            assert_eq!(le(2.5), Some(1.0), "{buckets:?}");
            assert_eq!(le(f64::INFINITY), Some(1.0), "{buckets:?}");
        }
        other => panic!("request_latency_seconds is a histogram, got {other:?}"),
    }
    let count = sample(&scrape, "request_latency_seconds_count", &list);
    assert_eq!(number(count), 1.0);

    // Every family is documented.
    for family in [
        "requests_total",
        "request_latency_seconds",
        "circuit_breaker_state",
        "retry_total",
        "retry_success_total",
        "rate_limit_total",
    ] {
        let base = family.strip_suffix("_total").unwrap_or(family);
        assert!(
            scrape.docs.contains_key(base) || scrape.docs.contains_key(family),
            "{family} has no HELP:\n{text}"
        );
    }

    // The same collector in an application's own prometheus-client registry, with the seed's
    // prefix.
    let mut prom = prometheus_client::registry::Registry::with_prefix("connector");
    prom.register_collector(Box::new(collector));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    let scrape = parse(&text);
    assert_eq!(number(sample(&scrape, "connector_retry_total", &list)), 1.0);
}

#[test]
fn an_empty_registry_exposes_no_series() {
    let scrape = parse(&prometheus::encode(&Registry::new()).unwrap());
    assert!(scrape.samples.is_empty());
}

#[tokio::test]
async fn per_key_breakers_are_exported_only_on_request() {
    let registry = Registry::new();
    registry.breaker("graph");
    registry.keyed_breakers("okta").get("tenant-1");
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(
        Collector::new(registry.clone()).with_per_key_breakers(true),
    ));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    let scrape = parse(&text);
    assert_eq!(
        number(sample(
            &scrape,
            "circuit_breaker_state",
            &[("connector", "okta"), ("key", "tenant-1")]
        )),
        0.0
    );
    // Without: `graph`'s state, and the base's evictions (one series per base, not per key).
    let without = parse(&prometheus::encode(&registry).unwrap());
    let names: Vec<&str> = without.samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        ["circuit_breaker_state", "breaker_key_evictions_total"],
        "only `graph` and the base"
    );
}
