//! The future of one attempt: its timer fires whatever the attempt does with tokio's task
//! budget, the attempt is dropped before its backoff, and a panic is counted once, on either path,
//! when the caller catches it around a poll and drops the call afterwards.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

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

fn site(operation: &str) -> resilience_runtime::metrics::SiteMetrics {
    Registry::global()
        .metrics()
        .site(operation)
        .map(|s| s.metrics.clone())
        .unwrap_or_default()
}

/// Never ready: spends tokio's coop budget on every poll, as a body draining a busy channel does.
#[resilient(timeout = "1s", breaker = "budget_spender")]
async fn spends_its_budget() -> Result<(), ApiError> {
    loop {
        tokio::task::consume_budget().await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_timeout_fires_while_the_attempt_spends_the_task_budget() {
    // The body is always runnable, so the paused clock never advances by itself: move it.
    let clock = tokio::spawn(async { tokio::time::advance(Duration::from_secs(30)).await });
    // tokio's own timeout polls its delay outside the budget: if ours did not fire, this one
    // would, and the test would fail on its `Elapsed` rather than hang.
    let r = tokio::time::timeout(Duration::from_secs(20), spends_its_budget()).await;
    clock.await.unwrap();
    let r = r.expect("the attempt's own 1 s timeout fired first");
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))),
        "{r:?}"
    );
}

static HELD: AtomicBool = AtomicBool::new(false);
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Marks `HELD` while the attempt holds it (a connection, a permit, a lock).
struct Held;

impl Held {
    fn take() -> Held {
        HELD.store(true, Ordering::SeqCst);
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.store(false, Ordering::SeqCst);
    }
}

#[resilient(
    retries = 1,
    idempotent,
    timeout = "1s",
    breaker = "holder",
    backoff(base = "10s", max = "10s")
)]
async fn holds_then_times_out() -> Result<u32, ApiError> {
    let run = RUNS.fetch_add(1, Ordering::SeqCst);
    if run == 0 {
        let _held = Held::take();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(run)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_timed_out_attempt_is_dropped_before_its_backoff() {
    let call = tokio::spawn(holds_then_times_out());
    // The attempt times out at 1 s; the backoff (10 s, jittered) has started by 1.5 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "still in the first backoff");
    assert!(
        !HELD.load(Ordering::SeqCst),
        "what the timed-out attempt held is released before the wait"
    );
    assert_eq!(call.await.unwrap().unwrap(), 1);
}

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

#[resilient(retries = 1, idempotent, breaker = "retry_panics")]
async fn panics_on_its_retry() -> Result<u32, ApiError> {
    if !FAILED_ONCE.swap(true, Ordering::SeqCst) {
        return Err(ApiError::Busy);
    }
    panic!("the retry panicked");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_that_panics_under_catch_unwind_is_counted_once() {
    let mut fut = Box::pin(panics_on_its_retry());
    let mut cx = Context::from_waker(Waker::noop());
    // The first attempt fails and the call waits out its backoff on the paused clock.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tokio::time::sleep(Duration::from_secs(60)).await;
    // The retry runs on the full path (the call is started) and panics; the caller catches the
    // panic around the poll and drops the future afterwards, when nothing unwinds any more. The
    // call was counted as the panic unwound out of the fn (which drops the call), not at the
    // drop.
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
    assert!(caught.is_err());
    drop(fut);
    let m = site("panics_on_its_retry");
    assert_eq!((m.ok, m.errors.permanent, m.retries), (0, 1, 1));
}

static FIRST_PANICS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 1, idempotent)]
async fn panics_at_once() -> Result<u32, ApiError> {
    FIRST_PANICS.fetch_add(1, Ordering::SeqCst);
    panic!("the first attempt panicked");
}

#[test]
fn a_first_attempt_panic_caught_around_a_poll_is_counted_once() {
    let mut fut = Box::pin(panics_at_once());
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = pin!(&mut fut)
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }));
    assert!(caught.is_err());
    drop(fut);
    assert_eq!(FIRST_PANICS.load(Ordering::SeqCst), 1);
    let m = site("panics_at_once");
    assert_eq!((m.ok, m.errors.permanent, m.retries), (0, 1, 0));
}
