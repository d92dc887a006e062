//! @Timeout (MicroProfile) / TimeLimiter (Resilience4j) / Polly Timeout.

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::{Rejected, resilient};
use tokio::time::Instant;

use crate::common::*;

#[resilient(timeout = "1s")]
async fn timed(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK TimeoutTest.testTimeout: a 5 s call under a 1 s timeout fails at 1 s with TimeoutException.
/// docs: "an attempt that runs longer fails with `Rejected::AttemptTimeout`".
#[tokio::test(start_paused = true)]
async fn timeout_cuts_a_slow_attempt() {
    let r = registry("");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    let res = r.scope(timed(&dep)).await;
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::AttemptTimeout { timeout })) if timeout == secs(1)),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), secs(1));
    assert_eq!(dep.attempts(), 1);
    assert_eq!(dep.in_flight(), 0, "the timed-out attempt was dropped");
}

/// TCK TimeoutTest.testNoTimeout: a call shorter than its timeout returns normally.
#[tokio::test(start_paused = true)]
async fn timeout_does_not_touch_a_fast_attempt() {
    let r = registry("");
    let dep = Dep::new(slow(999, ok(4)));
    let start = Instant::now();
    assert_eq!(r.scope(timed(&dep)).await.unwrap(), 4);
    assert_eq!(start.elapsed(), ms(999));
}

#[resilient(retries = 2, idempotent, jitter = "none", timeout = "1s")]
async fn timed_retried(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryTimeoutTest: each attempt gets its own timeout; a timeout is retried.
/// docs: "`Rejected::AttemptTimeout`, which is transient (so retried, and counted by a breaker)".
#[tokio::test(start_paused = true)]
async fn timeout_each_attempt_and_retried() {
    let r = registry("");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    let res = r.scope(timed_retried(&dep)).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    // 0-1 timeout, wait 1 s, 2-3 timeout, wait 2 s, 5-6 timeout
    assert_eq!(dep.starts_ms(), [0, 2000, 5000]);
    assert_eq!(start.elapsed(), secs(6));
}

/// TCK RetryTimeoutTest.testRetryTimeoutSuccess: a timed-out attempt, then a fast one succeeds.
#[tokio::test(start_paused = true)]
async fn timeout_then_retry_succeeds() {
    let r = registry("");
    let dep = Dep::scripted(vec![slow(5000, ok(1))], ok(2));
    let start = Instant::now();
    assert_eq!(r.scope(timed_retried(&dep)).await.unwrap(), 2);
    assert_eq!(start.elapsed(), secs(2));
}

#[resilient(timeout = "1s", fallback = fb)]
async fn timed_with_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK FallbackTimeoutTest: a timeout is handled by the fallback, at the timeout.
/// docs: fallback is "Called once the call has failed for good (its retries exhausted, or the
/// error not retried, or a rejection)".
#[tokio::test(start_paused = true)]
async fn timeout_then_fallback() {
    let r = registry("");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    assert_eq!(r.scope(timed_with_fallback(&dep)).await.unwrap(), 902);
    assert_eq!(start.elapsed(), secs(1));
    assert_eq!(
        r.metrics()
            .site("timed_with_fallback")
            .unwrap()
            .metrics
            .fallbacks,
        1
    );
}

#[resilient(timeout = "1s", breaker = "timeouts")]
async fn timed_breaker(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerTimeoutTest: timeouts count as circuit breaker failures.
/// docs: "A timed-out attempt is always a failure."
#[tokio::test(start_paused = true)]
async fn timeout_counts_as_breaker_failure() {
    let r = registry("[breakers.timeouts]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    let dep = Dep::new(slow(5000, ok(1)));
    for _ in 0..2 {
        let res = r.scope(timed_breaker(&dep)).await;
        assert!(
            matches!(
                res,
                Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
            ),
            "{res:?}"
        );
    }
    assert_eq!(r.breaker("timeouts").state(), BreakerState::Open);
    let start = Instant::now();
    assert!(is_open(&r.scope(timed_breaker(&dep)).await));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(dep.attempts(), 2);
}
