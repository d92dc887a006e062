//! Second batch: half-open edge cases, ratio arithmetic, generations, budgets, site policies,
//! refresh, limits against the deadline.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::backoff::{Backoff, Jitter};
use resilience_runtime::breaker::BreakerState;
use resilience_runtime::registry::{PolicyOverride, RegistryConfig};
use resilience_runtime::{Rejected, RetryOk, resilient, with_policy};
use tokio::time::Instant;

use crate::common::*;

// ---------------------------------------------------------------- breaker: half-open edge cases

#[resilient(breaker = "ho")]
async fn ho(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(breaker = "ho", timeout = "1s")]
async fn ho_timed(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

const HO: &str = "[breakers.ho]\nfailure_threshold = 1\ncooldown = \"10s\"\n";

async fn trip(r: &resilience_runtime::Registry) {
    let d = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(ho(&d)).await;
    assert_eq!(r.breaker("ho").state(), BreakerState::Open);
}

/// MicroProfile: an exception that is not a failure (not in failOn / in skipOn) is a success for
/// the breaker, so the trial closes it. docs: "Permanent, policy and auth errors ... count as neither
/// success nor failure" -> the probe neither closes nor reopens; its slot comes back and the next
/// call is a probe.
#[tokio::test(start_paused = true)]
async fn half_open_probe_with_neutral_error_neither_closes_nor_reopens() {
    let r = registry(HO);
    trip(&r).await;
    tokio::time::advance(secs(10)).await;
    let dep = Dep::scripted(vec![fail(Kind::NotFound)], ok(1));
    assert!(matches!(r.scope(ho(&dep)).await, Err(ApiError::NotFound)));
    assert_ne!(
        r.breaker("ho").state(),
        BreakerState::Open,
        "a neutral error must not reopen"
    );
    assert_ne!(
        r.breaker("ho").state(),
        BreakerState::Closed,
        "a neutral error must not close"
    );
    assert_eq!(r.breaker("ho").probes_in_flight(), 0);
    assert_eq!(
        r.scope(ho(&dep)).await.unwrap(),
        1,
        "next call is admitted as a probe"
    );
    assert_eq!(r.breaker("ho").state(), BreakerState::Closed);
}

/// TCK CircuitBreakerTimeoutTest in half-open: a timed-out trial reopens.
#[tokio::test(start_paused = true)]
async fn half_open_probe_timeout_reopens() {
    let r = registry(HO);
    trip(&r).await;
    tokio::time::advance(secs(10)).await;
    let dep = Dep::new(slow(5000, ok(1)));
    let res = r.scope(ho_timed(&dep)).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(r.breaker("ho").state(), BreakerState::Open);
}

/// docs (breaker.rs): "until then it refuses with a zero wait, as a full half-open breaker does".
#[tokio::test(start_paused = true)]
async fn half_open_full_refuses_with_zero_wait() {
    let r = registry(HO);
    trip(&r).await;
    tokio::time::advance(secs(10)).await;
    let dep = Dep::new(slow(1000, ok(1)));
    let second = async {
        tokio::time::sleep(ms(10)).await;
        r.scope(ho(&dep)).await
    };
    let (a, b) = tokio::join!(r.scope(ho(&dep)), second);
    assert_eq!(a.unwrap(), 1);
    match b {
        Err(ApiError::Rejected(Rejected::CircuitOpen { retry_in, .. })) => {
            assert_eq!(retry_in, Duration::ZERO)
        }
        other => panic!("{other:?}"),
    }
}

/// RELIABILITY.md: a cancelled call "gives back its breaker ticket"; a dropped probe frees its slot.
#[tokio::test(start_paused = true)]
async fn half_open_cancelled_probe_frees_its_slot() {
    let r = registry(HO);
    trip(&r).await;
    tokio::time::advance(secs(10)).await;
    let dep = Dep::scripted(vec![slow(60_000, ok(1))], ok(2));
    let cancelled = tokio::time::timeout(ms(500), r.scope(ho(&dep))).await;
    assert!(cancelled.is_err(), "dropped mid-probe");
    assert_eq!(r.breaker("ho").probes_in_flight(), 0);
    assert_eq!(r.scope(ho(&dep)).await.unwrap(), 2);
    assert_eq!(r.breaker("ho").state(), BreakerState::Closed);
}

/// docs: success_threshold "may exceed `half_open_probes`" (probes succeed one after another).
#[tokio::test(start_paused = true)]
async fn success_threshold_above_probe_count_closes_after_sequential_probes() {
    let r = registry(
        "[breakers.ho]\nfailure_threshold = 1\ncooldown = \"10s\"\nsuccess_threshold = 3\n",
    );
    trip(&r).await;
    tokio::time::advance(secs(10)).await;
    let dep = Dep::new(ok(1));
    for i in 0..3 {
        assert_eq!(r.scope(ho(&dep)).await.unwrap(), 1, "probe {i}");
    }
    assert_eq!(r.breaker("ho").state(), BreakerState::Closed);
}

/// docs (breaker.rs): "a result that arrives from an older generation (a slow call that started
/// before the breaker opened) is ignored". Polly/Resilience4j do the same for calls permitted in an
/// earlier state.
#[tokio::test(start_paused = true)]
async fn stale_failure_from_before_opening_is_ignored() {
    let r = registry("[breakers.ho]\nfailure_threshold = 1\ncooldown = \"1s\"\n");
    let slow_dep = Dep::new(slow(5000, fail(Kind::Unavailable)));
    let fast_fail = Dep::new(fail(Kind::Unavailable));
    let good = Dep::new(ok(1));
    let others = async {
        tokio::time::sleep(ms(10)).await;
        let _ = r.scope(ho(&fast_fail)).await; // opens
        assert_eq!(r.breaker("ho").state(), BreakerState::Open);
        tokio::time::sleep(ms(1100)).await;
        assert_eq!(r.scope(ho(&good)).await.unwrap(), 1); // probe closes
        assert_eq!(r.breaker("ho").state(), BreakerState::Closed);
    };
    let (stale, ()) = tokio::join!(r.scope(ho(&slow_dep)), others);
    assert!(matches!(stale, Err(ApiError::Unavailable)));
    assert_eq!(
        r.breaker("ho").state(),
        BreakerState::Closed,
        "the stale failure must not reopen"
    );
}

/// Default settings (no configuration): README "CLOSED → OPEN after 5 consecutive failures ...
/// HALF-OPEN after 60 s".
#[tokio::test(start_paused = true)]
async fn breaker_defaults_five_failures_sixty_seconds() {
    let r = registry("");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 5], ok(1));
    for _ in 0..4 {
        let _ = r.scope(ho(&dep)).await;
    }
    assert_eq!(r.breaker("ho").state(), BreakerState::Closed);
    let _ = r.scope(ho(&dep)).await;
    assert_eq!(r.breaker("ho").state(), BreakerState::Open);
    match r.scope(ho(&dep)).await {
        Err(ApiError::Rejected(Rejected::CircuitOpen { retry_in, .. })) => {
            assert_eq!(retry_in, secs(60))
        }
        other => panic!("{other:?}"),
    }
    tokio::time::advance(secs(60)).await;
    assert_eq!(r.scope(ho(&dep)).await.unwrap(), 1);
}

// ---------------------------------------------------------------- ratio arithmetic

#[resilient(breaker = "ratio2")]
async fn r2(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs (TripMode::Ratio): "it opens at the fewest failures `n` in the window with
/// `n / window >= ratio`, the decimal compared as written (7 of 50 calls reach `0.14`)".
#[tokio::test(start_paused = true)]
async fn ratio_decimal_seven_of_fifty_reaches_point_fourteen() {
    let cfg = "[breakers.ratio2]\nwindow = 50\nfailure_ratio = 0.14\ncooldown = \"10s\"\n";
    let r = registry(cfg);
    let dep = Dep::scripted(vec![ok(1); 44], fail(Kind::Unavailable));
    for _ in 0..50 {
        let _ = r.scope(r2(&dep)).await;
    }
    assert_eq!(
        r.breaker("ratio2").state(),
        BreakerState::Closed,
        "6 of 50 < 0.14"
    );
    let r = registry(cfg);
    let dep = Dep::scripted(vec![ok(1); 43], fail(Kind::Unavailable));
    for _ in 0..50 {
        let _ = r.scope(r2(&dep)).await;
    }
    assert_eq!(
        r.breaker("ratio2").state(),
        BreakerState::Open,
        "7 of 50 = 0.14"
    );
}

/// MicroProfile failureRatio = 1.0: opens only when every call in the window failed.
#[tokio::test(start_paused = true)]
async fn ratio_one_needs_all_failures() {
    let r = registry("[breakers.ratio2]\nwindow = 3\nfailure_ratio = 1.0\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![f(), f(), ok(1), f(), f()], f());
    for _ in 0..5 {
        let _ = r.scope(r2(&dep)).await;
    }
    assert_eq!(
        r.breaker("ratio2").state(),
        BreakerState::Closed,
        "F F S F F"
    );
    let _ = r.scope(r2(&dep)).await;
    assert_eq!(r.breaker("ratio2").state(), BreakerState::Open, "... F F F");
}

/// Neutral errors (permanent) are not calls of the window (Resilience4j: ignored exceptions are not
/// recorded). docs: "count as neither success nor failure".
#[tokio::test(start_paused = true)]
async fn ratio_neutral_errors_do_not_fill_the_window() {
    let r = registry("[breakers.ratio2]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let dep = Dep::scripted(
        vec![
            fail(Kind::Unavailable),
            fail(Kind::NotFound),
            fail(Kind::NotFound),
            fail(Kind::NotFound),
        ],
        ok(1),
    );
    for _ in 0..4 {
        let _ = r.scope(r2(&dep)).await;
    }
    assert_eq!(
        r.breaker("ratio2").state(),
        BreakerState::Closed,
        "1 recorded call, window not full"
    );
}

/// TCK CircuitBreakerConfigTest validation, as configuration-load errors.
/// docs: "`window` 1 to 10,000, `failure_ratio` in (0, 1], `success_threshold` 1 to 255,
/// `half_open_probes` 1 to the window"; "give either `failure_threshold` ... or `window` and
/// `failure_ratio`".
#[test]
fn breaker_config_validation() {
    let bad = [
        ("window = 4\nfailure_ratio = 0.0", "failure_ratio"),
        ("window = 4\nfailure_ratio = 1.5", "failure_ratio"),
        ("window = 0\nfailure_ratio = 0.5", "window"),
        (
            "window = 2\nfailure_ratio = 0.5\nhalf_open_probes = 3",
            "half_open_probes",
        ),
        ("success_threshold = 0", "success_threshold"),
        ("failure_threshold = 0", "failure_threshold"),
        (
            "failure_threshold = 3\nwindow = 4\nfailure_ratio = 0.5",
            "window",
        ),
        ("window = 4", "failure_ratio"),
        ("cooldown = \"0s\"", "cooldown"),
    ];
    for (body, field) in bad {
        let err = RegistryConfig::from_toml_str(&format!("[breakers.x]\n{body}\n")).unwrap_err();
        assert_eq!(err.field(), format!("breakers.x.{field}"), "{body}: {err}");
    }
    assert!(
        RegistryConfig::from_toml_str("[breakers.x]\nwindow = 4\nfailure_ratio = 1.0\n").is_ok()
    );
}

// ---------------------------------------------------------------- budgets

#[resilient(retries = 3, idempotent, jitter = "none", breaker = "shared_b")]
async fn shared_x(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(retries = 3, idempotent, jitter = "none", breaker = "shared_b")]
async fn shared_y(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "Retry budgets (one per breaker name, else per site ...)"; "By default a site spends its
/// breaker's budget (the one named after the breaker, shared by every site behind it)".
#[tokio::test(start_paused = true)]
async fn budget_shared_by_breaker_name() {
    let r = registry(
        "[budgets.shared_b]\ncapacity = 10\nretry_cost = 5\n[breakers.shared_b]\nfailure_threshold = 100\n",
    );
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(shared_x(&dep)).await;
    assert_eq!(dep.attempts(), 3, "two retries paid");
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(shared_y(&dep)).await;
    assert_eq!(
        dep.attempts(),
        1,
        "the sibling's retries spent the shared budget"
    );
}

/// docs: "a retry costs 5 tokens of 100, a success refunds 1".
#[tokio::test(start_paused = true)]
async fn budget_refunded_by_successes() {
    let r = registry(
        "[budgets.shared_b]\ncapacity = 10\nretry_cost = 5\n[breakers.shared_b]\nfailure_threshold = 100\n",
    );
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(shared_x(&dep)).await; // spends 10
    assert_eq!(r.budget("shared_b").tokens_milli(), 0);
    let good = Dep::new(ok(1));
    for _ in 0..5 {
        r.scope(shared_x(&good)).await.unwrap();
    }
    assert_eq!(r.budget("shared_b").tokens_milli(), 5_000);
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(shared_x(&dep)).await;
    assert_eq!(dep.attempts(), 2, "one retry paid by five refunds");
}

// ---------------------------------------------------------------- misc retry semantics

#[resilient(
    retries = 3,
    idempotent,
    jitter = "none",
    backoff(base = "500ms", max = "500ms", factor = 1)
)]
async fn constant_delay(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK RetryTest delay = 500 (constant): factor 1 gives a fixed delay.
#[tokio::test(start_paused = true)]
async fn constant_delay_with_factor_one() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(constant_delay(&dep)).await;
    assert_eq!(dep.starts_ms(), [0, 500, 1000, 1500]);
}

#[resilient(retries = 3, idempotent, jitter = "none", abort_on = [ApiError::Throttled])]
async fn abort_throttled(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// abort_on wins for a throttled variant as well.
#[tokio::test(start_paused = true)]
async fn abort_on_throttled_variant() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Throttled(Some(secs(1)))));
    assert!(matches!(
        r.scope(abort_throttled(&dep)).await,
        Err(ApiError::Throttled { .. })
    ));
    assert_eq!(dep.attempts(), 1);
}

#[resilient(retries = 1, idempotent, jitter = "none")]
async fn one_retry(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Retries exhausted on throttling: the server's error after the hinted wait.
#[tokio::test(start_paused = true)]
async fn throttled_retries_exhausted_returns_server_error() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Throttled(Some(secs(5)))));
    let start = Instant::now();
    let res = r.scope(one_retry(&dep)).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Throttled {
                retry_after: Some(_)
            })
        ),
        "{res:?}"
    );
    assert_eq!(dep.starts_ms(), [0, 5000]);
    assert_eq!(start.elapsed(), secs(5));
}

fn long_pending(v: &u32) -> RetryOk {
    if *v == 202 {
        RetryOk::RetryAfter(secs(600))
    } else {
        RetryOk::Accept
    }
}

#[resilient(retries = 3, idempotent, jitter = "none", retry_if_ok = long_pending)]
async fn poll_long(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "a wait longer than the longest hint honoured ends the call with this `Ok`".
#[tokio::test(start_paused = true)]
async fn retry_if_ok_hint_above_max_ends_with_ok() {
    let r = registry("");
    let dep = Dep::new(ok(202));
    let start = Instant::now();
    assert_eq!(r.scope(poll_long(&dep)).await.unwrap(), 202);
    assert_eq!(dep.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------- site policies

#[resilient(retries = 3, idempotent, jitter = "none", name = "conf::tuned")]
async fn tuned(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(name = "conf::create")]
async fn not_idempotent(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// README "Site policies from configuration": `[sites."<name>"]` sets retries and backoff keys one
/// by one; a call's override wins over the file.
#[tokio::test(start_paused = true)]
async fn site_table_and_call_override_precedence() {
    let r = registry("[sites.\"conf::tuned\"]\nretries = 2\nbackoff = { base = \"100ms\" }\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = r.scope(tuned(&dep)).await;
    // file: 2 retries, base 100 ms, jitter "none" still from the attribute, factor 2
    assert_eq!(dep.starts_ms(), [0, 100, 300]);

    let dep = Dep::new(fail(Kind::Unavailable));
    let o = PolicyOverride::new().with_retries(1);
    let _ = r.scope(with_policy(o, tuned(&dep)).unwrap()).await;
    assert_eq!(dep.starts_ms(), [0, 100]);

    let dep = Dep::new(fail(Kind::Unavailable));
    let o = PolicyOverride::new().with_backoff(
        Backoff::new()
            .with_base(secs(2))
            .with_max(secs(2))
            .with_jitter(Jitter::None),
    );
    let _ = r.scope(with_policy(o, tuned(&dep)).unwrap()).await;
    assert_eq!(dep.starts_ms(), [0, 2000, 4000]);
}

/// README: "A per-call override applies to each site what it can take (retries where safe to
/// repeat ...)"; "a file cannot make a create retry".
#[tokio::test(start_paused = true)]
async fn override_cannot_make_a_create_retry() {
    let r = registry("");
    let dep = Dep::new(fail(Kind::Unavailable));
    let o = PolicyOverride::new().with_retries(3);
    let _ = r.scope(with_policy(o, not_idempotent(&dep)).unwrap()).await;
    assert_eq!(dep.attempts(), 1);
}

// ---------------------------------------------------------------- refresh

struct Client {
    token: AtomicU32,
    refreshes: AtomicU32,
}

impl Client {
    async fn refresh_token(&self) -> Result<(), ApiError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.token.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[resilient(refresh = Self::refresh_token)]
    async fn me(&self, dep: &Dep) -> Result<u32, ApiError> {
        dep.call().await
    }
}

/// docs: "On an `auth` error, call `path(self)` ..., then try the attempt again. This needs no
/// `idempotent` and spends no retry ... at most `retries + 1` times in one call".
#[tokio::test(start_paused = true)]
async fn refresh_retries_auth_without_spending_retries() {
    let r = registry("");
    let c = Client {
        token: AtomicU32::new(0),
        refreshes: AtomicU32::new(0),
    };
    let dep = Dep::scripted(vec![fail(Kind::Unauthorized)], ok(1));
    assert_eq!(r.scope(c.me(&dep)).await.unwrap(), 1);
    assert_eq!((dep.attempts(), c.refreshes.load(Ordering::SeqCst)), (2, 1));
    let dep = Dep::new(fail(Kind::Unauthorized));
    let res = r.scope(c.me(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unauthorized)), "{res:?}");
    assert_eq!(
        c.refreshes.load(Ordering::SeqCst),
        2,
        "retries + 1 = 1 refresh for this call"
    );
    assert_eq!(dep.attempts(), 2);
}

// ---------------------------------------------------------------- limits vs deadline

#[resilient(rate_limit = "rl3", deadline = "5s")]
async fn limited_short(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j RateLimiter: if the wait for a permit exceeds timeoutDuration the call fails at
/// once (no waiting in vain). docs: "or gets `Rejected::RateLimited` at once when it cannot wait
/// that long".
#[tokio::test(start_paused = true)]
async fn rate_limit_wait_longer_than_deadline_fails_at_once() {
    let r = registry("[rate_limits.rl3]\nrate = 1\nper = \"10s\"\n");
    let dep = Dep::new(ok(1));
    r.scope(limited_short(&dep)).await.unwrap();
    let start = Instant::now();
    let res = r.scope(limited_short(&dep)).await;
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::RateLimited { .. }))),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(dep.attempts(), 1);
}

#[resilient(bulkhead = "bh9", retries = 2, idempotent, jitter = "none")]
async fn capped_retrying(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: a bulkhead refusal waits "without one [deadline] within the site's worst-case retry
/// schedule", spends no retry; the attempt then fails and is retried normally.
#[tokio::test(start_paused = true)]
async fn bulkhead_wait_then_retries_still_available() {
    let r = registry("[bulkheads.bh9]\nmax_concurrent = 1\n");
    let holder = Dep::new(slow(1500, ok(0)));
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(5));
    let second = async {
        tokio::time::sleep(ms(10)).await;
        r.scope(capped_retrying(&dep)).await
    };
    let (a, b) = tokio::join!(r.scope(capped_retrying(&holder)), second);
    assert_eq!(a.unwrap(), 0);
    assert_eq!(b.unwrap(), 5, "the wait for a slot spent no retry");
    assert_eq!(dep.attempts(), 2);
}
