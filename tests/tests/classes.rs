//! What each class does: permanent and policy errors are not retried, and neither counts for the
//! circuit breaker.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(status = 0)]
    Http(u16),
    #[connector(policy)]
    Forbidden,
    #[connector(rejected)]
    Rejected(Rejected),
}

static PERMANENT_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent)]
async fn not_found() -> Result<(), ApiError> {
    PERMANENT_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Http(404))
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_runs_the_body_once() {
    let r = Registry::new().scope(not_found()).await;
    assert!(matches!(r, Err(ApiError::Http(404))));
    assert_eq!(PERMANENT_RUNS.load(Ordering::SeqCst), 1);
}

static POLICY_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, breaker = "policy-test")]
async fn forbidden() -> Result<(), ApiError> {
    POLICY_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Forbidden)
}

#[tokio::test(start_paused = true)]
async fn a_policy_error_runs_once_and_never_trips_the_breaker() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "policy-test",
            BreakerConfig::new().with_failure_threshold(2),
        )
        .unwrap();
    for _ in 0..10 {
        let r = registry.scope(forbidden()).await;
        assert!(matches!(r, Err(ApiError::Forbidden)));
    }
    // Once per call: never retried, and never rejected by an open breaker.
    assert_eq!(POLICY_RUNS.load(Ordering::SeqCst), 10);
    let breaker = registry.breaker("policy-test");
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.failures(), 0);
}
