//! @Fallback (MicroProfile) / Polly Fallback.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::resilient;
use tokio::time::Instant;

use crate::common::*;

#[resilient(retries = 2, idempotent, jitter = "none", fallback = fb)]
async fn with_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK FallbackTest + RetryFallbackTest: the fallback runs once, after the retries are exhausted.
/// docs: "Called once the call has failed for good (its retries exhausted, ...); its result is the
/// call's"; "The `fallbacks` counter of the site's metrics counts the calls whose error went to the
/// fallback."
#[tokio::test(start_paused = true)]
async fn fallback_after_retries_exhausted() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let start = Instant::now();
    assert_eq!(r.scope(with_fallback(&dep)).await.unwrap(), 903);
    assert_eq!(dep.attempts(), 3);
    assert_eq!(start.elapsed(), secs(3));
    assert_eq!(
        r.metrics().site("with_fallback").unwrap().metrics.fallbacks,
        1
    );
}

/// TCK FallbackTest: no fallback on success.
#[tokio::test(start_paused = true)]
async fn fallback_not_called_on_success() {
    let r = registry("");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(8));
    assert_eq!(r.scope(with_fallback(&dep)).await.unwrap(), 8);
    assert_eq!(
        r.metrics().site("with_fallback").unwrap().metrics.fallbacks,
        0
    );
}

/// TCK FallbackTest: a non-retried exception goes straight to the fallback (applyOn defaults to
/// every Throwable); the fallback's own failure is the call's.
/// docs: "or the error not retried"; "Without it [fallback_on], every error does."
#[tokio::test(start_paused = true)]
async fn fallback_gets_non_retried_error_at_once() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::NotFound));
    let start = Instant::now();
    // `fb` gives back errors it has no answer for.
    let res = r.scope(with_fallback(&dep)).await;
    assert!(matches!(res, Err(ApiError::NotFound)), "{res:?}");
    assert_eq!(dep.attempts(), 1);
    assert_eq!(start.elapsed(), secs(0));
    assert_eq!(
        r.metrics().site("with_fallback").unwrap().metrics.fallbacks,
        1
    );
}

#[resilient(retries = 2, idempotent, jitter = "none", fallback = fb, fallback_on = [ApiError::Unavailable])]
async fn with_fallback_on(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK FallbackApplyOnTest / skipOn: only listed exceptions reach the fallback.
/// docs: "`fallback_on` lists the error variants that reach the fallback; any other error is
/// returned as it is."
#[tokio::test(start_paused = true)]
async fn fallback_on_filters_errors() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Maintenance));
    let res = r.scope(with_fallback_on(&dep)).await;
    assert!(matches!(res, Err(ApiError::Maintenance)), "{res:?}");
    assert_eq!(dep.attempts(), 3, "retried, then returned as it is");
    let dep = Dep::new(fail(Kind::Unavailable));
    assert_eq!(r.scope(with_fallback_on(&dep)).await.unwrap(), 903);
    assert_eq!(
        r.metrics()
            .site("with_fallback_on")
            .unwrap()
            .metrics
            .fallbacks,
        1
    );
}

#[resilient(breaker = "fb_breaker", fallback = fb)]
async fn guarded_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerFallbackTest: CircuitBreakerOpenException is handled by the fallback.
/// docs: fallback "... or a rejection".
#[tokio::test(start_paused = true)]
async fn fallback_on_open_circuit() {
    let r = registry("[breakers.fb_breaker]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(1));
    assert_eq!(r.scope(guarded_fallback(&dep)).await.unwrap(), 903);
    assert_eq!(r.scope(guarded_fallback(&dep)).await.unwrap(), 901);
    assert_eq!(dep.attempts(), 1);
}

static SEEN_ID: AtomicU32 = AtomicU32::new(0);

async fn cached(_dep: &Dep, id: &u32, e: ApiError) -> Result<u32, ApiError> {
    SEEN_ID.store(*id, Ordering::SeqCst);
    match e {
        ApiError::Unavailable => Ok(1000 + *id),
        e => Err(e),
    }
}

#[resilient(retries = 1, idempotent, jitter = "none", fallback = cached)]
async fn with_args_fallback(dep: &Dep, id: u32) -> Result<u32, ApiError> {
    let _ = id;
    dep.call().await
}

/// TCK FallbackTest: the fallback method gets the same parameters.
/// docs: "It gets what the fn got: ... every argument by reference, in order (an argument that is a
/// reference already, `&T` or `&mut T`, as `&T`), then the last error by value".
#[tokio::test(start_paused = true)]
async fn fallback_gets_the_arguments() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    assert_eq!(r.scope(with_args_fallback(&dep, 42)).await.unwrap(), 1042);
    assert_eq!(SEEN_ID.load(Ordering::SeqCst), 42);
    assert_eq!(dep.attempts(), 2);
}
