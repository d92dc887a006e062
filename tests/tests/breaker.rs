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

static CLONES: AtomicU32 = AtomicU32::new(0);
static UPLOADS: AtomicU32 = AtomicU32::new(0);

/// An owned argument that counts its clones: each attempt gets a fresh clone.
#[derive(Debug)]
struct Payload(String);

impl Clone for Payload {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Payload(self.0.clone())
    }
}

#[resilient(retries = 2, idempotent, breaker = "uploads", jitter = "none")]
async fn upload(payload: Payload) -> Result<u32, ApiError> {
    // Consumes the argument: the next attempt needs a fresh one.
    let Payload(_body) = payload;
    UPLOADS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Unavailable)
}

#[tokio::test(start_paused = true)]
async fn each_attempt_gets_its_own_clone_and_an_open_breaker_runs_none() {
    let registry = Registry::new();
    registry
        .configure_breaker("uploads", BreakerConfig::new().with_failure_threshold(3))
        .unwrap();
    let r = registry.scope(upload(Payload("one".to_owned()))).await;
    assert!(matches!(r, Err(ApiError::Unavailable)), "{r:?}");
    // Three attempts, a clone each; the third failure opens the breaker.
    assert_eq!(UPLOADS.load(Ordering::SeqCst), 3);
    assert_eq!(CLONES.load(Ordering::SeqCst), 3);
    assert_eq!(registry.breaker("uploads").state(), BreakerState::Open);
    let r = registry.scope(upload(Payload("two".to_owned()))).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(UPLOADS.load(Ordering::SeqCst), 3);
}

static OPENING_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 5, idempotent, jitter = "none", breaker = "opens_mid_call")]
async fn opens_mid_call() -> Result<(), ApiError> {
    OPENING_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Unavailable)
}

/// A failure that opens the breaker ends its call at once with the rejection the next attempt's
/// gate would give: no backoff waited out only to be refused, no retry counted or paid for that
/// never reached the dependency.
#[tokio::test(start_paused = true)]
async fn a_call_whose_failure_opens_the_breaker_ends_at_once_without_a_retry_spent() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "opens_mid_call",
            BreakerConfig::new().with_failure_threshold(3),
        )
        .unwrap();
    let start = tokio::time::Instant::now();
    let r = registry.scope(opens_mid_call()).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(OPENING_RUNS.load(Ordering::SeqCst), 3);
    // The two backoffs before the second and third attempts (1 s, 2 s); not the third (4 s).
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(3));
    let m = registry
        .metrics()
        .site("opens_mid_call")
        .unwrap()
        .metrics
        .clone();
    assert_eq!(m.retries, 2);
    // Two retries of 5 tokens from the default 100.
    assert_eq!(registry.budget("opens_mid_call").tokens_milli(), 90_000);
    assert_eq!(
        registry.breaker("opens_mid_call").state(),
        BreakerState::Open
    );
}
