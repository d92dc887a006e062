//! @CircuitBreaker (MicroProfile) / CircuitBreaker (Resilience4j) / Polly circuit breaker.

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{Rejected, resilient};
use tokio::time::Instant;

use crate::common::*;

#[resilient(breaker = "cb")]
async fn guarded(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

const CONSECUTIVE: &str = "[breakers.cb]\nfailure_threshold = 3\ncooldown = \"10s\"\n";

async fn calls(
    r: &resilience_runtime::Registry,
    dep: &Dep,
    n: usize,
) -> Vec<Result<u32, ApiError>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.scope(guarded(dep)).await);
    }
    out
}

/// Polly consecutive-failure breaker: a success resets the count; the threshold-th consecutive
/// failure opens; an open breaker does not run the body.
/// docs: "CLOSED → OPEN after 5 consecutive failures" (`failure_threshold` in `[breakers.<name>]`);
/// "calls fail at once with `Rejected::CircuitOpen`, without running the body".
#[tokio::test(start_paused = true)]
async fn breaker_consecutive_threshold_and_reset_by_success() {
    let r = registry(CONSECUTIVE);
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![f(), f(), ok(1), f(), f()], f());
    calls(&r, &dep, 5).await;
    assert_eq!(
        r.breaker("cb").state(),
        BreakerState::Closed,
        "F F S F F: not 3 in a row"
    );
    calls(&r, &dep, 1).await;
    assert_eq!(r.breaker("cb").state(), BreakerState::Open);
    let start = Instant::now();
    let res = r.scope(guarded(&dep)).await;
    assert!(is_open(&res), "{res:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(dep.attempts(), 6, "the open breaker ran no body");
}

/// TCK CircuitBreakerTest delay: calls are rejected until the delay has passed, with the wait left.
/// docs: `Rejected::CircuitOpen { retry_in: "Time until the breaker lets a probe through" }`.
#[tokio::test(start_paused = true)]
async fn breaker_rejection_reports_remaining_cooldown() {
    let r = registry(CONSECUTIVE);
    let dep = Dep::new(fail(Kind::Unavailable));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(4)).await;
    match r.scope(guarded(&dep)).await {
        Err(ApiError::Rejected(Rejected::CircuitOpen { retry_in, breaker })) => {
            assert_eq!(retry_in, secs(6));
            assert_eq!(&*breaker, "cb");
        }
        other => panic!("{other:?}"),
    }
}

/// TCK CircuitBreakerTest: after `delay` the breaker half-opens and a successful trial closes it
/// (successThreshold = 1); before it, still open.
/// docs: "HALF-OPEN after 60 s" / `cooldown`; "HALF-OPEN --(success_threshold successes)--> CLOSED".
#[tokio::test(start_paused = true)]
async fn breaker_cooldown_then_probe_closes() {
    let r = registry(CONSECUTIVE);
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 3], ok(1));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(10) - ms(1)).await;
    assert!(
        is_open(&r.scope(guarded(&dep)).await),
        "1 ms before the cooldown ends"
    );
    tokio::time::advance(ms(1)).await;
    assert_eq!(r.scope(guarded(&dep)).await.unwrap(), 1);
    assert_eq!(r.breaker("cb").state(), BreakerState::Closed);
    assert_eq!(dep.attempts(), 4);
}

/// TCK CircuitBreakerTest: a failure in half-open reopens for a full delay.
/// docs: "HALF-OPEN --(one failure)--> OPEN".
#[tokio::test(start_paused = true)]
async fn breaker_half_open_failure_reopens_for_full_cooldown() {
    let r = registry(CONSECUTIVE);
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 4], ok(1));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(10)).await;
    assert!(
        matches!(r.scope(guarded(&dep)).await, Err(ApiError::Unavailable)),
        "probe runs, fails"
    );
    assert_eq!(r.breaker("cb").state(), BreakerState::Open);
    tokio::time::advance(secs(10) - ms(1)).await;
    assert!(is_open(&r.scope(guarded(&dep)).await));
    tokio::time::advance(ms(1)).await;
    assert_eq!(r.scope(guarded(&dep)).await.unwrap(), 1);
    assert_eq!(r.breaker("cb").state(), BreakerState::Closed);
}

/// TCK CircuitBreakerTest successThreshold = 2: one good trial keeps it half-open, the second
/// closes it; a failure among the trials reopens it.
/// docs: `success_threshold` "Successful probes needed to close (default 1)".
#[tokio::test(start_paused = true)]
async fn breaker_success_threshold_in_half_open() {
    let r = registry(
        "[breakers.cb]\nfailure_threshold = 3\ncooldown = \"10s\"\nsuccess_threshold = 2\n",
    );
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 3], ok(1));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(10)).await;
    assert_eq!(r.scope(guarded(&dep)).await.unwrap(), 1);
    assert_eq!(
        r.breaker("cb").state(),
        BreakerState::HalfOpen,
        "one success of two"
    );
    assert_eq!(r.scope(guarded(&dep)).await.unwrap(), 1);
    assert_eq!(r.breaker("cb").state(), BreakerState::Closed);

    // Reopen; this time a failure after one good trial reopens.
    dep.push(vec![fail(Kind::Unavailable); 3]);
    calls(&r, &dep, 3).await;
    assert_eq!(r.breaker("cb").state(), BreakerState::Open);
    tokio::time::advance(secs(10)).await;
    dep.push([ok(1), fail(Kind::Unavailable)]);
    calls(&r, &dep, 2).await;
    assert_eq!(r.breaker("cb").state(), BreakerState::Open);
}

/// TCK CircuitBreakerBulkheadTest / Resilience4j permittedNumberOfCallsInHalfOpenState = 1:
/// concurrent calls in half-open beyond the probes allowed are rejected at once.
/// docs: "At most `half_open_probes` probes are in flight at once" (default 1).
#[tokio::test(start_paused = true)]
async fn breaker_half_open_admits_one_probe_at_a_time() {
    let r = registry(CONSECUTIVE);
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 3], slow(1000, ok(1)));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(10)).await;
    let (a, b, c) = tokio::join!(
        r.scope(guarded(&dep)),
        r.scope(guarded(&dep)),
        r.scope(guarded(&dep))
    );
    let results = [a, b, c];
    let oks = results.iter().filter(|x| x.is_ok()).count();
    let open = results.iter().filter(|x| is_open(x)).count();
    assert_eq!((oks, open), (1, 2), "{results:?}");
    assert_eq!(dep.attempts(), 4);
    assert_eq!(r.breaker("cb").state(), BreakerState::Closed);
}

/// Resilience4j permittedNumberOfCallsInHalfOpenState = 2 with successThreshold 2.
/// docs: `half_open_probes`, `success_threshold` in `[breakers.<name>]`.
#[tokio::test(start_paused = true)]
async fn breaker_half_open_two_probes_both_needed_to_close() {
    let r = registry(
        "[breakers.cb]\nfailure_threshold = 3\ncooldown = \"10s\"\nhalf_open_probes = 2\nsuccess_threshold = 2\n",
    );
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 3], slow(1000, ok(1)));
    calls(&r, &dep, 3).await;
    tokio::time::advance(secs(10)).await;
    let (a, b, c) = tokio::join!(
        r.scope(guarded(&dep)),
        r.scope(guarded(&dep)),
        r.scope(guarded(&dep))
    );
    let results = [a, b, c];
    let oks = results.iter().filter(|x| x.is_ok()).count();
    assert_eq!(oks, 2, "{results:?}");
    assert_eq!(dep.max_in_flight(), 2);
    assert_eq!(r.breaker("cb").state(), BreakerState::Closed);
}

// ---------------------------------------------------------------- ratio mode

#[resilient(breaker = "ratio")]
async fn ratio_guarded(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

async fn ratio_calls(r: &resilience_runtime::Registry, dep: &Dep, n: usize) {
    for _ in 0..n {
        let _ = r.scope(ratio_guarded(dep)).await;
    }
}

/// TCK CircuitBreakerTest (requestVolumeThreshold = 4, failureRatio = 0.5): three failures do
/// not open (volume not reached); the 4th call, a success, opens at 3/4 >= 0.5.
/// docs: "Open when the failure ratio over the last `window` calls reaches `ratio`; only once the
/// window is full ... a success that fills the window at the ratio opens it too."
#[tokio::test(start_paused = true)]
async fn breaker_ratio_opens_only_on_full_window() {
    let r = registry("[breakers.ratio]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![f(), f(), f()], ok(1));
    ratio_calls(&r, &dep, 3).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Closed);
    ratio_calls(&r, &dep, 1).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Open);
}

/// TCK CircuitBreakerTest rolling window (requestVolumeThreshold = 4, failureRatio = 0.75):
/// S S F F -> closed (2/4); F -> last four S F F F = 3/4 -> open.
/// docs: "the failure ratio over the last `window` calls".
#[tokio::test(start_paused = true)]
async fn breaker_ratio_rolling_window() {
    let r = registry("[breakers.ratio]\nwindow = 4\nfailure_ratio = 0.75\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![ok(1), ok(1), f(), f(), f()], ok(1));
    ratio_calls(&r, &dep, 4).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Closed);
    ratio_calls(&r, &dep, 1).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Open);
}

/// Resilience4j COUNT_BASED window: alternating S/F at 50 % never reaches 0.75.
#[tokio::test(start_paused = true)]
async fn breaker_ratio_below_threshold_stays_closed() {
    let r = registry("[breakers.ratio]\nwindow = 4\nfailure_ratio = 0.75\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(
        vec![ok(1), f(), ok(1), f(), ok(1), f(), ok(1), f(), ok(1), f()],
        ok(1),
    );
    ratio_calls(&r, &dep, 10).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Closed);
    assert_eq!(dep.attempts(), 10);
}

/// Resilience4j: when the breaker goes HALF_OPEN -> CLOSED its sliding window is reset, so one
/// failure right after closing cannot reopen it.
/// peer (docs silent): the docs do not say whether the ratio window is emptied on closing.
#[tokio::test(start_paused = true)]
async fn breaker_ratio_window_fresh_after_closing_peer() {
    let r = registry("[breakers.ratio]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    // S S F F opens (2/4 = 0.5).
    let dep = Dep::scripted(vec![ok(1), ok(1), f(), f(), ok(1), f()], ok(1));
    ratio_calls(&r, &dep, 4).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Open);
    tokio::time::advance(secs(10)).await;
    ratio_calls(&r, &dep, 1).await; // probe succeeds
    assert_eq!(r.breaker("ratio").state(), BreakerState::Closed);
    ratio_calls(&r, &dep, 1).await; // one failure in a fresh window
    assert_eq!(
        r.breaker("ratio").state(),
        BreakerState::Closed,
        "one failure after closing must not reopen (window = 4)"
    );
}

/// Resilience4j minimumNumberOfCalls = 5 < slidingWindowSize = 10: 5 failures of 5 calls open.
/// documented divergence: "only once the window is full (as MicroProfile Fault Tolerance's
/// `requestVolumeThreshold`)"; there is no `minimum_calls` key (an unknown key is refused).
#[tokio::test(start_paused = true)]
async fn breaker_ratio_no_minimum_calls_divergence() {
    let r = registry("[breakers.ratio]\nwindow = 10\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    ratio_calls(&r, &dep, 5).await;
    assert_eq!(
        r.breaker("ratio").state(),
        BreakerState::Closed,
        "docs: window not full yet"
    );
    ratio_calls(&r, &dep, 5).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Open);
    assert!(
        RegistryConfig::from_toml_str(
            "[breakers.x]\nwindow = 10\nfailure_ratio = 0.5\nminimum_calls = 5\n"
        )
        .is_err()
    );
}

/// Resilience4j slowCallRateThreshold / slowCallDurationThreshold.
/// documented divergence: no slow-call keys exist (RawBreaker keys: failure_threshold, window,
/// failure_ratio, cooldown, half_open_probes, success_threshold, ...); only a `timeout` turns a
/// slow call into a failure ("A timed-out attempt is always a failure").
#[tokio::test(start_paused = true)]
async fn breaker_slow_calls_unsupported_divergence() {
    let err = RegistryConfig::from_toml_str(
        "[breakers.x]\nwindow = 10\nfailure_ratio = 0.5\nslow_call_duration_threshold = \"2s\"\n",
    )
    .unwrap_err();
    assert!(err.field().contains("breakers.x"), "{err}");
    // Slow successes never open the breaker.
    let r = registry("[breakers.ratio]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let dep = Dep::new(slow(30_000, ok(1)));
    ratio_calls(&r, &dep, 8).await;
    assert_eq!(r.breaker("ratio").state(), BreakerState::Closed);
}

// ---------------------------------------------------------------- what counts (failOn / skipOn)

#[resilient(breaker = "counts")]
async fn counted(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerConfigTest failOn / skipOn; Resilience4j recordExceptions / ignoreExceptions.
/// docs: "Only transient failures and timeouts count. Permanent, policy and auth errors ... count
/// as neither success nor failure"; throttled: "counts for the breaker: no";
/// `breaker = "failure"` / `"ignored"` / `"success"` on a variant.
#[tokio::test(start_paused = true)]
async fn breaker_what_counts_as_failure() {
    let r = registry("[breakers.counts]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    let run = |k: Kind, n: usize| {
        let r = r.clone();
        async move {
            let dep = Dep::new(fail(k));
            for _ in 0..n {
                let _ = r.scope(counted(&dep)).await;
            }
        }
    };
    for k in [
        Kind::NotFound,
        Kind::Forbidden,
        Kind::Unauthorized,
        Kind::Throttled(Some(ms(10))),
        Kind::Locked,
        Kind::Gone,
    ] {
        run(k, 5).await;
        assert_eq!(
            r.breaker("counts").state(),
            BreakerState::Closed,
            "{k:?} must not count"
        );
    }
    // Neither success nor failure: does not reset the consecutive count.
    run(Kind::Unavailable, 1).await;
    run(Kind::NotFound, 1).await;
    run(Kind::Locked, 1).await;
    run(Kind::Unavailable, 1).await;
    assert_eq!(
        r.breaker("counts").state(),
        BreakerState::Open,
        "F, ignored, ignored, F = 2 consecutive"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_fail_on_permanent_variant_and_success_outcome() {
    let r = registry("[breakers.counts]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    // `breaker = "success"` resets the count.
    let dep = Dep::scripted(
        vec![
            fail(Kind::Unavailable),
            fail(Kind::Gone),
            fail(Kind::Unavailable),
        ],
        ok(1),
    );
    for _ in 0..3 {
        let _ = r.scope(counted(&dep)).await;
    }
    assert_eq!(r.breaker("counts").state(), BreakerState::Closed);
    // `permanent, breaker = "failure"` counts (failOn for a non-retried error).
    let dep = Dep::new(fail(Kind::Corrupt));
    let _ = r.scope(counted(&dep)).await;
    assert_eq!(r.breaker("counts").state(), BreakerState::Open);
}

// ---------------------------------------------------------------- breaker + retry

#[resilient(retries = 5, idempotent, jitter = "none", breaker = "cbr")]
async fn retried_guarded(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerRetryTest.testCircuitOpenWithMoreRetries: the breaker opens during the
/// retries; the remaining retries get CircuitBreakerOpenException without invoking the method.
/// docs: "circuit breaker ... records every attempt"; "An open breaker ends the call at once with
/// `Rejected::CircuitOpen` (it is not retried: failing fast is the point)".
#[tokio::test(start_paused = true)]
async fn breaker_opens_during_retries_and_ends_the_call() {
    let r = registry("[breakers.cbr]\nfailure_threshold = 3\ncooldown = \"60s\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let start = Instant::now();
    let res = r.scope(retried_guarded(&dep)).await;
    assert_eq!(
        dep.attempts(),
        3,
        "the 4th attempt is refused by the open breaker"
    );
    assert!(is_open(&res), "{res:?}");
    assert!(start.elapsed() <= secs(7), "{:?}", start.elapsed());
    eprintln!(
        "breaker_opens_during_retries: ended at {:?}",
        start.elapsed()
    );
}

#[resilient(
    retries = 5,
    idempotent,
    jitter = "none",
    backoff(base = "100ms"),
    breaker = "cbr2",
    retry_on = [ApiError::Rejected]
)]
async fn retried_through_open(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerRetryTest.testRetriesSucceedWhenCircuitCloses (retryOn includes
/// CircuitBreakerOpenException): the retry waits for the breaker and succeeds as a probe.
/// docs: "unless the site lists the rejection in `retry_on`: then the open circuit is retried like
/// a failure (a retry spent, `idempotent` needed), after at least the breaker's remaining cooldown."
#[tokio::test(start_paused = true)]
async fn breaker_open_retried_when_listed_in_retry_on() {
    let r = registry("[breakers.cbr2]\nfailure_threshold = 2\ncooldown = \"1s\"\n");
    let dep = Dep::scripted(
        vec![fail(Kind::Unavailable), fail(Kind::Unavailable)],
        ok(3),
    );
    let start = Instant::now();
    assert_eq!(r.scope(retried_through_open(&dep)).await.unwrap(), 3);
    assert_eq!(dep.attempts(), 3);
    // Opened at 100 ms (2nd failure); the probe at >= 1.1 s.
    assert!(dep.starts()[2] >= ms(1100), "{:?}", dep.starts());
    assert!(start.elapsed() < secs(2), "{:?}", start.elapsed());
    assert_eq!(r.breaker("cbr2").state(), BreakerState::Closed);
}

// ---------------------------------------------------------------- per key

struct Tenant(String);

impl Tenant {
    #[resilient(breaker = "per_tenant", breaker_key = self.0.as_str())]
    async fn read(&self, dep: &Dep) -> Result<u32, ApiError> {
        dep.call().await
    }
}

/// Resilience4j CircuitBreakerRegistry per tenant: one tenant's open breaker does not refuse another.
/// docs: "`breaker_key = expr` keeps one breaker per key (a tenant)".
#[tokio::test(start_paused = true)]
async fn breaker_per_key_isolation() {
    let r = registry("[breakers.per_tenant]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let bad = Dep::new(fail(Kind::Unavailable));
    let good = Dep::new(ok(1));
    let a = Tenant("a".into());
    let b = Tenant("b".into());
    let _ = r.scope(a.read(&bad)).await;
    assert!(is_open(&r.scope(a.read(&good)).await));
    assert_eq!(r.scope(b.read(&good)).await.unwrap(), 1);
    assert_eq!(
        r.keyed_breakers("per_tenant").get("a").state(),
        BreakerState::Open
    );
}
