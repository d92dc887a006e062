//! Fourth batch: accounting and boundary behaviour the docs state precisely.

use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::{CallContext, Rejected, RetryOk, resilient};
use tokio::time::Instant;

use crate::common::*;

#[resilient(retries = 5, idempotent, jitter = "none", breaker = "acct")]
async fn acct(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// TCK CircuitBreakerRetryTest counts invocations; here the metrics and budget must agree with
/// them. docs: `SiteMetrics::retries` "Retries made"; `retry_total` "retries made"; "a retry costs
/// 5 tokens" (the open breaker refused the 4th attempt: it was never made).
#[tokio::test(start_paused = true)]
async fn retries_refused_by_open_breaker_are_not_counted_as_made() {
    let r = registry("[breakers.acct]\nfailure_threshold = 3\ncooldown = \"60s\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(acct(&dep)).await;
    assert!(is_open(&res), "{res:?}");
    assert_eq!(dep.attempts(), 3);
    let m = r.metrics();
    let s = &m.site("acct").unwrap().metrics;
    eprintln!(
        "acct: attempts {} retries metric {} budget tokens {} rejected {}",
        dep.attempts(),
        s.retries,
        r.budget("acct").tokens_milli(),
        s.rejected
    );
    assert_eq!(s.retries, 2, "3 attempts = 2 retries made");
    assert_eq!(
        r.budget("acct").tokens_milli(),
        100_000 - 2 * 5_000,
        "2 retries paid"
    );
}

#[resilient(breaker = "bounded")]
async fn bounded(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs (breaker.rs): "At most `half_open_probes` probes are in flight at once, counted across
/// half-open periods: a probe that outlives its period ... keeps its slot until it is recorded";
/// "an open breaker whose slots are all held by such probes turns half-open only when one comes
/// back; until then it refuses with a zero wait".
#[tokio::test(start_paused = true)]
async fn probes_bounded_across_half_open_periods() {
    let r = registry(
        "[breakers.bounded]\nfailure_threshold = 1\ncooldown = \"10s\"\nhalf_open_probes = 2\n",
    );
    let _ = r.scope(bounded(&Dep::new(fail(Kind::Unavailable)))).await;
    tokio::time::advance(secs(10)).await;
    let slow_probe = Dep::new(slow(30_000, ok(1)));
    let failing_probe = Dep::new(slow(100, fail(Kind::Unavailable)));
    let later = Dep::new(slow(1000, ok(2)));
    let rest = async {
        tokio::time::sleep(ms(10)).await;
        let _ = r.scope(bounded(&failing_probe)).await; // reopens at 10.11 s
        assert_eq!(r.breaker("bounded").state(), BreakerState::Open);
        tokio::time::sleep(secs(10)).await; // cooldown over; the slow probe still holds a slot
        let (x, y) = tokio::join!(r.scope(bounded(&later)), async {
            tokio::time::sleep(ms(1)).await;
            r.scope(bounded(&later)).await
        });
        (x, y)
    };
    let (stale, (x, y)) = tokio::join!(r.scope(bounded(&slow_probe)), rest);
    assert_eq!(stale.unwrap(), 1);
    assert_eq!(x.unwrap(), 2, "one slot is free: one probe");
    match y {
        Err(ApiError::Rejected(Rejected::CircuitOpen { retry_in, .. })) => {
            assert_eq!(retry_in, Duration::ZERO)
        }
        other => panic!("the second slot is held by the stale probe: {other:?}"),
    }
}

#[resilient(
    retries = 1,
    idempotent,
    jitter = "none",
    rate_limit = "paced",
    deadline = "30s"
)]
async fn paced(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "rate limit: a permit per attempt": a retry needs a permit too.
#[tokio::test(start_paused = true)]
async fn every_attempt_takes_a_permit() {
    let r = registry("[rate_limits.paced]\nrate = 1\nper = \"10s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable)], ok(1));
    assert_eq!(r.scope(paced(&dep)).await.unwrap(), 1);
    assert_eq!(dep.starts_ms(), [0, 10_000]);
}

#[resilient(retries = 1, idempotent, jitter = "none", rate_limit = "burst")]
async fn burst_throttled(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

#[resilient(rate_limit = "burst", deadline = "20s")]
async fn burst_sibling(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// README: after a throttling pause "The built-in limiter then grants permits at its rate from an
/// empty burst, so the waiting calls do not all arrive at once."
#[tokio::test(start_paused = true)]
async fn paused_limiter_resumes_at_its_rate_from_an_empty_burst() {
    let r = registry("[rate_limits.burst]\nrate = 10\nper = \"1s\"\n");
    let throttled = Dep::scripted(vec![fail(Kind::Throttled(Some(secs(3))))], ok(1));
    let siblings = Dep::new(ok(2));
    let waiters = async {
        tokio::time::sleep(ms(10)).await;
        let calls = (0..4).map(|_| r.scope(burst_sibling(&siblings)));
        futures_join_all(calls).await
    };
    let (a, b) = tokio::join!(r.scope(burst_throttled(&throttled)), waiters);
    assert_eq!(a.unwrap(), 1);
    assert!(b.iter().all(|x| x.is_ok()), "{b:?}");
    let mut starts = siblings.starts();
    starts.extend(throttled.starts().into_iter().skip(1));
    starts.sort();
    // Five attempts after the pause: one at 3 s, then one every 100 ms.
    assert_eq!(starts.len(), 5);
    assert!(starts[0] >= secs(3), "{starts:?}");
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= ms(99),
            "permits must be paced after a pause: {starts:?}"
        );
    }
}

async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    // A small join_all without the futures crate: poll every future to completion concurrently.
    let set: Vec<_> = fs.map(Box::pin).collect();
    let mut set: Vec<_> = set.into_iter().map(Some).collect();
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out[i] = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[resilient(retries = 1, idempotent, jitter = "none", bulkhead = "between")]
async fn between(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: "bulkhead: a concurrency slot per attempt" (Polly/Resilience4j hold the permit for the
/// execution): a call waiting out its backoff holds no slot.
#[tokio::test(start_paused = true)]
async fn bulkhead_slot_not_held_during_backoff() {
    let r = registry("[bulkheads.between]\nmax_concurrent = 1\n");
    let retrying = Dep::scripted(vec![fail(Kind::Unavailable)], ok(1));
    let other = Dep::new(ok(2));
    let (a, b) = tokio::join!(r.scope(between(&retrying)), async {
        tokio::time::sleep(ms(10)).await;
        let res = r.scope(between(&other)).await;
        (res, Instant::now())
    });
    assert_eq!(a.unwrap(), 1);
    assert_eq!(b.0.unwrap(), 2);
    assert_eq!(
        other.starts_ms(),
        [10],
        "ran during the other call's backoff"
    );
}

#[resilient(retries = 2, jitter = "none", idempotency_key = format!("create-{name}"))]
async fn create(dep: &Dep, name: &str) -> Result<String, ApiError> {
    let key = CallContext::current().and_then(|c| c.idempotency_key().map(str::to_owned));
    let key = key.unwrap_or_default();
    KEYS.with(|k| k.borrow_mut().push(key.clone()));
    dep.call().await.map(|_| key)
}

thread_local! {
    static KEYS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Polly/Stripe practice: one idempotency key per logical call, the same on every attempt.
/// docs: "the expression is evaluated **once per logical call** and the key is the same on every
/// attempt, readable in the body through `CallContext::current()`".
#[tokio::test(start_paused = true)]
async fn idempotency_key_same_on_every_attempt() {
    let r = registry("");
    let dep = Dep::scripted(
        vec![fail(Kind::Unavailable), fail(Kind::Unavailable)],
        ok(1),
    );
    assert_eq!(r.scope(create(&dep, "ada")).await.unwrap(), "create-ada");
    assert_eq!(
        KEYS.with(|k| k.borrow().clone()),
        ["create-ada", "create-ada", "create-ada"]
    );
}

fn pending_ok(v: &u32) -> RetryOk {
    if *v == 202 {
        RetryOk::Retry
    } else {
        RetryOk::Accept
    }
}

#[resilient(retries = 5, idempotent, jitter = "none", retry_if_ok = pending_ok, budget = "poll_budget")]
async fn poll_budgeted(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs: retry_if_ok attempts "spend the same `retries`, retry budget and `deadline` as retries
/// after failures ... When they run out, the last `Ok` is the call's result, not an error."
#[tokio::test(start_paused = true)]
async fn retry_if_ok_spends_the_budget() {
    let r = registry("[budgets.poll_budget]\ncapacity = 10\nretry_cost = 5\n");
    let dep = Dep::new(ok(202));
    assert_eq!(r.scope(poll_budgeted(&dep)).await.unwrap(), 202);
    assert_eq!(dep.attempts(), 3, "two retries paid by the budget");
}

#[resilient(retries = 2, idempotent, jitter = "none")]
async fn http_site(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// Polly `HandleTransientHttpError` retries 408 and every 5xx; Resilience4j has no table.
/// docs: "`Transient` | 408, 500, 502, 503, 504"; "`Permanent` | 400, 404, 409, 422 and every other
/// status" -> documented divergence: 501, 505, 507, 511 are not retried here.
#[tokio::test(start_paused = true)]
async fn http_status_table_retries() {
    let r = registry("");
    for (status, attempts) in [
        (408, 3),
        (500, 3),
        (502, 3),
        (503, 3),
        (504, 3),
        (429, 3),
        (400, 1),
        (401, 1),
        (403, 1),
        (404, 1),
        (409, 1),
        (422, 1),
        (501, 1),
        (505, 1),
        (507, 1),
        (511, 1),
    ] {
        let dep = Dep::new(fail(Kind::Http(status)));
        let _ = r.scope(http_site(&dep)).await;
        assert_eq!(dep.attempts(), attempts, "status {status}");
    }
}

/// Polly: a 503 with Retry-After is waited for like a 429. docs: "A server's Retry-After (a
/// `#[connector(retry_after)]` field) replaces a shorter wait" (whatever the class).
#[tokio::test(start_paused = true)]
async fn transient_error_with_retry_after_hint() {
    let r = registry("");
    let dep = Dep::scripted(vec![fail(Kind::Busy(Some(secs(7))))], ok(1));
    assert_eq!(r.scope(http_site(&dep)).await.unwrap(), 1);
    assert_eq!(dep.starts_ms(), [0, 7000]);
}

/// docs: hints "up to 5 minutes are honoured"; "longer than ... 5 minutes ends the call".
#[tokio::test(start_paused = true)]
async fn retry_after_of_exactly_five_minutes_is_honoured() {
    let r = registry("");
    let dep = Dep::scripted(vec![fail(Kind::Throttled(Some(secs(300))))], ok(1));
    assert_eq!(r.scope(http_site(&dep)).await.unwrap(), 1);
    assert_eq!(dep.starts_ms(), [0, 300_000]);
}

#[resilient(breaker = "keyed_ratio", breaker_key = tenant)]
async fn keyed_ratio(dep: &Dep, tenant: &str) -> Result<u32, ApiError> {
    dep.call().await
}

/// Ratio mode per key: each tenant has its own window.
#[tokio::test(start_paused = true)]
async fn ratio_window_per_key() {
    let r =
        registry("[breakers.keyed_ratio]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n");
    let bad = Dep::new(fail(Kind::Unavailable));
    let good = Dep::new(ok(1));
    for _ in 0..3 {
        let _ = r.scope(keyed_ratio(&bad, "a")).await;
        let _ = r.scope(keyed_ratio(&good, "b")).await;
    }
    let kb = r.keyed_breakers("keyed_ratio");
    assert_eq!(
        kb.get("a").state(),
        BreakerState::Closed,
        "3 calls: window of 4 not full"
    );
    let _ = r.scope(keyed_ratio(&bad, "a")).await;
    assert_eq!(kb.get("a").state(), BreakerState::Open);
    let _ = r.scope(keyed_ratio(&good, "b")).await;
    assert_eq!(kb.get("b").state(), BreakerState::Closed);
}

#[resilient(breaker = "mode_switch")]
async fn mode_switch(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs (Breaker::reconfigure): "A new trip mode or window size starts an empty window."
#[tokio::test(start_paused = true)]
async fn switching_to_ratio_mode_starts_an_empty_window() {
    let r = registry("[breakers.mode_switch]\nfailure_threshold = 10\ncooldown = \"10s\"\n");
    let bad = Dep::new(fail(Kind::Unavailable));
    for _ in 0..3 {
        let _ = r.scope(mode_switch(&bad)).await;
    }
    r.apply(
        &resilience_runtime::registry::RegistryConfig::from_toml_str(
            "[breakers.mode_switch]\nwindow = 4\nfailure_ratio = 0.5\ncooldown = \"10s\"\n",
        )
        .unwrap(),
    );
    let _ = r.scope(mode_switch(&bad)).await;
    assert_eq!(
        r.breaker("mode_switch").state(),
        BreakerState::Closed,
        "1 call in the new window"
    );
    for _ in 0..3 {
        let _ = r.scope(mode_switch(&bad)).await;
    }
    assert_eq!(r.breaker("mode_switch").state(), BreakerState::Open);
}

#[resilient(retries = 1, idempotent, jitter = "none", rate_limit = "acct_rl")]
async fn acct_rl(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// A retry the rate limit then refuses (no permit within the site's worst-case schedule): the
/// call ends with the rejection after one attempt. documented divergence: a retry is counted, and
/// paid for, when it is decided (README "Limits"), so this one stays counted although the refusal
/// itself "spends no retry and no budget".
#[tokio::test(start_paused = true)]
async fn a_retry_the_rate_limit_refuses_ends_the_call_and_stays_counted() {
    let r = registry("[rate_limits.acct_rl]\nrate = 1\nper = \"1h\"\n");
    let dep = Dep::new(fail(Kind::Unavailable));
    let res = r.scope(acct_rl(&dep)).await;
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::RateLimited { .. }))),
        "{res:?}"
    );
    assert_eq!(dep.attempts(), 1);
    let m = r.metrics();
    let s = &m.site("acct_rl").unwrap().metrics;
    let tokens = r.budget("conformance::edge::acct_rl").tokens_milli();
    assert_eq!(s.retries, 1, "the retry decided after the failure");
    assert_eq!(tokens, 95_000, "one retry of 5 tokens");
}

struct Session {
    refreshes: std::sync::atomic::AtomicU32,
    fail_refresh: bool,
}

impl Session {
    async fn renew(&self) -> Result<(), ApiError> {
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail_refresh {
            Err(ApiError::Forbidden)
        } else {
            Ok(())
        }
    }

    #[resilient(retries = 2, idempotent, jitter = "none", refresh = Self::renew)]
    async fn get(&self, dep: &Dep) -> Result<u32, ApiError> {
        dep.call().await
    }
}

/// docs: "at most `retries + 1` times in one call"; "A failed refresh ends the call with the
/// refresh's error."
#[tokio::test(start_paused = true)]
async fn refresh_bounded_by_retries_plus_one_and_failed_refresh_ends_call() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let r = registry("");
    let s = Session {
        refreshes: AtomicU32::new(0),
        fail_refresh: false,
    };
    let dep = Dep::new(fail(Kind::Unauthorized));
    let res = r.scope(s.get(&dep)).await;
    assert!(matches!(res, Err(ApiError::Unauthorized)), "{res:?}");
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 3);
    assert_eq!(dep.attempts(), 4);
    let s = Session {
        refreshes: AtomicU32::new(0),
        fail_refresh: true,
    };
    let dep = Dep::new(fail(Kind::Unauthorized));
    let res = r.scope(s.get(&dep)).await;
    assert!(matches!(res, Err(ApiError::Forbidden)), "{res:?}");
    assert_eq!(dep.attempts(), 1);
}
