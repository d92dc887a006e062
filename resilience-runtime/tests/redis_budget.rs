//! A retry budget shared on Redis bounds the retries of every replica together.
#![cfg(feature = "redis")]

mod redis_support;

use redis_support::{RedisServer, fleet, replica, synced};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("busy")]
    #[connector(transient)]
    Busy,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

#[resilient(
    retries = 3,
    idempotent,
    jitter = "none",
    backoff(base = "1ms", max = "1ms"),
    breaker = "budgeted"
)]
async fn always_busy() -> Result<u32, ApiError> {
    Err(ApiError::Busy)
}

/// Room for two retries (capacity 10, a retry costs 5), for the fleet.
const TABLES: &str = "[breakers.budgeted]\nfailure_threshold = 100\n[budgets.budgeted]\ncapacity = 10\nretry_cost = 5\nbackend = \"fleet\"\n";

fn site(r: &Registry) -> (u64, u64) {
    let m = r.metrics().site("always_busy").unwrap().metrics.clone();
    (m.retries, m.budget_exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_budget_bounds_the_retries_of_every_replica_together() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, TABLES), replica(&server, TABLES));
    // Each replica's budget is made and read from the server before the outage.
    a.budget("budgeted");
    b.budget("budgeted");
    synced(&a, 2).await;
    synced(&b, 2).await;
    assert!(matches!(a.scope(always_busy()).await, Err(ApiError::Busy)));
    assert_eq!(site(&a), (2, 1), "a spent the fleet's two retries");
    // a flushes its spends; b reads the fleet's empty balance.
    synced(&a, 2).await;
    synced(&b, 2).await;
    assert!(matches!(b.scope(always_busy()).await, Err(ApiError::Busy)));
    assert_eq!(
        site(&b),
        (0, 1),
        "b's own bucket is full, the fleet's is not"
    );
    assert_eq!(b.budget("budgeted").tokens_milli(), 10_000);
    // Two in-process budgets would have allowed four retries.
    let c = Registry::new();
    c.apply(
        &resilience_runtime::registry::RegistryConfig::from_toml_str(
            "[breakers.budgeted]\nfailure_threshold = 100\n[budgets.budgeted]\ncapacity = 10\nretry_cost = 5\n",
        )
        .unwrap(),
    );
    assert!(matches!(c.scope(always_busy()).await, Err(ApiError::Busy)));
    assert_eq!(site(&c), (2, 1));
    assert_eq!(fleet(&a).errors_total() + fleet(&b).errors_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_flow_back_into_the_fleet_budget() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, TABLES), replica(&server, TABLES));
    let (ba, bb) = (a.budget("budgeted"), b.budget("budgeted"));
    synced(&a, 2).await;
    synced(&b, 2).await;
    assert!(ba.try_spend() && ba.try_spend());
    assert!(!ba.try_spend());
    synced(&a, 2).await;
    synced(&b, 2).await;
    assert!(!bb.try_spend(), "the fleet's balance is spent");
    assert_eq!(bb.exhausted_total(), 1);
    // a's successes refill its bucket; its syncs deposit them into the fleet's.
    for _ in 0..5 {
        ba.refund();
    }
    synced(&a, 2).await;
    synced(&b, 2).await;
    assert!(bb.try_spend(), "a's refunds reached the fleet");
}
