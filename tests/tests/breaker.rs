//! An open breaker rejects a call without running the body.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("service unavailable")]
    #[connector(transient)]
    Unavailable,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(breaker = "inventory")]
async fn list() -> Result<(), ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Unavailable)
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_running_the_body() {
    let registry = Registry::new();
    registry
        .configure_breaker("inventory", BreakerConfig::new().with_failure_threshold(3))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            registry.scope(list()).await,
            Err(ApiError::Unavailable)
        ));
    }
    assert_eq!(registry.breaker("inventory").state(), BreakerState::Open);
    let r = registry.scope(list()).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);
}
