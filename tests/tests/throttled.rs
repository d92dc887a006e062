//! `throttled`: retried after the server's hint, never a breaker failure, and the hint pauses the
//! site's whole named rate limiter. `breaker = "..."` on a variant: how the breaker counts it,
//! apart from its class.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::breaker::{BreakerConfig, BreakerState, Outcome};
use resilience_runtime::limit::Gcra;
use resilience_runtime::{Classify, ConnectorError, ErrorClass, Registry, Rejected, resilient};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum GraphError {
    #[error("throttled")]
    #[connector(throttled, code = "429")]
    Throttled {
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
    #[error("mailbox locked by another writer")]
    #[connector(transient, breaker = "ignored")]
    Locked,
    #[error("corrupt answer")]
    #[connector(permanent, breaker = "failure")]
    Corrupt,
    #[error("unavailable")]
    #[connector(transient)]
    Unavailable,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

fn throttled(secs: u64) -> GraphError {
    GraphError::Throttled {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

#[test]
fn the_derive_sets_the_class_and_the_breaker_outcome() {
    let e = throttled(5);
    assert_eq!(e.class(), ErrorClass::Throttled);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(e.breaker_outcome(), None);
    assert_eq!(GraphError::Locked.class(), ErrorClass::Transient);
    assert_eq!(GraphError::Locked.breaker_outcome(), Some(Outcome::Ignored));
    assert_eq!(GraphError::Corrupt.class(), ErrorClass::Permanent);
    assert_eq!(
        GraphError::Corrupt.breaker_outcome(),
        Some(Outcome::Failure)
    );
    assert_eq!(GraphError::Unavailable.breaker_outcome(), None);
}

/// Throttled answers left before a success.
static THROTTLES_LEFT: AtomicU32 = AtomicU32::new(0);
static LIST_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, jitter = "none", breaker = "throttled_graph")]
async fn list_devices() -> Result<u32, GraphError> {
    LIST_RUNS.fetch_add(1, Ordering::SeqCst);
    let left = THROTTLES_LEFT.load(Ordering::SeqCst);
    if left > 0 {
        THROTTLES_LEFT.store(left - 1, Ordering::SeqCst);
        return Err(throttled(5));
    }
    Ok(12)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_burst_of_429s_never_opens_a_breaker_with_a_threshold_of_one() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "throttled_graph",
            BreakerConfig::new().with_failure_threshold(1),
        )
        .unwrap();
    let breaker = registry.breaker("throttled_graph");

    // Three 429s, then the answer: each retry waits the server's 5 s (longer than the 1 s, 2 s
    // and 4 s of the backoff).
    THROTTLES_LEFT.store(3, Ordering::SeqCst);
    let start = Instant::now();
    assert_eq!(registry.scope(list_devices()).await.unwrap(), 12);
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(LIST_RUNS.load(Ordering::SeqCst), 4);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.failures(), 0);

    // Throttled to the end: the call gives up with the 429, and the breaker is still closed,
    // so the next call reaches the dependency.
    THROTTLES_LEFT.store(4, Ordering::SeqCst);
    let r = registry.scope(list_devices()).await;
    assert!(matches!(r, Err(GraphError::Throttled { .. })), "{r:?}");
    assert_eq!(LIST_RUNS.load(Ordering::SeqCst), 8);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.failures(), 0);
    assert_eq!(registry.scope(list_devices()).await.unwrap(), 12);
    assert_eq!(LIST_RUNS.load(Ordering::SeqCst), 9);

    let m = registry.metrics();
    let s = &m.site("list_devices").unwrap().metrics;
    assert_eq!((s.ok, s.errors.throttled, s.errors.transient), (2, 1, 0));
    assert_eq!((s.retries, s.retry_successes), (6, 1));
}

static CREATE_RUNS: AtomicU32 = AtomicU32::new(0);

/// Throttled once with a 7 s hint, then succeeds.
#[resilient(retries = 1, idempotent, jitter = "none", rate_limit = "graph_app")]
async fn create_assignment() -> Result<u32, GraphError> {
    if CREATE_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(throttled(7));
    }
    Ok(1)
}

/// A sibling through the same limiter, at another site: no retries, a deadline to wait within.
#[resilient(deadline = "30s", rate_limit = "graph_app")]
async fn read_device(n: u32) -> Result<u32, GraphError> {
    Ok(n)
}

/// A call through another limiter.
#[resilient(deadline = "30s", rate_limit = "okta_app")]
async fn read_user(n: u32) -> Result<u32, GraphError> {
    Ok(n)
}

/// Runs `fut` in `registry` on a task of its own, returning how long it took.
fn timed<F>(
    registry: &Registry,
    fut: F,
) -> tokio::task::JoinHandle<(Result<u32, GraphError>, Duration)>
where
    F: std::future::Future<Output = Result<u32, GraphError>> + Send + 'static,
{
    let scoped = registry.scope(fut);
    tokio::spawn(async move {
        let start = Instant::now();
        let r = scoped.await;
        (r, start.elapsed())
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_throttled_hint_pauses_every_call_through_the_named_limiter_until_it_passes() {
    let registry = Registry::new();
    // 1,000 a second: a permit each millisecond once the burst is spent.
    registry.set_rate_limit(
        "graph_app",
        Arc::new(Gcra::new(1000, Duration::from_secs(1))),
    );
    registry.set_rate_limit(
        "okta_app",
        Arc::new(Gcra::new(1000, Duration::from_secs(1))),
    );

    let create = timed(&registry, create_assignment());
    while CREATE_RUNS.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The 429 came at 0 s with a 7 s hint: the limiter is paused until 7 s.
    let siblings: Vec<_> = (0..3).map(|n| timed(&registry, read_device(n))).collect();
    let other = timed(&registry, read_user(9));

    let mut elapsed = Vec::new();
    let (r, d) = create.await.unwrap();
    assert_eq!(r.unwrap(), 1);
    elapsed.push(d);
    for (n, s) in siblings.into_iter().enumerate() {
        let (r, d) = s.await.unwrap();
        assert_eq!(r.unwrap(), n as u32);
        elapsed.push(d);
    }
    // Nothing went through before 7 s; then the limiter paces from an empty burst, a permit a
    // millisecond, to the retried call and its three siblings in some order.
    elapsed.sort();
    assert_eq!(elapsed, [7000, 7001, 7002, 7003].map(Duration::from_millis));
    assert_eq!(CREATE_RUNS.load(Ordering::SeqCst), 2);

    // Another limiter is not paused.
    let (r, d) = other.await.unwrap();
    assert_eq!((r.unwrap(), d), (9, Duration::ZERO));

    let m = registry.metrics();
    let s = &m.site("read_device").unwrap().metrics;
    assert_eq!((s.ok, s.retries, s.rejected), (3, 0, 0));
    let c = &m.site("create_assignment").unwrap().metrics;
    assert_eq!((c.ok, c.retries, c.rejected), (1, 1, 0));
    // The siblings waited out the pause (3 waits); at 7 s the four calls took turns, a
    // millisecond apart (3 + 2 + 1 waits between them).
    assert_eq!(s.capacity_waits + c.capacity_waits, 3 + 6);
}

static THROTTLED_LONG_RUNS: AtomicU32 = AtomicU32::new(0);

/// Throttled with a 10 min hint, longer than the 5 min the site honours.
#[resilient(retries = 2, idempotent, rate_limit = "graph_tenant")]
async fn export_report() -> Result<u32, GraphError> {
    THROTTLED_LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(throttled(600))
}

#[resilient(deadline = "10m", rate_limit = "graph_tenant")]
async fn read_report(n: u32) -> Result<u32, GraphError> {
    Ok(n)
}

#[resilient(deadline = "30s", rate_limit = "graph_tenant")]
async fn read_report_soon(n: u32) -> Result<u32, GraphError> {
    Ok(n)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hint_past_what_the_site_honours_pauses_the_limiter_for_that_long_only() {
    let registry = Registry::new();
    registry.set_rate_limit(
        "graph_tenant",
        Arc::new(Gcra::new(1, Duration::from_millis(1))),
    );

    // The throttled call itself ends at once: the hint is longer than it may wait.
    let start = Instant::now();
    let r = registry.scope(export_report()).await;
    assert!(matches!(r, Err(GraphError::Throttled { .. })), "{r:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(THROTTLED_LONG_RUNS.load(Ordering::SeqCst), 1);

    // A sibling whose deadline cannot see the pause end is rejected at once, without an attempt.
    let r = registry.scope(read_report_soon(1)).await;
    match r {
        Err(GraphError::Rejected(Rejected::RateLimited { limiter, retry_in })) => {
            assert_eq!(&*limiter, "graph_tenant");
            assert_eq!(retry_in, Duration::from_secs(300));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);

    // One that can waits out the 5 min the site honours, not the server's 10 min.
    assert_eq!(registry.scope(read_report(2)).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(300));
}

static NO_HINT_RUNS: AtomicU32 = AtomicU32::new(0);

/// Throttled once without a hint, then succeeds.
#[resilient(retries = 1, idempotent, jitter = "none", rate_limit = "graph_quiet")]
async fn throttled_without_a_hint() -> Result<u32, GraphError> {
    if NO_HINT_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(GraphError::Throttled { retry_after: None });
    }
    Ok(4)
}

#[resilient(rate_limit = "graph_quiet")]
async fn quiet_sibling() -> Result<u32, GraphError> {
    Ok(5)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_throttled_error_without_a_hint_waits_the_backoff_and_pauses_nothing() {
    let registry = Registry::new();
    registry.set_rate_limit(
        "graph_quiet",
        Arc::new(Gcra::new(1000, Duration::from_secs(1))),
    );
    let call = timed(&registry, throttled_without_a_hint());
    while NO_HINT_RUNS.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The limiter is not paused: a sibling without retries (which could not wait) gets through.
    let start = Instant::now();
    assert_eq!(registry.scope(quiet_sibling()).await.unwrap(), 5);
    assert_eq!(start.elapsed(), Duration::ZERO);
    let (r, d) = call.await.unwrap();
    assert_eq!((r.unwrap(), d), (4, Duration::from_secs(1)));
}

static LOCKED_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(breaker = "locks")]
async fn write_locked() -> Result<u32, GraphError> {
    LOCKED_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(GraphError::Locked)
}

#[resilient(breaker = "locks")]
async fn unavailable() -> Result<u32, GraphError> {
    Err(GraphError::Unavailable)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_transient_variant_with_breaker_ignored_never_opens_the_breaker() {
    let registry = Registry::new();
    registry
        .configure_breaker("locks", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    let breaker = registry.breaker("locks");
    for _ in 0..5 {
        let r = registry.scope(write_locked()).await;
        assert!(matches!(r, Err(GraphError::Locked)), "{r:?}");
    }
    assert_eq!(
        LOCKED_RUNS.load(Ordering::SeqCst),
        5,
        "never refused by the breaker"
    );
    assert_eq!(
        (breaker.state(), breaker.failures()),
        (BreakerState::Closed, 0)
    );
    // A transient variant without the override does open it.
    let r = registry.scope(unavailable()).await;
    assert!(matches!(r, Err(GraphError::Unavailable)), "{r:?}");
    assert_eq!(breaker.state(), BreakerState::Open);
}

static CORRUPT_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, breaker = "corrupt")]
async fn read_corrupt() -> Result<u32, GraphError> {
    CORRUPT_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(GraphError::Corrupt)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_permanent_variant_with_breaker_failure_opens_the_breaker_but_is_not_retried() {
    let registry = Registry::new();
    registry
        .configure_breaker("corrupt", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    let breaker = registry.breaker("corrupt");
    let r = registry.scope(read_corrupt()).await;
    assert!(matches!(r, Err(GraphError::Corrupt)), "{r:?}");
    assert_eq!(
        CORRUPT_RUNS.load(Ordering::SeqCst),
        1,
        "permanent: not retried"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
    // The next call is refused by the open breaker, without running.
    let r = registry.scope(read_corrupt()).await;
    assert!(
        matches!(r, Err(GraphError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(CORRUPT_RUNS.load(Ordering::SeqCst), 1);
}
