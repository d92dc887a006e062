//! The engine without the macros: schedules, classes, breakers, timeouts, deadlines, budgets,
//! Retry-After, refresh, context and the blocking engine, all under a paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::backoff::{Backoff, Jitter};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::engine::{
    Execution, HookSet, Hooks, Override, Policy, Site, execute, execute_blocking,
};
use resilience_runtime::limit::ConcurrencyLimit;
use resilience_runtime::{CallContext, CarriesRejected, Classify, ErrorClass, Registry, Rejected};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Transient,
    Throttled(Duration),
    Permanent,
    Policy,
    Auth,
    Rejected(Rejected),
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        match self {
            E::Transient | E::Throttled(_) => ErrorClass::Transient,
            E::Permanent => ErrorClass::Permanent,
            E::Policy => ErrorClass::PolicyViolation,
            E::Auth => ErrorClass::Auth,
            E::Rejected(r) => r.class(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            E::Throttled(d) => Some(*d),
            E::Rejected(r) => r.retry_after(),
            _ => None,
        }
    }
}

impl CarriesRejected for E {
    fn from_rejected(r: Rejected) -> Self {
        E::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            E::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

fn hooks() -> impl HookSet<u32, E> {
    Hooks::new().with_from_rejected(E::from_rejected)
}

const S: Duration = Duration::from_secs(1);
const NO_JITTER: Backoff = Backoff::new()
    .with_max(Duration::from_secs(16))
    .with_jitter(Jitter::None);

/// Runs `script` (one entry per attempt) through `site` and returns the result, the attempt
/// start times relative to the call's start, and the registry used.
async fn run_script(
    site: &'static Site,
    script: Vec<Result<u32, E>>,
) -> (Result<u32, E>, Vec<Duration>) {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script.into_iter()));
    let r = execute(site, hooks(), || {
        times.lock().unwrap().push(start.elapsed());
        let next = script.lock().unwrap().next();
        async move { next.unwrap_or(Ok(0)) }
    })
    .await;
    let t = times.lock().unwrap().clone();
    (r, t)
}

#[tokio::test(start_paused = true)]
async fn seed_000_schedule_is_exact_under_a_paused_clock() {
    static SITE: Site = Site::new(
        &Policy::new("sched", module_path!())
            .with_retries(5)
            .idempotent()
            .with_backoff(NO_JITTER),
    );
    Registry::new()
        .scope(async {
            let script = vec![Err(E::Transient); 5];
            let (r, times) = run_script(&SITE, script).await;
            assert_eq!(r, Ok(0));
            assert_eq!(times, [0, 1, 3, 7, 15, 31].map(|s| s * S));
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_returns_the_last_error() {
    static SITE: Site = Site::new(
        &Policy::new("exhaust", module_path!())
            .with_retries(2)
            .idempotent()
            .with_backoff(NO_JITTER),
    );
    let registry = Registry::new();
    registry
        .scope(async {
            let (r, times) = run_script(&SITE, vec![Err(E::Transient); 10]).await;
            assert_eq!(r, Err(E::Transient));
            assert_eq!(times.len(), 3);
        })
        .await;
    let m = registry.metrics();
    let s = m.site("exhaust").unwrap();
    assert_eq!(s.metrics.retries, 2);
    assert_eq!(s.metrics.errors.transient, 1);
    assert_eq!(s.metrics.ok, 0);
}

#[tokio::test(start_paused = true)]
async fn permanent_policy_and_auth_without_refresh_run_once() {
    static SITE: Site = Site::new(
        &Policy::new("once", module_path!())
            .with_retries(5)
            .idempotent(),
    );
    let registry = Registry::new();
    registry
        .scope(async {
            for e in [E::Permanent, E::Policy, E::Auth] {
                let (r, times) = run_script(&SITE, vec![Err(e.clone())]).await;
                assert_eq!(r, Err(e));
                assert_eq!(times, [Duration::ZERO]);
            }
        })
        .await;
    let m = registry.metrics();
    let c = &m.site("once").unwrap().metrics.errors;
    assert_eq!((c.permanent, c.policy_violation, c.auth), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn policy_and_permanent_errors_never_count_for_the_breaker() {
    static SITE: Site = Site::new(&Policy::new("pol", module_path!()).with_breaker("pol"));
    let registry = Registry::new();
    registry
        .scope(async {
            for _ in 0..20 {
                let _ = run_script(&SITE, vec![Err(E::Policy)]).await;
                let _ = run_script(&SITE, vec![Err(E::Permanent)]).await;
            }
        })
        .await;
    let b = registry.breaker("pol");
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_running_the_body() {
    static SITE: Site = Site::new(&Policy::new("brk", module_path!()).with_breaker("brk"));
    let registry = Registry::new();
    registry
        .configure_breaker("brk", BreakerConfig::new().with_failure_threshold(3))
        .unwrap();
    registry
        .scope(async {
            for _ in 0..3 {
                let _ = run_script(&SITE, vec![Err(E::Transient)]).await;
            }
            let (r, times) = run_script(&SITE, vec![Ok(1)]).await;
            assert!(times.is_empty(), "the body ran while the breaker was open");
            match r {
                Err(E::Rejected(Rejected::CircuitOpen { breaker, retry_in })) => {
                    assert_eq!(&*breaker, "brk");
                    assert_eq!(retry_in, Duration::from_secs(60));
                }
                other => panic!("expected a circuit-open rejection, got {other:?}"),
            }
            tokio::time::advance(Duration::from_secs(60)).await;
            let (r, times) = run_script(&SITE, vec![Ok(7)]).await;
            assert_eq!((r, times.len()), (Ok(7), 1));
        })
        .await;
    assert_eq!(registry.breaker("brk").state(), BreakerState::Closed);
    assert_eq!(registry.metrics().site("brk").unwrap().metrics.rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_on_the_wait() {
    static SITE: Site = Site::new(
        &Policy::new("ra", module_path!())
            .with_retries(2)
            .idempotent()
            .with_backoff(NO_JITTER),
    );
    Registry::new()
        .scope(async {
            let script = vec![
                Err(E::Throttled(7 * S)),
                Err(E::Throttled(Duration::from_millis(10))),
            ];
            let (r, times) = run_script(&SITE, script).await;
            assert_eq!(r, Ok(0));
            // First wait: max(backoff 1s, hint 7s); second: max(backoff 2s, hint 10ms).
            assert_eq!(times, [Duration::ZERO, 7 * S, 9 * S]);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_the_deadline_ends_the_call_at_once() {
    static SITE: Site = Site::new(
        &Policy::new("ra_deadline", module_path!())
            .with_retries(5)
            .idempotent()
            .with_deadline(Duration::from_secs(30)),
    );
    Registry::new()
        .scope(async {
            let start = Instant::now();
            let (r, times) = run_script(&SITE, vec![Err(E::Throttled(120 * S))]).await;
            assert_eq!(
                r,
                Err(E::Throttled(120 * S)),
                "the server's own error comes back"
            );
            assert_eq!(times.len(), 1);
            assert_eq!(start.elapsed(), Duration::ZERO, "it must not sleep");
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_counts_as_a_breaker_failure() {
    static SITE: Site = Site::new(
        &Policy::new("slow", module_path!())
            .with_retries(1)
            .idempotent()
            .with_backoff(NO_JITTER)
            .with_breaker("slow")
            .with_timeout(Duration::from_millis(500)),
    );
    let registry = Registry::new();
    registry
        .scope(async {
            let start = Instant::now();
            let r: Result<u32, E> = execute(&SITE, hooks(), || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(1)
            })
            .await;
            assert_eq!(
                r,
                Err(E::Rejected(Rejected::AttemptTimeout {
                    timeout: Duration::from_millis(500)
                }))
            );
            // 0.5s attempt, 1s backoff, 0.5s attempt.
            assert_eq!(start.elapsed(), Duration::from_secs(2));
        })
        .await;
    assert_eq!(registry.breaker("slow").failures(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_whole_call() {
    static SITE: Site = Site::new(
        &Policy::new("deadline", module_path!())
            .with_retries(10)
            .idempotent()
            .with_backoff(NO_JITTER)
            .with_deadline(Duration::from_secs(10)),
    );
    Registry::new()
        .scope(async {
            let start = Instant::now();
            let (r, times) = run_script(&SITE, vec![Err(E::Transient); 20]).await;
            // Attempts at 0, 1, 3, 7; the next wait (8s) would end at 15s > 10s.
            assert_eq!(times, [0, 1, 3, 7].map(|s| s * S));
            assert_eq!(r, Err(E::Transient));
            assert!(start.elapsed() <= Duration::from_secs(10));

            let start = Instant::now();
            let r: Result<u32, E> = execute(&SITE, hooks(), || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(1)
            })
            .await;
            assert_eq!(
                r,
                Err(E::Rejected(Rejected::DeadlineExceeded {
                    deadline: Duration::from_secs(10)
                }))
            );
            assert_eq!(start.elapsed(), Duration::from_secs(10));
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn retry_on_and_abort_on_override_the_class() {
    static SITE: Site = Site::new(
        &Policy::new("over", module_path!())
            .with_retries(3)
            .idempotent()
            .with_backoff(NO_JITTER),
    );
    fn over(e: &E) -> Option<Override> {
        match e {
            E::Permanent => Some(Override::Retry),
            E::Throttled(_) => Some(Override::Abort),
            _ => None,
        }
    }
    Registry::new()
        .scope(async {
            let calls = AtomicU32::new(0);
            let r: Result<u32, E> = execute(
                &SITE,
                Hooks::new()
                    .with_from_rejected(E::from_rejected)
                    .with_override(over),
                || {
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    async move { if n < 2 { Err(E::Permanent) } else { Ok(n) } }
                },
            )
            .await;
            assert_eq!(r, Ok(2));
            let calls = AtomicU32::new(0);
            let r: Result<u32, E> = execute(
                &SITE,
                Hooks::new()
                    .with_from_rejected(E::from_rejected)
                    .with_override(over),
                || {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async { Err(E::Throttled(S)) }
                },
            )
            .await;
            assert_eq!(r, Err(E::Throttled(S)));
            assert_eq!(calls.load(Ordering::Relaxed), 1);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn auth_error_refreshes_once_and_retries_once() {
    static SITE: Site = Site::new(&Policy::new("auth", module_path!()));
    let registry = Registry::new();
    registry
        .scope(async {
            let refreshes = AtomicU32::new(0);
            let attempts = AtomicU32::new(0);
            let r: Result<u32, E> = Execution::new(&SITE, hooks())
                .refresh(|| {
                    refreshes.fetch_add(1, Ordering::Relaxed);
                    async { Ok(()) }
                })
                .run(|| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    async { Err(E::Auth) }
                })
                .await;
            assert_eq!(r, Err(E::Auth));
            let counts = (
                refreshes.load(Ordering::Relaxed),
                attempts.load(Ordering::Relaxed),
            );
            assert_eq!(counts, (1, 2));
        })
        .await;
    assert_eq!(
        registry.metrics().site("auth").unwrap().metrics.refreshes,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_context_carries_one_key_and_the_attempt_number() {
    static SITE: Site = Site::new(
        &Policy::new("ctx", module_path!())
            .with_retries(2)
            .idempotent()
            .with_idempotency_key(),
    );
    Registry::new()
        .scope(async {
            let seen = std::cell::RefCell::new(Vec::new());
            let r: Result<u32, E> = Execution::new(&SITE, hooks())
                .idempotency_key("intent-1-create-assignment")
                .run(|| async {
                    let c = CallContext::current().unwrap();
                    seen.borrow_mut().push((
                        c.attempt(),
                        c.idempotency_key().unwrap().to_owned(),
                        c.correlation_id(),
                    ));
                    if c.attempt() < 2 {
                        Err(E::Transient)
                    } else {
                        Ok(1)
                    }
                })
                .await;
            let seen = seen.into_inner();
            assert_eq!(r, Ok(1));
            assert_eq!(seen.len(), 3);
            assert!(seen.iter().enumerate().all(|(i, (a, k, c))| *a == i as u32
                && k == "intent-1-create-assignment"
                && *c == seen[0].2));
            assert!(CallContext::current().is_none());
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_full_outage_spends_the_budget_then_stops_retrying() {
    static SITE: Site = Site::new(
        &Policy::new("outage", module_path!())
            .with_retries(3)
            .idempotent()
            .with_backoff(
                Backoff::new()
                    .with_base(Duration::from_millis(10))
                    .with_max(Duration::from_millis(10)),
            ),
    );
    let registry = Registry::new();
    registry
        .configure_budget(&format!("{}::outage", module_path!()), BudgetConfig::new())
        .unwrap();
    let attempts = AtomicU32::new(0);
    registry
        .scope(async {
            for _ in 0..1000 {
                let r: Result<u32, E> = execute(&SITE, hooks(), || {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    async { Err(E::Transient) }
                })
                .await;
                assert_eq!(r, Err(E::Transient));
            }
        })
        .await;
    let per_call = f64::from(attempts.load(Ordering::Relaxed)) / 1000.0;
    assert!(per_call <= 1.1, "{per_call} requests per logical call");
    assert_eq!(
        registry.metrics().site("outage").unwrap().metrics.retries,
        20
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_rejects() {
    static SITE: Site = Site::new(&Policy::new("bulk", module_path!()).with_bulkhead("bulk"));
    let registry = Registry::new();
    let limit = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("bulk", limit.clone());
    registry
        .scope(async {
            let (r, times) = run_script(&SITE, vec![Ok(1)]).await;
            assert_eq!((r, times.len()), (Ok(1), 1));
            assert_eq!(
                limit_in_use(&limit),
                0,
                "the slot is given back after the attempt"
            );
            use resilience_runtime::limit::Bulkhead;
            assert!(limit.try_enter());
            let (r, times) = run_script(&SITE, vec![Ok(1)]).await;
            assert!(times.is_empty());
            assert!(matches!(r, Err(E::Rejected(Rejected::BulkheadFull { .. }))));
            limit.leave();
        })
        .await;
}

fn limit_in_use(l: &ConcurrencyLimit) -> usize {
    use resilience_runtime::limit::Bulkhead;
    l.in_use()
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_gives_back_its_probe_and_bulkhead_slot() {
    static SITE: Site = Site::new(
        &Policy::new("cancel", module_path!())
            .with_breaker("cancel")
            .with_bulkhead("cancel"),
    );
    let registry = Registry::new();
    registry
        .configure_breaker("cancel", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    let limit = Arc::new(ConcurrencyLimit::new(4));
    registry.set_bulkhead("cancel", limit.clone());
    registry
        .scope(async {
            let _ = run_script(&SITE, vec![Err(E::Transient)]).await;
            tokio::time::advance(Duration::from_secs(60)).await;
            let call = execute(&SITE, hooks(), || async {
                std::future::pending::<()>().await;
                Ok(1)
            });
            // Poll it into the attempt (holding the probe and a bulkhead slot), then drop it.
            let r = tokio::time::timeout(Duration::from_secs(1), call).await;
            assert!(r.is_err());
        })
        .await;
    let b = registry.breaker("cancel");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 0);
    assert_eq!(limit_in_use(&limit), 0);
}

#[test]
fn the_blocking_engine_retries_with_the_same_schedule() {
    static SITE: Site = Site::new(
        &Policy::new("blocking", module_path!())
            .with_retries(4)
            .idempotent()
            .with_backoff(NO_JITTER),
    );
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    let registry = Registry::new().with_blocking_sleep(move |d| w.lock().unwrap().push(d));
    let mut n = 0;
    let r: Result<u32, E> = registry.enter(|| {
        execute_blocking(&SITE, Hooks::new(), || {
            n += 1;
            assert_eq!(CallContext::current().unwrap().attempt(), n - 1);
            if n < 5 { Err(E::Transient) } else { Ok(n) }
        })
    });
    assert_eq!(r, Ok(5));
    assert_eq!(*waits.lock().unwrap(), [1, 2, 4, 8].map(|s| s * S));
    let m = registry.metrics();
    let s = &m.site("blocking").unwrap().metrics;
    assert_eq!((s.ok, s.retries, s.retry_successes), (1, 4, 1));
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_after_the_last_failure() {
    static SITE: Site = Site::new(
        &Policy::new("fb", module_path!())
            .with_retries(1)
            .idempotent(),
    );
    fn fallback(e: E) -> Result<u32, E> {
        match e {
            E::Transient => Ok(99),
            e => Err(e),
        }
    }
    Registry::new()
        .scope(async {
            let r = execute(
                &SITE,
                Hooks::new()
                    .with_from_rejected(E::from_rejected)
                    .with_fallback(fallback),
                || async { Err(E::Transient) },
            )
            .await;
            assert_eq!(r, Ok(99));
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_seeded_registry_gives_an_exact_jittered_schedule() {
    static SITE: Site = Site::new(
        &Policy::new("seeded", module_path!())
            .with_retries(3)
            .idempotent()
            .with_backoff(Backoff::new().with_jitter(Jitter::Full)),
    );
    let mut schedules = Vec::new();
    for _ in 0..2 {
        let r = Registry::new().with_seed(42);
        let (_, times) = r.scope(run_script(&SITE, vec![Err(E::Transient); 3])).await;
        schedules.push(times);
    }
    assert_eq!(schedules[0], schedules[1]);
    assert_eq!(schedules[0].len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_call_takes_its_correlation_id_lazily_and_a_nested_call_shares_it() {
    static OUTER: Site = Site::new(&Policy::new("outer", module_path!()));
    static INNER: Site = Site::new(&Policy::new("inner", module_path!()));
    Registry::new()
        .scope(async {
            let ids = std::cell::RefCell::new(Vec::new());
            let outer = || {
                execute(&OUTER, hooks(), || async {
                    // Nobody has asked for the outer call's id yet: the inner call makes it
                    // take one, and joins it.
                    let inner = execute(&INNER, hooks(), || async {
                        let ctx = CallContext::current().unwrap();
                        assert_eq!(ctx.operation(), "inner");
                        ids.borrow_mut().push(("inner", ctx.correlation_id()));
                        Ok(1)
                    })
                    .await;
                    let ctx = CallContext::current().unwrap();
                    assert_eq!(ctx.operation(), "outer");
                    ids.borrow_mut().push(("outer", ctx.correlation_id()));
                    inner
                })
            };
            assert_eq!(outer().await, Ok(1));
            assert_eq!(outer().await, Ok(1));
            let ids = ids.into_inner();
            let [(_, a), (_, b), (_, c), (_, d)] = ids[..] else {
                panic!("{ids:?}");
            };
            assert_eq!(a, b, "the nested call shares the outer call's id");
            assert_eq!(c, d);
            assert_ne!(a, c, "each outer call has its own");
            assert!(CallContext::current().is_none());
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn breaker_transition_events_carry_their_generation_and_time() {
    use resilience_runtime::breaker::{Breaker, Outcome};
    use resilience_runtime::events::{self, EventSink, RuntimeEvent};

    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<(String, u32, Duration)>>);
    impl EventSink for Log {
        fn on_event(&self, event: &RuntimeEvent<'_>) {
            if let RuntimeEvent::BreakerTransition {
                breaker: "events-gen",
                to,
                generation,
                at,
                ..
            } = *event
            {
                self.0
                    .lock()
                    .unwrap()
                    .push((to.as_str().to_owned(), generation, at));
            }
        }
    }
    let log = Arc::new(Log::default());
    let sink: Arc<dyn EventSink> = log.clone();
    events::add_sink(sink.clone());
    let b = Breaker::new("events-gen", BreakerConfig::new().with_failure_threshold(1));
    b.try_acquire().unwrap().record(Outcome::Failure);
    tokio::time::advance(Duration::from_secs(60)).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    events::remove_sink(&sink);
    let seen = log.0.lock().unwrap().clone();
    let states: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(states, ["open", "half_open", "closed"]);
    let gens: Vec<u32> = seen.iter().map(|s| s.1).collect();
    assert!(gens.windows(2).all(|w| w[0] < w[1]), "{gens:?}");
    assert_eq!(seen[1].2 - seen[0].2, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_above_the_cap_ends_the_call_at_once() {
    use resilience_runtime::backoff::RetryAfter;
    static SITE: Site = Site::new(
        &Policy::new("ra_cap", module_path!())
            .with_retries(3)
            .idempotent()
            .with_retry_after(RetryAfter::new().with_max(Duration::from_secs(30))),
    );
    Registry::new()
        .scope(async {
            let start = Instant::now();
            let (r, times) = run_script(&SITE, vec![Err(E::Throttled(31 * S))]).await;
            assert_eq!(
                r,
                Err(E::Throttled(31 * S)),
                "the server's own error comes back"
            );
            assert_eq!(times.len(), 1);
            assert_eq!(start.elapsed(), Duration::ZERO, "it must not sleep");
            let (r, times) = run_script(&SITE, vec![Err(E::Throttled(30 * S))]).await;
            assert_eq!(
                (r, times.len()),
                (Ok(0), 2),
                "a hint at the cap is honoured"
            );
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn execute_ends_on_auth_and_an_execution_with_a_refresh_refreshes() {
    static SITE: Site = Site::new(
        &Policy::new("exec_auth", module_path!())
            .with_retries(2)
            .idempotent(),
    );
    let registry = Registry::new();
    registry
        .scope(async {
            // No refresh to run: the auth error is the call's result, after one attempt (it was
            // taken for a plain retry).
            let attempts = AtomicU32::new(0);
            let r: Result<u32, E> = execute(&SITE, hooks(), || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err(E::Auth) }
            })
            .await;
            assert_eq!((r, attempts.load(Ordering::Relaxed)), (Err(E::Auth), 1));

            // With one: refused twice, refreshed twice, then served.
            let (attempts, refreshes) = (AtomicU32::new(0), AtomicU32::new(0));
            let r: Result<u32, E> = Execution::new(&SITE, hooks())
                .refresh(|| {
                    refreshes.fetch_add(1, Ordering::Relaxed);
                    async { Ok(()) }
                })
                .run(|| {
                    let n = attempts.fetch_add(1, Ordering::Relaxed);
                    async move { if n < 2 { Err(E::Auth) } else { Ok(n) } }
                })
                .await;
            assert_eq!(r, Ok(2));
            assert_eq!(refreshes.load(Ordering::Relaxed), 2);

            // Its blocking twin, and a refresh that fails ends the call with its error.
            let r: Result<u32, E> = Execution::new(&SITE, hooks())
                .refresh(|| Err(E::Permanent))
                .run_blocking(|| Err(E::Auth));
            assert_eq!(r, Err(E::Permanent));
        })
        .await;
    let m = registry.metrics();
    let s = &m.site("exec_auth").unwrap().metrics;
    assert_eq!((s.refreshes, s.retries), (3, 0));
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[test]
fn a_breaker_without_from_rejected_is_reported_once_not_silently_dropped() {
    static SITE: Site = Site::new(&Policy::new("no_hook", module_path!()).with_breaker("no_hook"));
    let out = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .finish();
    let registry = Registry::new();
    tracing::subscriber::with_default(subscriber, || {
        registry.enter(|| {
            for _ in 0..3 {
                let r: Result<u32, E> = execute_blocking(&SITE, Hooks::new(), || Ok(1));
                assert_eq!(r, Ok(1));
            }
        })
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("none of them is applied").count(), 1, "{text}");
    assert!(text.contains("ERROR") && text.contains("no_hook"), "{text}");
}
