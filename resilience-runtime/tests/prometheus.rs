//! The seed 001 metric families, scraped and parsed (feature `prometheus`).
#![cfg(feature = "prometheus")]

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use resilience_runtime::breaker::BreakerConfig;
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::engine::Execution;
use resilience_runtime::engine::{HookSet, Hooks, Policy, Site, execute};
use resilience_runtime::limit::{ConcurrencyLimit, Gcra};
use resilience_runtime::prometheus::{self, Collector};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};

#[derive(Debug)]
enum E {
    Busy,
    Bad,
    Expired,
    Rejected(Rejected),
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        match self {
            E::Busy => ErrorClass::Transient,
            E::Bad => ErrorClass::Permanent,
            E::Expired => ErrorClass::Auth,
            E::Rejected(r) => r.class(),
        }
    }
    fn code(&self) -> Option<&str> {
        match self {
            E::Busy => Some("503"),
            E::Bad => Some("400"),
            E::Expired => Some("401"),
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
    // A site without a breaker is labelled with its crate (the first segment of its module
    // path), as one with a breaker is.
    let user = [
        ("connector", "okta"),
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
    // A rejection is counted by its kind; the other kinds are there, at 0.
    let rejected = |reason| {
        [
            ("connector", "graph"),
            ("operation", "sync"),
            ("status", "rejected"),
            ("reason", reason),
        ]
    };
    assert_eq!(
        number(sample(&scrape, "requests_total", &rejected("circuit_open"))),
        1.0
    );
    assert_eq!(
        number(sample(&scrape, "requests_total", &rejected("timeout"))),
        0.0
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
    let slack = |result| [("connector", "slack"), ("result", result)];
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
        "rate_limit_wait_seconds",
        "retry_budget_exhausted_total",
        "fallback_total",
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

static SLOW: Site =
    Site::new(&Policy::new("slow", "okta::client").with_timeout(Duration::from_millis(100)));
static LATE: Site =
    Site::new(&Policy::new("late", "okta::client").with_deadline(Duration::from_millis(500)));
static HELD: Site = Site::new(&Policy::new("held", "okta::client").with_bulkhead("okta-pool"));
static SPENT: Site = Site::new(
    &Policy::new("spent", "okta::client")
        .with_retries(3)
        .idempotent()
        .with_budget("tight"),
);
static AUTHED: Site = Site::new(&Policy::new("authed", "okta::client"));
static FALLS: Site = Site::new(&Policy::new("falls", "okta::client"));
/// Waits for its permit: its retry schedule leaves room for the limiter's wait.
static PACED: Site = Site::new(
    &Policy::new("paced", "okta::client")
        .with_retries(2)
        .idempotent()
        .with_rate_limit("okta-api"),
);
static NAMED: Site = Site::new(&Policy::new("named", "okta::client").with_connector("okta-admin"));

/// One call that sleeps `d` (paused time) and then succeeds.
async fn sleeps(site: &'static Site, d: Duration) -> Result<u32, E> {
    execute(site, hooks(), || async move {
        tokio::time::sleep(d).await;
        Ok(1)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn each_event_is_exported_with_its_labels() {
    let registry = Registry::new().with_seed(7);
    registry.set_bulkhead("okta-pool", std::sync::Arc::new(ConcurrencyLimit::new(1)));
    // One retry's worth of tokens, no refund.
    registry
        .configure_budget(
            "tight",
            BudgetConfig::new()
                .with_capacity(5)
                .with_retry_cost(5)
                .with_refund_milli(0),
        )
        .unwrap();
    registry.set_rate_limit(
        "okta-api",
        std::sync::Arc::new(Gcra::new(1, Duration::from_secs(1))),
    );

    registry
        .scope(async {
            // An attempt longer than its timeout.
            assert!(matches!(
                sleeps(&SLOW, Duration::from_secs(1)).await,
                Err(E::Rejected(Rejected::AttemptTimeout { .. }))
            ));
            // An attempt the deadline stopped.
            assert!(matches!(
                sleeps(&LATE, Duration::from_secs(1)).await,
                Err(E::Rejected(Rejected::DeadlineExceeded { .. }))
            ));
            // A second call while the first holds the bulkhead's one slot.
            let (first, second) = tokio::join!(sleeps(&HELD, Duration::from_secs(1)), async {
                tokio::task::yield_now().await;
                sleeps(&HELD, Duration::ZERO).await
            });
            assert!(first.is_ok());
            assert!(matches!(
                second,
                Err(E::Rejected(Rejected::BulkheadFull { .. }))
            ));
            // The budget pays the first retry, refuses the second: the call ends with its error.
            let r = run(&SPENT, &[Err(|| E::Busy), Err(|| E::Busy), Ok(1)]).await;
            assert!(matches!(r, Err(E::Busy)));
            // A refused credential, refreshed, then the call succeeds; then a refresh that fails.
            let mut expired = true;
            let ok = Execution::new(&AUTHED, hooks())
                .refresh(|| async { Ok::<(), E>(()) })
                .run(|| {
                    let r = if std::mem::take(&mut expired) {
                        Err(E::Expired)
                    } else {
                        Ok(1)
                    };
                    async move { r }
                })
                .await;
            assert_eq!(ok.unwrap(), 1);
            let failed = Execution::new(&AUTHED, hooks())
                .refresh(|| async { Err::<(), E>(E::Bad) })
                .run(|| async { Err::<u32, E>(E::Expired) })
                .await;
            assert!(matches!(failed, Err(E::Bad)));
            // The fallback answers a failed call.
            let fell = execute(
                &FALLS,
                Hooks::new()
                    .with_from_rejected(E::Rejected)
                    .with_fallback(|_: E| Ok(9)),
                || async { Err::<u32, E>(E::Bad) },
            )
            .await;
            assert_eq!(fell.unwrap(), 9);
            // One permit a second: the second call waits a second for its permit.
            let started = tokio::time::Instant::now();
            assert!(run(&PACED, &[Ok(1)]).await.is_ok());
            assert!(run(&PACED, &[Ok(1)]).await.is_ok());
            assert_eq!(started.elapsed(), Duration::from_secs(1));
            assert!(run(&NAMED, &[Ok(1)]).await.is_ok());
        })
        .await;

    let text = prometheus::encode(&registry).unwrap();
    let scrape = parse(&text);
    let op = |operation| [("connector", "okta"), ("operation", operation)];
    let rejected = |operation, reason| {
        [
            ("connector", "okta"),
            ("operation", operation),
            ("status", "rejected"),
            ("reason", reason),
        ]
    };
    for (operation, reason) in [
        ("slow", "timeout"),
        ("late", "deadline_exceeded"),
        ("held", "bulkhead_full"),
    ] {
        assert_eq!(
            number(sample(
                &scrape,
                "requests_total",
                &rejected(operation, reason)
            )),
            1.0,
            "{operation}: {reason}\n{text}"
        );
        // Counted once, as the rejection, not also as a transient error.
        let transient = [
            ("connector", "okta"),
            ("operation", operation),
            ("status", "transient"),
        ];
        assert_eq!(number(sample(&scrape, "requests_total", &transient)), 0.0);
    }
    // Each site has one series per kind of rejection; none has a lump `rejected` without one.
    let kinds: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "requests_total" && s.labels.get("operation") == Some("slow"))
        .filter(|s| s.labels.get("status") == Some("rejected"))
        .map(|s| s.labels.get("reason").expect("a reason"))
        .collect();
    assert_eq!(kinds.len(), Rejected::KINDS.len());
    assert!(
        Rejected::KINDS.iter().all(|k| kinds.contains(k)),
        "{kinds:?}"
    );

    // retry_budget_exhausted_total{connector, operation}
    assert_eq!(
        number(sample(
            &scrape,
            "retry_budget_exhausted_total",
            &op("spent")
        )),
        1.0
    );
    assert_eq!(number(sample(&scrape, "retry_total", &op("spent"))), 1.0);
    assert_eq!(
        number(sample(&scrape, "retry_budget_exhausted_total", &op("slow"))),
        0.0
    );

    // credential_refresh_total{connector, operation, result}
    let refresh = |result| {
        [
            ("connector", "okta"),
            ("operation", "authed"),
            ("result", result),
        ]
    };
    assert_eq!(
        number(sample(&scrape, "credential_refresh_total", &refresh("ok"))),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            "credential_refresh_total",
            &refresh("error")
        )),
        1.0
    );
    // Only sites that refreshed have the series.
    let refreshed: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "credential_refresh_total")
        .map(|s| s.labels.get("operation").unwrap())
        .collect();
    assert_eq!(refreshed, ["authed", "authed"]);

    // fallback_total{connector, operation}
    assert_eq!(number(sample(&scrape, "fallback_total", &op("falls"))), 1.0);
    assert_eq!(number(sample(&scrape, "fallback_total", &op("slow"))), 0.0);

    // rate_limit_wait_seconds{limiter}: one wait of one second.
    let limiter = [("limiter", "okta-api")];
    match sample(&scrape, "rate_limit_wait_seconds", &limiter) {
        Value::Histogram(buckets) => {
            let le = |b: f64| buckets.iter().find(|c| c.less_than == b).map(|c| c.count);
            assert_eq!(le(0.5), Some(0.0), "{buckets:?}");
            assert_eq!(le(1.0), Some(1.0), "{buckets:?}");
        }
        other => panic!("rate_limit_wait_seconds is a histogram, got {other:?}"),
    }
    assert_eq!(
        number(sample(&scrape, "rate_limit_wait_seconds_count", &limiter)),
        1.0
    );
    assert_eq!(
        number(sample(&scrape, "rate_limit_wait_seconds_sum", &limiter)),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            "rate_limit_total",
            &[("connector", "okta"), ("result", "blocked")]
        )),
        1.0
    );

    // `with_connector` sets the label.
    let named = [
        ("connector", "okta-admin"),
        ("operation", "named"),
        ("status", "ok"),
    ];
    assert_eq!(number(sample(&scrape, "requests_total", &named)), 1.0);

    // The snapshot says the same.
    let m = registry.metrics();
    let slow = &m.site("slow").unwrap().metrics;
    assert_eq!(slow.rejected, 1);
    assert_eq!(slow.rejections.get("timeout"), Some(1));
    let authed = &m.site("authed").unwrap().metrics;
    assert_eq!((authed.refreshes, authed.refresh_errors), (2, 1));
    let paced = &m.site("paced").unwrap().metrics;
    assert_eq!(paced.rate_limit_wait.count(), 1);
}

static SLOW_REFRESH: Site = Site::new(
    &Policy::new("slow_refresh", "okta::client").with_deadline(Duration::from_millis(500)),
);

#[tokio::test(start_paused = true)]
async fn a_refresh_the_deadline_cuts_short_is_a_failed_refresh_and_a_deadline_rejection() {
    let registry = Registry::new();
    let r = registry
        .scope(
            Execution::new(&SLOW_REFRESH, hooks())
                .refresh(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok::<(), E>(())
                })
                .run(|| async { Err::<u32, E>(E::Expired) }),
        )
        .await;
    assert!(matches!(
        r,
        Err(E::Rejected(Rejected::DeadlineExceeded { .. }))
    ));
    let scrape = parse(&prometheus::encode(&registry).unwrap());
    let op = [("connector", "okta"), ("operation", "slow_refresh")];
    let with = |k, v| {
        let mut l = op.to_vec();
        l.push((k, v));
        l
    };
    assert_eq!(
        number(sample(
            &scrape,
            "credential_refresh_total",
            &with("result", "error")
        )),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            "credential_refresh_total",
            &with("result", "ok")
        )),
        0.0
    );
    let mut deadline = with("status", "rejected");
    deadline.push(("reason", "deadline_exceeded"));
    assert_eq!(number(sample(&scrape, "requests_total", &deadline)), 1.0);
    assert_eq!(
        number(sample(
            &scrape,
            "requests_total",
            &with("status", "transient")
        )),
        0.0
    );
}
