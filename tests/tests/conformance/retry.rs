//! @Retry (MicroProfile) / RetryConfig (Resilience4j) / Polly Retry.

use std::time::Duration;

use resilience_runtime::{Rejected, RetryOk, resilient};
use tokio::time::Instant;

use crate::common::*;

// ---------------------------------------------------------------- maxRetries

#[resilient(retries = 3, idempotent, jitter = "none")]
async fn max_retries(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryTest.testRetryMaxRetries: maxRetries = 3 on an always-failing service gives 4
/// invocations and the last exception.
/// docs: "`retries = N` | extra attempts after the first"; "delay = min(base·factorⁿ, max)", defaults 1s, 2.
#[tokio::test(start_paused = true)]
async fn retry_max_retries_then_last_error() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let start = Instant::now();
    let res = r.scope(max_retries(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.attempts(), 4);
    assert_eq!(dep.starts_ms(), [0, 1000, 3000, 7000]);
    assert_eq!(start.elapsed(), secs(7));
    let m = r.metrics();
    assert_eq!(m.site("max_retries").unwrap().metrics.retries, 3);
}

/// TCK RetryTest: succeeds on the 3rd invocation; retries stop at the first success.
/// docs: retries example in attributes.md (`0 | 1 => Err, n => Ok(n)` gives 2).
#[tokio::test(start_paused = true)]
async fn retry_stops_at_first_success() {
    let r = registry("");
    let dep = Dep::scripted(
        vec![fail(Kind::Unavailable), fail(Kind::Unavailable)],
        ok(5),
    );
    let res = r.scope(max_retries(&dep)).await;
    assert_eq!(res.unwrap(), 5);
    assert_eq!(dep.starts_ms(), [0, 1000, 3000]);
    let m = r.metrics();
    let s = &m.site("max_retries").unwrap().metrics;
    assert_eq!((s.ok, s.retries, s.retry_successes), (1, 2, 1));
}

#[resilient(idempotent, jitter = "none")]
async fn idempotent_default(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "With `idempotent` and no `retries`, the site retries 3 times (the connector platforms' default)."
/// (MicroProfile's @Retry default maxRetries is 3 too.)
#[tokio::test(start_paused = true)]
async fn retry_idempotent_without_retries_defaults_to_three() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(idempotent_default(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.attempts(), 4);
}

#[resilient(retries = 0)]
async fn no_retries(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK: maxRetries = 0 means exactly one invocation. docs: bare site: "no retries".
#[tokio::test(start_paused = true)]
async fn retry_zero_retries_one_attempt() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    assert!(matches!(
        r.scope(no_retries(&dep)).await,
        Err(ApiError::Unavailable)
    ));
    assert_eq!(dep.attempts(), 1);
}

// ---------------------------------------------------------------- delay / backoff

#[resilient(
    retries = 4,
    idempotent,
    backoff(base = "200ms", max = "2s", factor = 3),
    jitter = "none"
)]
async fn backoff_schedule(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Polly exponential backoff / TCK RetryTest delay: the waits are exactly min(base·factorⁿ, max).
/// docs: "The wait before retry `n` is `min(base * factor^n, max)`, then jittered."
#[tokio::test(start_paused = true)]
async fn retry_backoff_exact_schedule_capped_at_max() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(backoff_schedule(&dep)).await;
    // waits 200, 600, 1800, min(5400, 2000)
    assert_eq!(dep.starts_ms(), [0, 200, 800, 2600, 4600]);
}

// ---------------------------------------------------------------- jitter bounds

#[resilient(retries = 5, idempotent, jitter = "full", budget = "jitter")]
async fn jitter_full(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(retries = 5, idempotent, jitter = "equal", budget = "jitter")]
async fn jitter_equal(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(retries = 5, idempotent, budget = "jitter")]
async fn jitter_default(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(
    retries = 5,
    idempotent,
    jitter = "decorrelated",
    backoff(base = "1s", max = "10s"),
    budget = "jitter"
)]
async fn jitter_decorrelated(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

const NO_BUDGET: &str = "[budgets.jitter]\nenabled = false\n";
const SLACK: Duration = Duration::from_millis(1); // tokio's timer resolution

/// TCK RetryTest jitter: every delay stays within its bounds, and the delays vary.
/// docs (backoff.rs `Backoff::delay`, attributes.md jitter): full = uniform(0, d);
/// equal = d/2 + uniform(0, d/2); proportional (default) = d + uniform(0, 10% d);
/// decorrelated = uniform(base, 3·previous) capped at max.
#[tokio::test(start_paused = true)]
async fn retry_jitter_bounds_per_kind() {
    let r = registry(NO_BUDGET);
    let raw = |n: usize| secs(1u64 << n); // base 1s, factor 2, max 30s: n <= 4 stays under max
    let mut seen_full = Vec::new();
    for _ in 0..10 {
        let dep = Dep::new(fail(Kind::Unavailable));
        let _ = r.scope(jitter_full(&dep)).await;
        for (n, g) in dep.gaps().into_iter().enumerate() {
            assert!(
                g <= raw(n) + SLACK,
                "full jitter: gap {n} = {g:?} > {:?}",
                raw(n)
            );
            seen_full.push(g);
        }
    }
    seen_full.dedup();
    assert!(
        seen_full.len() > 10,
        "full jitter should vary: {seen_full:?}"
    );

    for _ in 0..10 {
        let dep = Dep::new(fail(Kind::Unavailable));
        let _ = r.scope(jitter_equal(&dep)).await;
        for (n, g) in dep.gaps().into_iter().enumerate() {
            assert!(
                g >= raw(n) / 2 && g <= raw(n) + SLACK,
                "equal jitter: gap {n} = {g:?}"
            );
        }
    }
    for _ in 0..10 {
        let dep = Dep::new(fail(Kind::Unavailable));
        let _ = r.scope(jitter_default(&dep)).await;
        for (n, g) in dep.gaps().into_iter().enumerate() {
            let hi = raw(n) + raw(n) / 10 + SLACK;
            assert!(
                g >= raw(n) && g <= hi,
                "proportional jitter: gap {n} = {g:?}"
            );
        }
    }
    for _ in 0..10 {
        let dep = Dep::new(fail(Kind::Unavailable));
        let _ = r.scope(jitter_decorrelated(&dep)).await;
        let mut prev = secs(1);
        for (n, g) in dep.gaps().into_iter().enumerate() {
            let hi = (prev * 3).min(secs(10)) + SLACK;
            assert!(
                g >= secs(1) && g <= hi,
                "decorrelated: gap {n} = {g:?}, prev {prev:?}"
            );
            prev = g;
        }
    }
}

// ---------------------------------------------------------------- retryOn / abortOn

#[resilient(retries = 3, idempotent, jitter = "none", abort_on = [ApiError::Maintenance])]
async fn abort_on_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryConditionTest: abortOn stops retrying although the exception would be retried.
/// docs: "`abort_on` never retries them (and wins over the class)".
#[tokio::test(start_paused = true)]
async fn retry_abort_on_wins_over_transient_class() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Maintenance));
    assert!(matches!(
        r.scope(abort_on_site(&dep)).await,
        Err(ApiError::Maintenance)
    ));
    assert_eq!(dep.attempts(), 1);
    // Another transient variant at the same site is still retried.
    let dep = Dep::new(fail(Kind::Unavailable));
    assert!(matches!(
        r.scope(abort_on_site(&dep)).await,
        Err(ApiError::Unavailable)
    ));
    assert_eq!(dep.attempts(), 4);
}

#[resilient(retries = 2, idempotent, jitter = "none", retry_on = [ApiError::Conflict])]
async fn retry_on_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryConditionTest retryOn: only the listed exception is retried beyond the defaults.
/// docs: "`retry_on` retries those variants whatever their class".
#[tokio::test(start_paused = true)]
async fn retry_on_makes_a_permanent_variant_retried() {
    let r = registry("");
    let dep = Dep::scripted(vec![fail(Kind::Conflict), fail(Kind::Conflict)], ok(1));
    assert_eq!(r.scope(retry_on_site(&dep)).await.unwrap(), 1);
    assert_eq!(dep.starts_ms(), [0, 1000, 3000]);
    // A permanent variant not listed is not retried.
    let dep = Dep::new(fail(Kind::NotFound));
    assert!(matches!(
        r.scope(retry_on_site(&dep)).await,
        Err(ApiError::NotFound)
    ));
    assert_eq!(dep.attempts(), 1);
}

/// TCK: an exception outside retryOn is not retried; Resilience4j: ignoreExceptions.
/// docs: classification table: Permanent "retried: no", PolicyViolation "no (escalated)",
/// Auth "after `refresh`" (no refresh hook here: returned).
#[tokio::test(start_paused = true)]
async fn retry_non_retryable_classes_run_once() {
    let r = registry("");
    for k in [Kind::NotFound, Kind::Forbidden, Kind::Corrupt, Kind::Gone] {
        let dep = Dep::new(fail(k));
        let res = r.scope(max_retries(&dep)).await;
        assert!(res.is_err());
        assert_eq!(dep.attempts(), 1, "{k:?} should not be retried");
    }
}

// ---------------------------------------------------------------- Retry-After

/// Polly: the wait honours a server's Retry-After. docs: "The wait before a retry is at least the
/// server's `Retry-After`"; "A server's Retry-After ... replaces a shorter wait".
#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_on_the_wait() {
    let r = registry("");
    let dep = Dep::scripted(
        vec![
            fail(Kind::Throttled(Some(secs(5)))), // wait max(1s, 5s) = 5s
            fail(Kind::Throttled(Some(ms(100)))), // wait max(2s, 100ms) = 2s
            fail(Kind::Throttled(None)),          // wait backoff 4s
        ],
        ok(7),
    );
    assert_eq!(r.scope(max_retries(&dep)).await.unwrap(), 7);
    assert_eq!(dep.starts_ms(), [0, 5000, 7000, 11000]);
}

/// docs: "a hint longer than the remaining deadline (or than 5 minutes) ends the call at once with
/// the server's error instead of sleeping."
#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_five_minutes_ends_the_call() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Throttled(Some(secs(301)))));
    let start = Instant::now();
    let res = r.scope(max_retries(&dep)).await;
    assert!(matches!(res, Err(ApiError::Throttled { .. })), "{res:?}");
    assert_eq!(dep.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[resilient(retries = 2, idempotent, jitter = "none", deadline = "10s")]
async fn retry_after_deadline(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: as above, the remaining deadline.
#[tokio::test(start_paused = true)]
async fn retry_after_beyond_deadline_ends_the_call_with_server_error() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Throttled(Some(secs(20)))));
    let start = Instant::now();
    let res = r.scope(retry_after_deadline(&dep)).await;
    assert!(matches!(res, Err(ApiError::Throttled { .. })), "{res:?}");
    assert_eq!(dep.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------- maxDuration / deadline

#[resilient(retries = 1, idempotent, jitter = "none", deadline = "3s")]
async fn deadline_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryTest maxDuration / Polly total timeout: a slow attempt is cut at the deadline.
/// docs: "`deadline = "60s"` | whole call, retries and waits included" (`Rejected::DeadlineExceeded`).
#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_in_flight() {
    let r = registry("");
    let dep = Dep::new(slow(10_000, ok(1)));
    let start = Instant::now();
    let res = r.scope(deadline_site(&dep)).await;
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::DeadlineExceeded { deadline })) if deadline == secs(3)),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), secs(3));
    assert_eq!(dep.attempts(), 1);
}

#[resilient(retries = 5, idempotent, jitter = "none", deadline = "40s")]
async fn max_duration(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryTest.testRetryMaxDuration: retries stop when maxDuration is reached, even with
/// retries left. Attempts of 4 s: 0-4, 5-9, 11-15, 19-23, 31-35; the next wait (16 s) would
/// overrun the 40 s deadline.
/// docs: "A limit on the whole call, retries and waits included".
#[tokio::test(start_paused = true)]
async fn deadline_stops_retries_before_max_retries() {
    let r = registry("");
    let dep = Dep::new(slow(4000, fail(Kind::Unavailable)));
    let start = Instant::now();
    let res = r.scope(max_duration(&dep)).await;
    assert!(res.is_err());
    assert!(
        start.elapsed() <= secs(40),
        "call took {:?}",
        start.elapsed()
    );
    assert_eq!(dep.starts_ms(), [0, 5000, 11000, 19000, 31000]);
    eprintln!(
        "deadline_stops_retries: ended at {:?} with {res:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------- retry budget

#[resilient(retries = 5, idempotent, jitter = "none", budget = "tight")]
async fn budgeted(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Polly/gRPC retry throttling: a spent budget ends the call with the dependency's last error.
/// docs: "When the budget refuses a retry, the call ends with the dependency's own last error (its
/// class intact), counted as `budget_exhausted`"; "first attempts are never refused".
#[tokio::test(start_paused = true)]
async fn retry_budget_refuses_retries_not_first_attempts() {
    let r = registry("[budgets.tight]\ncapacity = 10\nretry_cost = 5\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(budgeted(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.starts_ms(), [0, 1000, 3000]);
    assert_eq!(r.budget("tight").exhausted_total(), 1);
    assert_eq!(
        r.metrics()
            .site("budgeted")
            .unwrap()
            .metrics
            .budget_exhausted,
        1
    );
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(budgeted(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.attempts(), 1, "a first attempt is never refused");
}

// ---------------------------------------------------------------- retry on result

fn still_pending(v: &u32) -> RetryOk {
    match *v {
        202 => RetryOk::Retry,
        203 => RetryOk::RetryAfter(Duration::from_secs(5)),
        _ => RetryOk::Accept,
    }
}

#[resilient(retries = 3, idempotent, jitter = "none", retry_if_ok = still_pending)]
async fn poll(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j retryOnResult / Polly HandleResult.
/// docs: "`RetryOk::Retry` makes another attempt after the backoff; `RetryAfter(d)` after at
/// least `d` (and at least the backoff) ... When they run out, the last `Ok` is the call's result".
#[tokio::test(start_paused = true)]
async fn retry_on_result_then_accept_or_last_ok() {
    let r = registry("");
    let dep = Dep::scripted(vec![ok(202), ok(203)], ok(200));
    assert_eq!(r.scope(poll(&dep)).await.unwrap(), 200);
    // wait 1s (backoff), then max(2s, 5s)
    assert_eq!(dep.starts_ms(), [0, 1000, 6000]);

    let dep = Dep::new(ok(202));
    let start = Instant::now();
    assert_eq!(
        r.scope(poll(&dep)).await.unwrap(),
        202,
        "the last Ok is the result"
    );
    assert_eq!(dep.attempts(), 4);
    assert_eq!(start.elapsed(), secs(7));
}
