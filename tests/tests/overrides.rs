//! `retry_on` and `abort_on` override the classification at one site.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::{ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(permanent)]
    Conflict,
    #[connector(transient)]
    Unavailable,
    #[connector(transient)]
    Maintenance { minutes: u32 },
}

static CONFLICT_RUNS: AtomicU32 = AtomicU32::new(0);

/// A conflict here is a replication lag: retry it.
#[resilient(retries = 2, idempotent, jitter = "none", retry_on = [ApiError::Conflict])]
async fn read_after_write() -> Result<(), ApiError> {
    CONFLICT_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Conflict)
}

#[tokio::test(start_paused = true)]
async fn retry_on_retries_a_permanent_error() {
    let r = Registry::new().scope(read_after_write()).await;
    assert!(matches!(r, Err(ApiError::Conflict)));
    assert_eq!(CONFLICT_RUNS.load(Ordering::SeqCst), 3);
}

static MAINTENANCE_RUNS: AtomicU32 = AtomicU32::new(0);

/// Maintenance lasts longer than this caller can wait; unavailability does not.
#[resilient(
    retries = 2,
    idempotent,
    jitter = "none",
    retry_on = [ApiError::Conflict],
    abort_on = [ApiError::Maintenance]
)]
async fn poll(maintenance: bool) -> Result<(), ApiError> {
    MAINTENANCE_RUNS.fetch_add(1, Ordering::SeqCst);
    if maintenance {
        Err(ApiError::Maintenance { minutes: 30 })
    } else {
        Err(ApiError::Unavailable)
    }
}

#[tokio::test(start_paused = true)]
async fn abort_on_stops_a_transient_error_and_wins() {
    let registry = Registry::new();
    let r = registry.scope(poll(true)).await;
    assert!(matches!(r, Err(ApiError::Maintenance { minutes: 30 })));
    assert_eq!(MAINTENANCE_RUNS.swap(0, Ordering::SeqCst), 1);
    // Other transient errors keep their class.
    let r = registry.scope(poll(false)).await;
    assert!(matches!(r, Err(ApiError::Unavailable)));
    assert_eq!(MAINTENANCE_RUNS.load(Ordering::SeqCst), 3);
}
