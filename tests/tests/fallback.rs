//! `fallback` runs after the last failure, with the last error.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::{ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
    #[connector(permanent)]
    NotFound,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

fn cached_devices(error: ApiError) -> Result<Vec<String>, ApiError> {
    match error {
        ApiError::Unavailable => Ok(vec!["cached".to_owned()]),
        other => Err(other),
    }
}

#[resilient(retries = 2, idempotent, jitter = "none", fallback = cached_devices)]
async fn devices(found: bool) -> Result<Vec<String>, ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    if found {
        Err(ApiError::Unavailable)
    } else {
        Err(ApiError::NotFound)
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_runs_after_the_last_failure() {
    let registry = Registry::new();
    let r = registry.scope(devices(true)).await;
    assert_eq!(r.unwrap(), ["cached"]);
    assert_eq!(RUNS.swap(0, Ordering::SeqCst), 3);

    // The fallback sees the last error and may pass it on.
    let r = registry.scope(devices(false)).await;
    assert!(matches!(r, Err(ApiError::NotFound)));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}
