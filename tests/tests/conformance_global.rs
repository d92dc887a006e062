//! The same scenarios on the process-wide registry, without `Registry::scope`: how a connector
//! actually runs (README: "Annotated sites use the process-wide one ([`Registry::global`]) unless a
//! test runs them inside [`Registry::scope`]"). This is the engine's fast path for first
//! attempts (not taken inside a scope), so every site here has its
//! own breaker name and its own fn: the global registry is shared by every test of this binary.

#[path = "conformance/common.rs"]
mod common;

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{Registry, Rejected, RetryOk, resilient};
use tokio::time::Instant;

use common::*;

fn configure(toml: &str) -> &'static Registry {
    let g = Registry::global();
    g.apply(&RegistryConfig::from_toml_str(toml).expect("valid configuration"));
    g
}

fn state(name: &str) -> BreakerState {
    Registry::global().breaker(name).state()
}

// ---------------------------------------------------------------- consecutive threshold

#[resilient(breaker = "g_consecutive")]
async fn g_consecutive(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Polly consecutive breaker. docs: "CLOSED → OPEN after ... consecutive failures"; "calls fail at
/// once with `Rejected::CircuitOpen`, without running the body".
#[tokio::test(start_paused = true)]
async fn global_consecutive_threshold_and_reset_by_success() {
    configure("[breakers.g_consecutive]\nfailure_threshold = 3\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![f(), f(), ok(1), f(), f()], f());
    for _ in 0..5 {
        let _ = g_consecutive(&dep).await;
    }
    assert_eq!(
        state("g_consecutive"),
        BreakerState::Closed,
        "F F S F F: not 3 in a row"
    );
    let _ = g_consecutive(&dep).await;
    assert_eq!(state("g_consecutive"), BreakerState::Open);
    assert!(is_open(&g_consecutive(&dep).await));
    assert_eq!(dep.attempts(), 6);
}

// ---------------------------------------------------------------- half-open

#[resilient(breaker = "g_half_open")]
async fn g_half_open(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerTest: delay, then a good trial closes; a failed trial reopens.
#[tokio::test(start_paused = true)]
async fn global_cooldown_probe_failure_reopens_then_success_closes() {
    configure("[breakers.g_half_open]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 3], ok(1));
    let _ = g_half_open(&dep).await;
    let _ = g_half_open(&dep).await;
    assert_eq!(state("g_half_open"), BreakerState::Open);
    tokio::time::advance(secs(10) - ms(1)).await;
    assert!(is_open(&g_half_open(&dep).await));
    tokio::time::advance(ms(1)).await;
    assert!(
        matches!(g_half_open(&dep).await, Err(ApiError::Unavailable)),
        "probe fails"
    );
    assert_eq!(state("g_half_open"), BreakerState::Open);
    tokio::time::advance(secs(10)).await;
    assert_eq!(g_half_open(&dep).await.unwrap(), 1);
    assert_eq!(state("g_half_open"), BreakerState::Closed);
}

#[resilient(breaker = "g_success_threshold")]
async fn g_success_threshold(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK successThreshold = 2.
#[tokio::test(start_paused = true)]
async fn global_success_threshold_two() {
    configure(
        "[breakers.g_success_threshold]\nfailure_threshold = 1\ncooldown = \"10s\"\nsuccess_threshold = 2\n",
    );
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(1));
    let _ = g_success_threshold(&dep).await;
    assert_eq!(state("g_success_threshold"), BreakerState::Open);
    tokio::time::advance(secs(10)).await;
    assert_eq!(g_success_threshold(&dep).await.unwrap(), 1);
    assert_eq!(state("g_success_threshold"), BreakerState::HalfOpen);
    assert_eq!(g_success_threshold(&dep).await.unwrap(), 1);
    assert_eq!(state("g_success_threshold"), BreakerState::Closed);
}

#[resilient(breaker = "g_probes")]
async fn g_probes(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j permittedNumberOfCallsInHalfOpenState = 1.
#[tokio::test(start_paused = true)]
async fn global_half_open_one_probe_at_a_time() {
    configure("[breakers.g_probes]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], slow(1000, ok(1)));
    let _ = g_probes(&dep).await;
    tokio::time::advance(secs(10)).await;
    let (a, b, c) = tokio::join!(g_probes(&dep), g_probes(&dep), g_probes(&dep));
    let results = [a, b, c];
    assert_eq!(
        results.iter().filter(|x| x.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|x| is_open(x)).count(),
        2,
        "{results:?}"
    );
    assert_eq!(state("g_probes"), BreakerState::Closed);
}

// ---------------------------------------------------------------- ratio

#[resilient(breaker = "g_ratio_full")]
async fn g_ratio_full(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK requestVolumeThreshold = 4, failureRatio = 0.5: F F F -> closed; S -> 3/4 -> open.
/// docs: "a success that fills the window at the ratio opens it too."
#[tokio::test(start_paused = true)]
async fn global_ratio_success_filling_window_opens() {
    configure("[breakers.g_ratio_full]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![f(), f(), f()], ok(1));
    for _ in 0..3 {
        let _ = g_ratio_full(&dep).await;
    }
    assert_eq!(state("g_ratio_full"), BreakerState::Closed);
    let _ = g_ratio_full(&dep).await;
    assert_eq!(state("g_ratio_full"), BreakerState::Open);
}

#[resilient(breaker = "g_ratio_roll")]
async fn g_ratio_roll(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK rolling window: S S F F closed, F -> S F F F = 3/4 >= 0.75 -> open.
#[tokio::test(start_paused = true)]
async fn global_ratio_rolling_window() {
    configure("[breakers.g_ratio_roll]\nwindow = 4\nfailure_ratio = 0.75\ncooldown = \"10s\"\n");
    let f = || fail(Kind::Unavailable);
    let dep = Dep::scripted(vec![ok(1), ok(1), f(), f(), f()], ok(1));
    for _ in 0..4 {
        let _ = g_ratio_roll(&dep).await;
    }
    assert_eq!(state("g_ratio_roll"), BreakerState::Closed);
    let _ = g_ratio_roll(&dep).await;
    assert_eq!(state("g_ratio_roll"), BreakerState::Open);
}

// ---------------------------------------------------------------- what counts

#[resilient(breaker = "g_counts")]
async fn g_counts(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// failOn / skipOn. docs: only transient failures and timeouts count; `breaker = "..."` overrides.
#[tokio::test(start_paused = true)]
async fn global_what_counts_as_failure() {
    configure("[breakers.g_counts]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    for k in [
        Kind::NotFound,
        Kind::Forbidden,
        Kind::Unauthorized,
        Kind::Throttled(Some(ms(10))),
        Kind::Locked,
        Kind::Gone,
    ] {
        let dep = Dep::new(fail(k));
        for _ in 0..5 {
            let _ = g_counts(&dep).await;
        }
        assert_eq!(
            state("g_counts"),
            BreakerState::Closed,
            "{k:?} must not count"
        );
    }
    let dep = Dep::scripted(
        vec![
            fail(Kind::Unavailable),
            fail(Kind::Gone),
            fail(Kind::Unavailable),
        ],
        ok(1),
    );
    for _ in 0..3 {
        let _ = g_counts(&dep).await;
    }
    assert_eq!(
        state("g_counts"),
        BreakerState::Closed,
        "`success` outcome resets the count"
    );
    let dep = Dep::new(fail(Kind::Corrupt));
    let _ = g_counts(&dep).await;
    assert_eq!(
        state("g_counts"),
        BreakerState::Open,
        "Unavailable then Corrupt (failure outcome)"
    );
}

// ---------------------------------------------------------------- timeout

#[resilient(timeout = "1s", breaker = "g_timeout")]
async fn g_timeout(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK TimeoutTest + CircuitBreakerTimeoutTest.
#[tokio::test(start_paused = true)]
async fn global_timeout_cuts_and_counts() {
    configure("[breakers.g_timeout]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    let res = g_timeout(&dep).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), secs(1));
    let _ = g_timeout(&dep).await;
    assert_eq!(state("g_timeout"), BreakerState::Open);
    let fast = Dep::new(slow(999, ok(3)));
    tokio::time::advance(secs(10)).await;
    assert_eq!(g_timeout(&fast).await.unwrap(), 3);
}

// ---------------------------------------------------------------- retries

#[resilient(retries = 3, idempotent, jitter = "none")]
async fn g_retries(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK maxRetries = 3 with delay; docs: retries, backoff 1s·2ⁿ.
#[tokio::test(start_paused = true)]
async fn global_retries_and_backoff() {
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = g_retries(&dep).await;
    assert!(matches!(res, Err(ApiError::Unavailable)), "{res:?}");
    assert_eq!(dep.starts_ms(), [0, 1000, 3000, 7000]);
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(4));
    assert_eq!(g_retries(&dep).await.unwrap(), 4);
    assert_eq!(dep.starts_ms(), [0, 1000]);
    let dep = Dep::new(fail(Kind::NotFound));
    let _ = g_retries(&dep).await;
    assert_eq!(dep.attempts(), 1);
}

fn g_pending(v: &u32) -> RetryOk {
    if *v == 202 {
        RetryOk::Retry
    } else {
        RetryOk::Accept
    }
}

#[resilient(retries = 3, idempotent, jitter = "none", retry_if_ok = g_pending)]
async fn g_poll(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Resilience4j retryOnResult.
#[tokio::test(start_paused = true)]
async fn global_retry_on_result() {
    let dep = Dep::scripted(vec![ok(202), ok(202)], ok(200));
    assert_eq!(g_poll(&dep).await.unwrap(), 200);
    assert_eq!(dep.starts_ms(), [0, 1000, 3000]);
    let dep = Dep::new(ok(202));
    assert_eq!(g_poll(&dep).await.unwrap(), 202);
    assert_eq!(dep.attempts(), 4);
}

// ---------------------------------------------------------------- fallback

#[resilient(breaker = "g_fallback", fallback = fb)]
async fn g_fallback(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerFallbackTest.
#[tokio::test(start_paused = true)]
async fn global_fallback_on_error_and_open_circuit() {
    configure("[breakers.g_fallback]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(1));
    assert_eq!(g_fallback(&dep).await.unwrap(), 903);
    assert_eq!(g_fallback(&dep).await.unwrap(), 901);
    assert_eq!(dep.attempts(), 1);
}

// ---------------------------------------------------------------- budget refunds

#[resilient(retries = 2, idempotent, jitter = "none", budget = "g_budget")]
async fn g_budgeted(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "a retry costs 5 tokens of 100, a success refunds 1".
#[tokio::test(start_paused = true)]
async fn global_budget_refunded_by_successes() {
    configure("[budgets.g_budget]\ncapacity = 10\nretry_cost = 5\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let _ = g_budgeted(&dep).await;
    assert_eq!(dep.attempts(), 3);
    assert_eq!(Registry::global().budget("g_budget").tokens_milli(), 0);
    let good = Dep::new(ok(1));
    for _ in 0..5 {
        g_budgeted(&good).await.unwrap();
    }
    assert_eq!(Registry::global().budget("g_budget").tokens_milli(), 5_000);
}

// ---------------------------------------------------------------- stale generation

#[resilient(breaker = "g_stale")]
async fn g_stale(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs (breaker.rs): a result from an older generation is ignored.
#[tokio::test(start_paused = true)]
async fn global_stale_failure_is_ignored() {
    configure("[breakers.g_stale]\nfailure_threshold = 1\ncooldown = \"1s\"\n");
    let slow_dep = Dep::new(slow(5000, fail(Kind::Unavailable)));
    let fast_fail = Dep::new(fail(Kind::Unavailable));
    let good = Dep::new(ok(1));
    let others = async {
        tokio::time::sleep(ms(10)).await;
        let _ = g_stale(&fast_fail).await;
        assert_eq!(state("g_stale"), BreakerState::Open);
        tokio::time::sleep(ms(1100)).await;
        assert_eq!(g_stale(&good).await.unwrap(), 1);
        assert_eq!(state("g_stale"), BreakerState::Closed);
    };
    let (stale, ()) = tokio::join!(g_stale(&slow_dep), others);
    assert!(matches!(stale, Err(ApiError::Unavailable)));
    assert_eq!(
        state("g_stale"),
        BreakerState::Closed,
        "the stale failure must not reopen"
    );
}

// ---------------------------------------------------------------- per key

struct Tenant(&'static str);

impl Tenant {
    #[resilient(breaker = "g_per_key", breaker_key = self.0)]
    async fn read(&self, dep: &Dep) -> Result<u32, ApiError> {
        dep.call().await
    }
}

/// docs: "`breaker_key = expr` keeps one breaker per key (a tenant)".
#[tokio::test(start_paused = true)]
async fn global_per_key_breakers() {
    configure("[breakers.g_per_key]\nfailure_threshold = 2\ncooldown = \"10s\"\n");
    let bad = Dep::new(fail(Kind::Unavailable));
    let good = Dep::new(ok(1));
    let a = Tenant("a");
    let b = Tenant("b");
    let _ = a.read(&bad).await;
    assert_eq!(b.read(&good).await.unwrap(), 1);
    let _ = a.read(&bad).await;
    assert!(is_open(&a.read(&good).await), "a: 2 consecutive failures");
    assert_eq!(b.read(&good).await.unwrap(), 1);
    let _ = b.read(&bad).await;
    assert_eq!(b.read(&good).await.unwrap(), 1);
    let _ = b.read(&bad).await;
    assert_eq!(
        Registry::global()
            .keyed_breakers("g_per_key")
            .get("b")
            .state(),
        BreakerState::Closed
    );
    let _ = Duration::ZERO;
}

// ---------------------------------------------------------------- cancellation

#[resilient(breaker = "g_cancel")]
async fn g_cancel(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// RELIABILITY.md: "cancellations never open the breaker nor count as failures".
#[tokio::test(start_paused = true)]
async fn global_cancelled_calls_are_not_failures() {
    configure("[breakers.g_cancel]\nfailure_threshold = 1\ncooldown = \"10s\"\n");
    let dep = Dep::new(slow(60_000, ok(1)));
    for _ in 0..3 {
        assert!(tokio::time::timeout(ms(100), g_cancel(&dep)).await.is_err());
    }
    assert_eq!(state("g_cancel"), BreakerState::Closed);
    assert_eq!(dep.in_flight(), 0);
}
