//! A transient failure is retried on the backoff schedule, and only as often as `retries` says.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::{ConnectorError, Registry, resilient};
use tokio::time::Instant;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 5,
    idempotent,
    backoff(base = "1s", max = "16s"),
    jitter = "none"
)]
async fn flaky(fail_first: u32) -> Result<u32, ApiError> {
    let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if run <= fail_first {
        Err(ApiError::Unavailable)
    } else {
        Ok(run)
    }
}

#[tokio::test(start_paused = true)]
async fn two_transient_failures_then_success_run_the_body_three_times_on_schedule() {
    RUNS.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let r = Registry::new().scope(flaky(2)).await;
    assert_eq!(r.ok(), Some(3));
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);
    // Waits of 1s then 2s, jitter off.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

static EXHAUSTED_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 2,
    idempotent,
    backoff(base = "100ms", factor = 3),
    jitter = "none"
)]
async fn always_down() -> Result<(), ApiError> {
    EXHAUSTED_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Unavailable)
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_the_last_retry() {
    let started = Instant::now();
    let r = Registry::new().scope(always_down()).await;
    assert!(matches!(r, Err(ApiError::Unavailable)));
    assert_eq!(EXHAUSTED_RUNS.load(Ordering::SeqCst), 3);
    // 100ms, then 300ms.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
}
