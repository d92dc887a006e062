//! RateLimiter (Resilience4j) / Polly rate limiter; Retry-After pausing a shared limiter.

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::{Rejected, resilient};
use tokio::time::Instant;

use crate::common::*;

#[resilient(rate_limit = "rl")]
async fn limited(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j RateLimiter with timeoutDuration = 0: a call without a permit fails at once
/// (RequestNotPermitted).
/// docs: the call waits "without one [deadline] within the site's worst-case retry schedule (none
/// for a site without retries) ... When capacity does not come in time the call returns the
/// `Rejected`"; `Rejected::RateLimited { retry_in }`.
#[tokio::test(start_paused = true)]
async fn rate_limit_refuses_at_once_without_deadline_or_retries() {
    let r = registry("[rate_limits.rl]\nrate = 1\nper = \"10s\"\n");
    let dep = Dep::new(ok(1));
    assert_eq!(r.scope(limited(&dep)).await.unwrap(), 1);
    let start = Instant::now();
    let res = r.scope(limited(&dep)).await;
    match res {
        Err(ApiError::Rejected(Rejected::RateLimited { retry_in, .. })) => {
            assert_eq!(retry_in, secs(10))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(dep.attempts(), 1);
}

#[resilient(rate_limit = "rl", deadline = "5s")]
async fn limited_waiting(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j RateLimiter with timeoutDuration: the call waits for a permit.
/// docs (limit.rs `Gcra`): "`rate` permits per `per`, with bursts of up to `rate`"; GCRA: after
/// the burst one permit every per/rate.
/// documented divergence: Resilience4j's fixed refresh period (limitForPeriod = 2,
/// limitRefreshPeriod = 1s) would start calls at 0, 0, 1 s, 1 s; GCRA starts them at 0, 0, 0.5 s,
/// 1 s, i.e. 3 permits inside the first second.
#[tokio::test(start_paused = true)]
async fn rate_limit_waits_within_deadline_gcra_spacing() {
    let r = registry("[rate_limits.rl]\nrate = 2\nper = \"1s\"\n");
    let dep = Dep::new(ok(1));
    for _ in 0..4 {
        assert_eq!(r.scope(limited_waiting(&dep)).await.unwrap(), 1);
    }
    assert_eq!(dep.starts_ms(), [0, 0, 500, 1000]);
}

#[resilient(
    rate_limit = "rl",
    breaker = "rl_breaker",
    retries = 2,
    idempotent,
    jitter = "none"
)]
async fn limited_guarded(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j: RequestNotPermitted is not recorded by a CircuitBreaker placed outside it only if
/// ignored; here the docs say a refusal "spends no retry and no budget, records nothing on the
/// breaker".
#[tokio::test(start_paused = true)]
async fn rate_limit_refusal_is_no_attempt() {
    let r = registry(
        "[rate_limits.rl]\nrate = 1\nper = \"1h\"\n[breakers.rl_breaker]\nfailure_threshold = 1\ncooldown = \"10s\"\n",
    );
    let dep = Dep::new(ok(1));
    assert_eq!(r.scope(limited_guarded(&dep)).await.unwrap(), 1);
    let res = r.scope(limited_guarded(&dep)).await;
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::RateLimited { .. }))),
        "{res:?}"
    );
    assert_eq!(dep.attempts(), 1);
    assert_eq!(r.breaker("rl_breaker").state(), BreakerState::Closed);
    let m = r.metrics();
    let s = &m.site("limited_guarded").unwrap().metrics;
    assert_eq!(s.retries, 0);
    assert!(s.rate_limit_blocked >= 1);
}

#[resilient(retries = 1, idempotent, jitter = "none", rate_limit = "graph")]
async fn throttled_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(rate_limit = "graph", deadline = "10s")]
async fn sibling_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Polly/Graph practice: a 429's Retry-After holds back every call through the same limiter.
/// docs: "A `throttled` error with a wait hint at a site with a `rate_limit` pauses that whole
/// named limiter for the hint ... every call through `rate_limit = "graph"` waits for capacity
/// until the hint has passed".
#[tokio::test(start_paused = true)]
async fn retry_after_pauses_the_shared_rate_limiter() {
    let r = registry("[rate_limits.graph]\nrate = 100\nper = \"1s\"\n");
    let a = Dep::scripted(vec![fail(Kind::Throttled(Some(secs(3))))], ok(1));
    let b = Dep::new(ok(2));
    let sibling = async {
        tokio::time::sleep(ms(10)).await;
        r.scope(sibling_site(&b)).await
    };
    let (ra, rb) = tokio::join!(r.scope(throttled_site(&a)), sibling);
    assert_eq!((ra.unwrap(), rb.unwrap()), (1, 2));
    assert!(a.starts()[1] >= secs(3), "{:?}", a.starts());
    assert!(
        b.starts()[0] >= secs(3),
        "sibling started at {:?}",
        b.starts()
    );
}
