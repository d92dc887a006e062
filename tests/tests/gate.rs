//! Refusals at the gate, before an attempt.
//!
//! A bulkhead or rate-limit refusal is no attempt (nothing was sent): the call waits for capacity
//! within its deadline, or within the site's worst-case retry schedule, spends no retry and needs
//! no `idempotent`. An open circuit is not retried, unless the site lists the rejection in
//! `retry_on`: then it is retried like a failure, after at least the remaining cooldown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::breaker::{BreakerConfig, BreakerState, Outcome};
use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit, Gcra};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

static RETRYING_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 5, idempotent, jitter = "none", bulkhead = "gate_slots")]
async fn retrying() -> Result<u32, ApiError> {
    RETRYING_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(1)
}

/// Holds one slot of `bulkhead` for `d`, on the paused clock.
fn hold_for(bulkhead: Arc<ConcurrencyLimit>, d: Duration) -> tokio::task::JoinHandle<()> {
    assert!(bulkhead.try_enter());
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        bulkhead.leave();
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_full_bulkhead_is_waited_for_not_returned_at_once() {
    let registry = Registry::new();
    let slots = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("gate_slots", slots.clone());
    let holder = hold_for(slots.clone(), Duration::from_millis(250));
    let start = Instant::now();
    let r = registry.scope(retrying()).await;
    assert_eq!(r.unwrap(), 1);
    // The first wait is the backoff's first delay (1 s, no jitter), and the slot was free then.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(RETRYING_RUNS.load(Ordering::SeqCst), 1, "one attempt");
    let m = registry.metrics();
    let s = &m.site("retrying").unwrap().metrics;
    assert_eq!(
        (s.ok, s.retries, s.capacity_waits, s.rejected),
        (1, 0, 1, 0)
    );
    holder.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn capacity_that_never_comes_ends_the_call_after_the_worst_case_schedule() {
    let registry = Registry::new();
    let slots = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("gate_slots", slots.clone());
    assert!(slots.try_enter());
    let before = RETRYING_RUNS.load(Ordering::SeqCst);
    let start = Instant::now();
    let r = registry.scope(retrying()).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::BulkheadFull { .. }))),
        "{r:?}"
    );
    // 1 + 2 + 4 + 8 + 16 s: the five retries' worst case, waited for capacity instead.
    assert_eq!(start.elapsed(), Duration::from_secs(31));
    assert_eq!(RETRYING_RUNS.load(Ordering::SeqCst), before, "no attempt");
    let m = registry.metrics();
    let s = &m.site("retrying").unwrap().metrics;
    assert_eq!((s.rejected, s.retries, s.capacity_waits), (1, 0, 5));
    slots.leave();
}

static CREATES: AtomicU32 = AtomicU32::new(0);

/// Not idempotent: never retried, but it waits for a slot within its deadline.
#[resilient(deadline = "5s", bulkhead = "gate_create_slots", jitter = "none")]
async fn create() -> Result<u32, ApiError> {
    CREATES.fetch_add(1, Ordering::SeqCst);
    Ok(7)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_non_idempotent_call_waits_for_a_slot_within_its_deadline() {
    let registry = Registry::new();
    let slots = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("gate_create_slots", slots.clone());
    let holder = hold_for(slots.clone(), Duration::from_millis(2500));
    let start = Instant::now();
    assert_eq!(registry.scope(create()).await.unwrap(), 7);
    // Waits of 1 s and 2 s: the slot was free at 2.5 s, seen at 3 s.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(CREATES.load(Ordering::SeqCst), 1);
    holder.await.unwrap();

    // Held past the deadline: the call ends with the rejection before it, without an attempt.
    let holder = hold_for(slots.clone(), Duration::from_secs(60));
    let start = Instant::now();
    let r = registry.scope(create()).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::BulkheadFull { .. }))),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(CREATES.load(Ordering::SeqCst), 1);
    holder.abort();
}

static SENDS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, rate_limit = "gate_rate")]
async fn send() -> Result<u32, ApiError> {
    SENDS.fetch_add(1, Ordering::SeqCst);
    Ok(3)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rate_limit_without_a_deadline_is_waited_for_within_the_schedule() {
    let registry = Registry::new();
    registry.set_rate_limit("gate_rate", Arc::new(Gcra::new(1, Duration::from_secs(2))));
    let start = Instant::now();
    assert_eq!(registry.scope(send()).await.unwrap(), 3);
    assert_eq!(registry.scope(send()).await.unwrap(), 3);
    // The second permit came 2 s after the first; the call waited for it.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(SENDS.load(Ordering::SeqCst), 2);
    let m = registry.metrics();
    let s = &m.site("send").unwrap().metrics;
    assert_eq!(
        (s.ok, s.retries, s.capacity_waits, s.rejected),
        (2, 0, 1, 0)
    );
    assert_eq!(s.rate_limit_blocked, 1);
}

static PROBES: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 2,
    idempotent,
    jitter = "none",
    backoff(base = "100ms"),
    breaker = "gate_breaker",
    retry_on = [ApiError::Rejected]
)]
async fn through_open_circuit() -> Result<u32, ApiError> {
    PROBES.fetch_add(1, Ordering::SeqCst);
    Ok(9)
}

#[resilient(breaker = "gate_breaker")]
async fn fails_fast() -> Result<u32, ApiError> {
    Ok(9)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_circuit_is_retried_after_its_cooldown_only_where_retry_on_says() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "gate_breaker",
            BreakerConfig::new()
                .with_failure_threshold(1)
                .with_cooldown(Duration::from_secs(1)),
        )
        .unwrap();
    let b = registry.breaker("gate_breaker");
    let t = b.acquire().unwrap();
    b.record(t, Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open);

    // By default an open circuit fails fast.
    let start = Instant::now();
    let r = registry.scope(fails_fast()).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Listed in `retry_on`: retried after the cooldown left (1 s, longer than the 100 ms
    // backoff), as a probe that closes the breaker.
    let r = registry.scope(through_open_circuit()).await;
    assert_eq!(r.unwrap(), 9);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(PROBES.load(Ordering::SeqCst), 1);
    assert_eq!(b.state(), BreakerState::Closed);
    let m = registry.metrics();
    let s = &m.site("through_open_circuit").unwrap().metrics;
    assert_eq!((s.ok, s.retries, s.retry_successes), (1, 1, 1));
}
