//! The future of one attempt.
//!
//! The first attempt's fast path: a call at the global registry, untraced and not nested, keeps
//! its state in locals during the first poll of its first attempt, and writes it out only when
//! the attempt is pending or failed. These calls behave exactly as the full path's.
//!
//! Then what every attempt's future does: its timer fires whatever the attempt does with tokio's
//! task budget, the attempt is dropped before its backoff, and a panic is counted once, on
//! either path, when the caller catches it around a poll and drops the call afterwards.
//!
//! Nothing in this test binary installs a subscriber or exports latency, so every call here
//! starts on the fast path unless a registry is scoped on its thread: scoping is per thread and
//! per poll, and once a scope ends its thread's calls take the fast path again. Each test has
//! sites of its own in the global registry.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::{CallContext, ConnectorError, Registry, Rejected, resilient};

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

#[resilient(retries = 3, idempotent, breaker = "fast_ready")]
async fn ready_at_once() -> Result<u32, ApiError> {
    Ok(7)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_first_attempt_that_is_ready_at_once_is_counted_and_leaves_no_context() {
    for _ in 0..3 {
        assert_eq!(ready_at_once().await.unwrap(), 7);
    }
    let m = site("ready_at_once");
    assert_eq!((m.ok, m.retries, m.errors.total()), (3, 0, 0));
    assert_eq!(
        Registry::global().breaker("fast_ready").state(),
        BreakerState::Closed
    );
    assert!(CallContext::current().is_none());
}

#[resilient(retries = 3, idempotent, breaker = "fast_scoped")]
async fn scoped_ready() -> Result<u32, ApiError> {
    Ok(8)
}

fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fut)
}

#[test]
fn a_scope_holds_on_its_own_thread_while_it_lasts_and_leaves_nothing_behind() {
    let r = Registry::new();
    // Inside the scope, on its thread: the call is the scoped registry's, breaker included.
    assert_eq!(r.enter(|| block_on(scoped_ready())).unwrap(), 8);
    let m = |reg: &Registry| {
        reg.metrics()
            .site("scoped_ready")
            .map(|s| s.metrics.ok)
            .unwrap_or_default()
    };
    assert_eq!((m(&r), m(Registry::global())), (1, 0));
    // Another thread, while a scope is in force here: the global registry's.
    r.enter(|| {
        std::thread::spawn(|| block_on(scoped_ready()).unwrap())
            .join()
            .unwrap()
    });
    assert_eq!((m(&r), m(Registry::global())), (1, 1));
    // After the scope, on its thread: the global registry's again.
    assert_eq!(block_on(scoped_ready()).unwrap(), 8);
    assert_eq!((m(&r), m(Registry::global())), (1, 2));
    // A scoped future, polled on this thread: its calls are the scoped registry's, and the
    // calls polled beside it are not.
    let (a, b) = block_on(async { tokio::join!(r.scope(scoped_ready()), scoped_ready()) });
    assert_eq!((a.unwrap(), b.unwrap()), (8, 8));
    assert_eq!((m(&r), m(Registry::global())), (2, 3));
    assert!(CallContext::current().is_none());
}

static PANICS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 2, idempotent, breaker = "fast_panics")]
async fn panics_at_once() -> Result<u32, ApiError> {
    PANICS.fetch_add(1, Ordering::SeqCst);
    assert!(CallContext::current().is_some());
    panic!("the attempt panicked");
}

#[test]
fn a_panic_in_the_first_attempt_is_counted_once_and_restores_the_context() {
    // Caught around the poll; the future is dropped afterwards, when nothing unwinds any more.
    let mut fut = Box::pin(panics_at_once());
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }));
    assert!(unwound.is_err());
    drop(fut);
    assert_eq!(PANICS.load(Ordering::SeqCst), 1);
    assert_one_panic_counted("panics_at_once", "fast_panics");
}

/// After a call at `operation` whose first attempt panicked: counted once, as a permanent error,
/// and not retried; the context the attempt installed is gone from this thread; and the breaker
/// is closed, since a panic is no health signal.
fn assert_one_panic_counted(operation: &str, breaker: &str) {
    let m = site(operation);
    assert_eq!((m.ok, m.errors.permanent, m.retries), (0, 1, 0));
    assert!(CallContext::current().is_none());
    assert_eq!(
        Registry::global().breaker(breaker).state(),
        BreakerState::Closed
    );
}

static RESUMED_PANICS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 2, idempotent, breaker = "fast_resumed_panics")]
async fn waits_then_panics() -> Result<u32, ApiError> {
    let id = CallContext::current().unwrap().correlation_id();
    tokio::task::yield_now().await;
    RESUMED_PANICS.fetch_add(1, Ordering::SeqCst);
    assert_eq!(CallContext::current().map(|c| c.correlation_id()), Some(id));
    panic!("the resumed attempt panicked");
}

#[test]
fn a_panic_in_a_resumed_first_attempt_is_counted_once_and_restores_the_context() {
    let mut fut = Box::pin(waits_then_panics());
    let mut cx = Context::from_waker(Waker::noop());
    // Pending at its first poll: the call is written out, the context emptied.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(CallContext::current().is_none());
    // Resumed with the first attempt's context, and panics; caught around the poll, the future
    // dropped afterwards.
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
    assert!(unwound.is_err());
    drop(fut);
    assert_eq!(RESUMED_PANICS.load(Ordering::SeqCst), 1);
    assert_one_panic_counted("waits_then_panics", "fast_resumed_panics");
}

static SEEN: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

#[resilient(retries = 2, idempotent, breaker = "fast_context")]
async fn fails_once() -> Result<u32, ApiError> {
    let ctx = CallContext::current().expect("inside a resilient call");
    let mut seen = SEEN.lock().unwrap();
    seen.push((ctx.attempt(), ctx.correlation_id().as_u64()));
    if seen.len() == 1 {
        return Err(ApiError::Busy);
    }
    Ok(seen.len() as u32)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_first_attempts_context_and_correlation_id_carry_to_the_retry() {
    assert_eq!(fails_once().await.unwrap(), 2);
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0, seen[1].0), (0, 1));
    // The id the body took in the first attempt is the call's, on every attempt.
    assert_ne!(seen[0].1, 0);
    assert_eq!(seen[0].1, seen[1].1);
    let m = site("fails_once");
    assert_eq!((m.ok, m.retries, m.retry_successes), (1, 1, 1));
}

static YIELDED: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 2, idempotent, breaker = "fast_pending")]
async fn pending_once() -> Result<u32, ApiError> {
    YIELDED.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    assert_eq!(CallContext::current().map(|c| c.attempt()), Some(0));
    Ok(3)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pending_first_attempt_is_resumed_with_its_context() {
    assert_eq!(pending_once().await.unwrap(), 3);
    assert_eq!(YIELDED.load(Ordering::SeqCst), 1);
    let m = site("pending_once");
    assert_eq!((m.ok, m.retries), (1, 0));
    assert!(CallContext::current().is_none());
}

/// The correlation ids the body of `takes_its_id_then_waits` saw: before and after its wait.
static IDS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[resilient(retries = 2, idempotent, breaker = "fast_pending_id")]
async fn takes_its_id_then_waits() -> Result<u64, ApiError> {
    let before = CallContext::current().unwrap().correlation_id().as_u64();
    tokio::task::yield_now().await;
    let after = CallContext::current().unwrap().correlation_id().as_u64();
    IDS.lock().unwrap().extend([before, after]);
    Ok(after)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_correlation_id_taken_before_a_wait_is_the_same_after_it() {
    let returned = takes_its_id_then_waits().await.unwrap();
    let ids = IDS.lock().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the resumed attempt saw a different id");
    assert_eq!(returned, ids[0]);
    assert!(CallContext::current().is_none());
}

static SLOW: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 2, idempotent, breaker = "fast_timeout", timeout = "1s")]
async fn slow_first() -> Result<u32, ApiError> {
    if SLOW.fetch_add(1, Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(4)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pending_first_attempt_past_its_timeout_is_stopped_and_retried() {
    let start = tokio::time::Instant::now();
    assert_eq!(slow_first().await.unwrap(), 4);
    assert_eq!(SLOW.load(Ordering::SeqCst), 2);
    // Stopped at its 1 s timeout, not after its 5 s sleep; then one backoff (at most 30 s).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let m = site("slow_first");
    assert_eq!((m.ok, m.retries, m.retry_successes), (1, 1, 1));
}

static NESTED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[resilient(retries = 1, idempotent)]
async fn inner() -> Result<(), ApiError> {
    let id = CallContext::current().unwrap().correlation_id().as_u64();
    NESTED.lock().unwrap().push(id);
    Ok(())
}

#[resilient(retries = 1, idempotent)]
async fn outer() -> Result<(), ApiError> {
    let id = CallContext::current().unwrap().correlation_id().as_u64();
    NESTED.lock().unwrap().push(id);
    inner().await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_nested_call_joins_its_outer_calls_correlation_id() {
    outer().await.unwrap();
    let ids = NESTED.lock().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], 0);
    assert_eq!(ids[0], ids[1]);
    assert!(CallContext::current().is_none());
}

static BLOCKING: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

#[resilient(
    retries = 2,
    idempotent,
    breaker = "fast_blocking",
    backoff(base = "1ms", max = "1ms")
)]
fn blocking_fails_once() -> Result<u32, ApiError> {
    let ctx = CallContext::current().expect("inside a resilient call");
    let mut seen = BLOCKING.lock().unwrap();
    seen.push((ctx.attempt(), ctx.correlation_id().as_u64()));
    if seen.len() == 1 {
        return Err(ApiError::Busy);
    }
    Ok(seen.len() as u32)
}

#[test]
fn a_blocking_first_attempt_that_fails_carries_its_context_to_the_retry() {
    // The engine's backoff is a real (1 ms) sleep for a blocking call; the test waits for
    // nothing.
    assert_eq!(blocking_fails_once().unwrap(), 2);
    let seen = BLOCKING.lock().unwrap().clone();
    assert_eq!((seen[0].0, seen[1].0), (0, 1));
    assert_eq!(seen[0].1, seen[1].1);
    assert_ne!(seen[0].1, 0);
    let m = site("blocking_fails_once");
    assert_eq!((m.ok, m.retries), (1, 1));
    assert!(CallContext::current().is_none());
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

/// Set once the first call of `holds_the_bulkhead` is inside its attempt.
static HOLDING: AtomicBool = AtomicBool::new(false);

#[resilient(
    retries = 2,
    idempotent,
    breaker = "fast_gate",
    bulkhead = "fast_gate_bh"
)]
async fn holds_the_bulkhead(wait: bool) -> Result<u32, ApiError> {
    if wait {
        HOLDING.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    Ok(5)
}

/// A site whose gate has a bulkhead beside its breaker is not the breaker alone: its calls take
/// the full path, and the bulkhead is honoured.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_breaker_beside_a_bulkhead_leaves_the_gate_to_the_full_path() {
    use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit};

    let bulkhead = std::sync::Arc::new(ConcurrencyLimit::new(1));
    Registry::global().set_bulkhead("fast_gate_bh", bulkhead.clone());

    let mut held = Box::pin(holds_the_bulkhead(true));
    assert!(
        held.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    assert!(HOLDING.load(Ordering::SeqCst));
    assert_eq!(bulkhead.in_use(), 1, "the first call took no bulkhead slot");

    match holds_the_bulkhead(false).await {
        Err(ApiError::Rejected(r)) => assert_eq!(r.kind(), "bulkhead_full"),
        other => panic!("expected the full bulkhead to reject the call, got {other:?}"),
    }

    drop(held);
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(holds_the_bulkhead(false).await.unwrap(), 5);
}

thread_local! {
    /// Whether `per_tenant` fails for tenant "a" (each test drives its calls on its own thread).
    static TENANT_A_DOWN: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[resilient(retries = 0, breaker = "fast_keyed", breaker_key = tenant)]
async fn per_tenant(tenant: &str) -> Result<u32, ApiError> {
    if tenant == "a" && TENANT_A_DOWN.get() {
        return Err(ApiError::Busy);
    }
    Ok(1)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_keyed_site_admits_through_its_keys_breaker_on_either_path() {
    use resilience_runtime::breaker::BreakerConfig;
    Registry::global()
        .configure_breaker(
            "fast_keyed",
            BreakerConfig::new()
                .with_failure_threshold(2)
                .with_cooldown(Duration::from_secs(1)),
        )
        .unwrap();
    // Tenant "a" fails twice (first attempts on the fast path) and its breaker opens.
    for _ in 0..2 {
        assert!(matches!(per_tenant("a").await, Err(ApiError::Busy)));
    }
    let keyed = Registry::global().keyed_breakers("fast_keyed");
    assert_eq!(keyed.get("a").state(), BreakerState::Open);
    // The open key refuses (the full path) while another key's calls pass.
    assert!(matches!(
        per_tenant("a").await,
        Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))
    ));
    assert_eq!(per_tenant("b").await.unwrap(), 1);
    assert_eq!(keyed.get("b").state(), BreakerState::Closed);
    // After the cooldown, a success of the probe closes the key's breaker again.
    TENANT_A_DOWN.set(false);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(per_tenant("a").await.unwrap(), 1);
    assert_eq!(keyed.get("a").state(), BreakerState::Closed);
    // In a scope, the key's breaker is the scoped registry's, not the global one's.
    let scoped = Registry::new();
    scoped
        .configure_breaker("fast_keyed", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    TENANT_A_DOWN.set(true);
    let r = scoped.scope(per_tenant("a")).await;
    assert!(matches!(r, Err(ApiError::Busy)));
    assert_eq!(
        scoped.keyed_breakers("fast_keyed").get("a").state(),
        BreakerState::Open
    );
    assert_eq!(keyed.get("a").state(), BreakerState::Closed);
    let m = site("per_tenant");
    assert_eq!((m.ok, m.errors.total()), (2, 2));
}
