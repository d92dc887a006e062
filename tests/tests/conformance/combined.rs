//! Combined annotations and their order (MicroProfile FT spec, "Interactions").

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::{Rejected, resilient};
use tokio::time::Instant;

use crate::common::*;

#[resilient(deadline = "2s", fallback = fb)]
async fn deadline_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK FallbackTimeoutTest with a whole-call limit (MicroProfile: Fallback is the outermost
/// interceptor, so a timeout of the whole invocation is handled by the fallback).
/// docs: fallback is "Called once the call has failed for good (... or a rejection)";
/// `Rejected::DeadlineExceeded` is a rejection.
#[tokio::test(start_paused = true)]
async fn deadline_exceeded_goes_to_fallback() {
    let r = registry("");
    let dep = Dep::new(slow(10_000, ok(1)));
    let start = Instant::now();
    let res = r.scope(deadline_fallback(&dep)).await;
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(
        res.unwrap(),
        900,
        "the fallback answers for a spent deadline"
    );
}

#[resilient(retries = 4, idempotent, jitter = "none", breaker = "every_attempt")]
async fn retried_breaker(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// MicroProfile: Retry wraps CircuitBreaker, so each retry is recorded by the breaker.
/// docs: "circuit breaker: one per name (or per key); records every attempt" (inside retries).
#[tokio::test(start_paused = true)]
async fn breaker_records_every_retry_attempt() {
    let r = registry("[breakers.every_attempt]\nfailure_threshold = 5\ncooldown = \"60s\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(retried_breaker(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.attempts(), 5);
    assert_eq!(
        r.breaker("every_attempt").state(),
        BreakerState::Open,
        "one call of 5 attempts opens it"
    );
    assert!(is_open(&r.scope(retried_breaker(&dep)).await));
}

#[resilient(rate_limit = "order_rl", timeout = "1s", deadline = "10s")]
async fn limited_timed(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs order: "rate limit: a permit per attempt / per-attempt timeout" (the timeout inside the
/// rate limit): waiting for a permit does not eat the attempt's timeout.
#[tokio::test(start_paused = true)]
async fn rate_limit_wait_is_outside_attempt_timeout() {
    let r = registry("[rate_limits.order_rl]\nrate = 1\nper = \"2s\"\n");
    let dep = Dep::new(slow(500, ok(1)));
    let start = Instant::now();
    assert_eq!(r.scope(limited_timed(&dep)).await.unwrap(), 1);
    let res = r.scope(limited_timed(&dep)).await;
    assert_eq!(
        res.unwrap(),
        1,
        "the 2 s wait for a permit is not part of the 1 s timeout"
    );
    assert_eq!(dep.starts_ms(), [0, 2000]);
    assert_eq!(start.elapsed(), ms(2500));
}

#[resilient(retries = 3, idempotent, jitter = "none", timeout = "1s", deadline = "30s", breaker = "all", fallback = fb)]
async fn everything(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK combined Retry + Timeout + CircuitBreaker + Fallback: timeouts are retried, counted by the
/// breaker, and the final failure goes to the fallback (here the breaker opens on the 3rd timeout,
/// so the call ends with CircuitOpen, which the fallback answers).
/// docs: layer order; "A timed-out attempt is always a failure"; fallback "... or a rejection".
#[tokio::test(start_paused = true)]
async fn retry_timeout_breaker_fallback_together() {
    let r = registry("[breakers.all]\nfailure_threshold = 3\ncooldown = \"60s\"\n");
    let dep = Dep::new(slow(5000, ok(1)));
    let res = r.scope(everything(&dep)).await;
    assert_eq!(dep.attempts(), 3);
    assert_eq!(r.breaker("all").state(), BreakerState::Open);
    assert_eq!(res.unwrap(), 901, "the open circuit reached the fallback");
    // A later call: the fallback answers the open circuit at once.
    let start = Instant::now();
    assert_eq!(r.scope(everything(&dep)).await.unwrap(), 901);
    assert_eq!(start.elapsed(), Duration::ZERO);
    let _ = Rejected::KINDS;
}

async fn slow_cache(e: ApiError) -> Result<u32, ApiError> {
    tokio::time::sleep(secs(10)).await;
    match e {
        ApiError::NotFound | ApiError::Rejected(_) => Ok(77),
        e => Err(e),
    }
}

#[resilient(deadline = "2s", fallback = slow_cache)]
async fn deadline_slow_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK: Fallback is the outermost layer (it wraps Timeout). docs: README "Order of the layers":
/// the fallback "runs after the deadline, which does not bound it": a 10 s fallback under a 2 s
/// deadline answers at 10 s.
#[tokio::test(start_paused = true)]
async fn the_deadline_does_not_bound_a_slow_fallback() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::NotFound));
    let start = Instant::now();
    let res = r.scope(deadline_slow_fallback(&dep)).await;
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(start.elapsed(), secs(10));
}

#[resilient(breaker = "fb_on_b", fallback = fb, fallback_on = [ApiError::Unavailable])]
async fn fallback_on_excludes_rejection(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK FallbackApplyOnTest: an exception not in applyOn (here the open circuit) is not handled.
/// docs: "`fallback_on` lists the error variants that reach the fallback; any other error is
/// returned as it is."
#[tokio::test(start_paused = true)]
async fn fallback_on_does_not_take_unlisted_rejection() {
    let r = registry("[breakers.fb_on_b]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    assert_eq!(
        r.scope(fallback_on_excludes_rejection(&dep)).await.unwrap(),
        903
    );
    let res = r.scope(fallback_on_excludes_rejection(&dep)).await;
    assert!(is_open(&res), "{res:?}");
}
