//! Third batch: blocking fns (MicroProfile's synchronous methods), policies from configuration
//! (timeouts and deadlines a site's attribute does not have), live reconfiguration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit};
use resilience_runtime::registry::{PolicyOverride, RegistryConfig};
use resilience_runtime::{Registry, Rejected, RetryOk, resilient, with_policy};
use tokio::time::Instant;

use crate::common::*;

/// A scripted blocking dependency: pops a result per attempt.
pub struct SyncDep {
    script: Mutex<Vec<Result<u32, Kind>>>,
    default: Result<u32, Kind>,
    pub attempts: Mutex<u32>,
}

impl SyncDep {
    fn new(mut script: Vec<Result<u32, Kind>>, default: Result<u32, Kind>) -> SyncDep {
        script.reverse();
        SyncDep {
            script: Mutex::new(script),
            default,
            attempts: Mutex::new(0),
        }
    }
    fn call(&self) -> Result<u32, ApiError> {
        *self.attempts.lock().unwrap() += 1;
        let r = self.script.lock().unwrap().pop().unwrap_or(self.default);
        r.map_err(Kind::error)
    }
    fn attempts(&self) -> u32 {
        *self.attempts.lock().unwrap()
    }
}

fn recording(toml: &str) -> (Registry, Arc<Mutex<Vec<Duration>>>) {
    let slept = Arc::new(Mutex::new(Vec::new()));
    let log = slept.clone();
    let r = Registry::new()
        .with_seed(7)
        .with_blocking_sleep(move |d| log.lock().unwrap().push(d));
    if !toml.is_empty() {
        r.apply(&RegistryConfig::from_toml_str(toml).unwrap());
    }
    (r, slept)
}

#[resilient(retries = 3, idempotent, jitter = "none")]
fn sync_retry(dep: &SyncDep) -> Result<u32, ApiError> {
    dep.call()
}

/// TCK RetryTest on a synchronous method. docs: "A plain `fn` gets the same retries, backoff,
/// breaker, `retry_if_ok` and fallback on the blocking engine (waits sleep the thread)".
#[test]
fn blocking_retries_and_backoff() {
    let (r, slept) = recording("");
    let dep = SyncDep::new(vec![], Err(Kind::Unavailable));
    assert!(matches!(
        r.enter(|| sync_retry(&dep)),
        Err(ApiError::Unavailable)
    ));
    assert_eq!(dep.attempts(), 4);
    assert_eq!(*slept.lock().unwrap(), [secs(1), secs(2), secs(4)]);
    let dep = SyncDep::new(vec![Err(Kind::Throttled(Some(secs(5))))], Ok(1));
    slept.lock().unwrap().clear();
    assert_eq!(r.enter(|| sync_retry(&dep)).unwrap(), 1);
    assert_eq!(*slept.lock().unwrap(), [secs(5)], "Retry-After floor");
    let dep = SyncDep::new(vec![], Err(Kind::NotFound));
    let _ = r.enter(|| sync_retry(&dep));
    assert_eq!(dep.attempts(), 1);
}

#[resilient(breaker = "sync_b", fallback = fb)]
fn sync_guarded(dep: &SyncDep) -> Result<u32, ApiError> {
    dep.call()
}

/// TCK CircuitBreakerTest + CircuitBreakerFallbackTest on a synchronous method.
#[tokio::test(start_paused = true)]
async fn blocking_breaker_fallback_and_half_open() {
    let (r, _) = recording(
        "[breakers.sync_b]\nfailure_threshold = 2\ncooldown = \"10s\"\nsuccess_threshold = 2\n",
    );
    let dep = SyncDep::new(vec![Err(Kind::Unavailable), Err(Kind::Unavailable)], Ok(1));
    assert_eq!(r.enter(|| sync_guarded(&dep)).unwrap(), 903);
    assert_eq!(r.enter(|| sync_guarded(&dep)).unwrap(), 903);
    assert_eq!(r.breaker("sync_b").state(), BreakerState::Open);
    assert_eq!(
        r.enter(|| sync_guarded(&dep)).unwrap(),
        901,
        "open circuit to the fallback"
    );
    assert_eq!(dep.attempts(), 2);
    tokio::time::advance(secs(10)).await;
    assert_eq!(r.enter(|| sync_guarded(&dep)).unwrap(), 1);
    assert_eq!(r.breaker("sync_b").state(), BreakerState::HalfOpen);
    assert_eq!(r.enter(|| sync_guarded(&dep)).unwrap(), 1);
    assert_eq!(r.breaker("sync_b").state(), BreakerState::Closed);
}

fn sync_pending(v: &u32) -> RetryOk {
    if *v == 202 {
        RetryOk::RetryAfter(secs(3))
    } else {
        RetryOk::Accept
    }
}

#[resilient(retries = 2, idempotent, jitter = "none", retry_if_ok = sync_pending)]
fn sync_poll(dep: &SyncDep) -> Result<u32, ApiError> {
    dep.call()
}

/// Resilience4j retryOnResult, synchronous.
#[test]
fn blocking_retry_if_ok() {
    let (r, slept) = recording("");
    let dep = SyncDep::new(vec![Ok(202)], Ok(200));
    assert_eq!(r.enter(|| sync_poll(&dep)).unwrap(), 200);
    assert_eq!(*slept.lock().unwrap(), [secs(3)]);
    let dep = SyncDep::new(vec![], Ok(202));
    assert_eq!(r.enter(|| sync_poll(&dep)).unwrap(), 202);
    assert_eq!(dep.attempts(), 3);
}

#[resilient(retries = 2, idempotent, jitter = "none", bulkhead = "sync_bh")]
fn sync_capped(dep: &SyncDep) -> Result<u32, ApiError> {
    dep.call()
}

/// TCK BulkheadSynchronousRetryTest: a full bulkhead is waited for with the backoff schedule, then
/// the call runs once; a slot never freed ends the call with BulkheadFull after the worst case.
#[test]
fn blocking_bulkhead_waits_then_gives_up() {
    let slots = Arc::new(ConcurrencyLimit::new(1));
    let slept = Arc::new(Mutex::new(Vec::new()));
    let (log, held) = (slept.clone(), slots.clone());
    // The slot is given back during the first wait.
    let r = Registry::new().with_blocking_sleep(move |d| {
        log.lock().unwrap().push(d);
        held.leave();
    });
    r.set_bulkhead("sync_bh", slots.clone());
    assert!(slots.try_enter());
    let dep = SyncDep::new(vec![], Ok(1));
    assert_eq!(r.enter(|| sync_capped(&dep)).unwrap(), 1);
    assert_eq!(*slept.lock().unwrap(), [secs(1)]);
    assert_eq!(slots.in_use(), 0);

    let slept = Arc::new(Mutex::new(Vec::new()));
    let log = slept.clone();
    let r = Registry::new().with_blocking_sleep(move |d| log.lock().unwrap().push(d));
    r.set_bulkhead("sync_bh", slots.clone());
    assert!(slots.try_enter());
    let res = r.enter(|| sync_capped(&dep));
    assert!(
        matches!(res, Err(ApiError::Rejected(Rejected::BulkheadFull { .. }))),
        "{res:?}"
    );
    assert_eq!(
        *slept.lock().unwrap(),
        [secs(1), secs(2)],
        "the worst case of two retries"
    );
    assert_eq!(dep.attempts(), 1);
}

// ---------------------------------------------------------------- policies from configuration

#[resilient(breaker = "spare", name = "conf::spare_timeout")]
async fn spare_timeout(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// README: "a `timeout` given to a site whose attribute has none is armed per attempt in the call's
/// heap state"; `[sites."<name>"] timeout` needs "an async site whose attribute names something the
/// runtime rejects with (a breaker ...)".
#[tokio::test(start_paused = true)]
async fn file_timeout_on_site_without_one() {
    let r = registry("[sites.\"conf::spare_timeout\"]\ntimeout = \"1s\"\n");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    let res = r.scope(spare_timeout(&dep)).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), secs(1));
}

/// Per-call override: `PolicyOverride::with_timeout` / `with_deadline` (Polly's per-execution
/// timeout / MicroProfile config override of @Timeout).
#[tokio::test(start_paused = true)]
async fn call_override_timeout_and_deadline() {
    let r = registry("");
    let dep = Dep::new(slow(5000, ok(1)));
    let start = Instant::now();
    let o = PolicyOverride::new().with_timeout(ms(1500));
    let res = r.scope(with_policy(o, spare_timeout(&dep)).unwrap()).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), ms(1500));

    let start = Instant::now();
    let o = PolicyOverride::new().with_deadline(secs(2));
    let res = r.scope(with_policy(o, spare_timeout(&dep)).unwrap()).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::DeadlineExceeded { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(start.elapsed(), secs(2));
}

#[resilient(retries = 3, idempotent, jitter = "none", timeout = "1s", abort_on = [ApiError::Rejected])]
async fn abort_rejections(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// MicroProfile abortOn = TimeoutException: a timeout is not retried.
/// docs: "`abort_on` never retries them (and wins over the class)"; a timeout is a `Rejected`.
#[tokio::test(start_paused = true)]
async fn abort_on_rejected_stops_retrying_timeouts() {
    let r = registry("");
    let dep = Dep::new(slow(5000, ok(1)));
    let res = r.scope(abort_rejections(&dep)).await;
    assert!(
        matches!(
            res,
            Err(ApiError::Rejected(Rejected::AttemptTimeout { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(dep.attempts(), 1);
}

// ---------------------------------------------------------------- reconfiguration

#[resilient(breaker = "live")]
async fn live(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}

/// docs (Breaker::reconfigure / Registry::apply): "an open breaker stays open (its cooldown now
/// the new one), counted failures stay counted"; "Breakers and budgets are named instances
/// reconfigured in place, so their state is kept."
#[tokio::test(start_paused = true)]
async fn reconfigured_breaker_keeps_state_and_takes_new_cooldown() {
    let r = registry("[breakers.live]\nfailure_threshold = 3\ncooldown = \"60s\"\n");
    let dep = Dep::scripted(vec![fail(Kind::Unavailable); 4], ok(1));
    let _ = r.scope(live(&dep)).await;
    let _ = r.scope(live(&dep)).await;
    r.apply(
        &RegistryConfig::from_toml_str(
            "[breakers.live]\nfailure_threshold = 3\ncooldown = \"10s\"\n",
        )
        .unwrap(),
    );
    assert_eq!(r.breaker("live").state(), BreakerState::Closed);
    let _ = r.scope(live(&dep)).await;
    assert_eq!(
        r.breaker("live").state(),
        BreakerState::Open,
        "two failures kept + one"
    );
    r.apply(
        &RegistryConfig::from_toml_str(
            "[breakers.live]\nfailure_threshold = 3\ncooldown = \"5s\"\n",
        )
        .unwrap(),
    );
    tokio::time::advance(secs(5)).await;
    assert!(
        matches!(r.scope(live(&dep)).await, Err(ApiError::Unavailable)),
        "probe admitted after the new cooldown"
    );
    assert_eq!(r.breaker("live").state(), BreakerState::Open);
}

/// docs (Registry::apply): "To change only the cap, apply a configuration (`[bulkheads.<name>]`):
/// a `ConcurrencyLimit` is resized in place."
#[tokio::test(start_paused = true)]
async fn bulkhead_resized_in_place() {
    let r = registry("[bulkheads.live_bh]\nmax_concurrent = 1\n");
    let dep = Dep::new(slow(1000, ok(1)));
    let (a, b) = tokio::join!(r.scope(live_capped(&dep)), async {
        tokio::time::sleep(ms(10)).await;
        r.scope(live_capped(&dep)).await
    });
    assert!(a.is_ok() && b.is_err());
    r.apply(&RegistryConfig::from_toml_str("[bulkheads.live_bh]\nmax_concurrent = 2\n").unwrap());
    let (a, b) = tokio::join!(r.scope(live_capped(&dep)), r.scope(live_capped(&dep)));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
}

#[resilient(bulkhead = "live_bh")]
async fn live_capped(dep: &Dep) -> Result<u32, ApiError> {
    dep.call().await
}
