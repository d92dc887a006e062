//! Cancellation and panics leak nothing.
//!
//! Thousands of calls are dropped at random (seeded) moments: during an attempt (holding a
//! bulkhead slot, sometimes a half-open probe), during a backoff sleep, and while waiting for a
//! rate-limit permit. Afterwards every breaker, bulkhead and budget must be consistent, and the
//! cancelled calls must not have been counted as failures. A panicking attempt must give back
//! what it holds and be counted exactly once.
//!
//! ```text
//! cargo test -p resilience-runtime --test cancellation -- --nocapture
//! ```

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::backoff::{Backoff, Rng};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::engine::{HookSet, Hooks, Policy, Site, execute};
use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit, Gcra};
use resilience_runtime::{CarriesRejected, ConnectorError, Registry, Rejected};
use tokio::time::Instant;

/// The dependency's error, classified by the derive the way a connector's would be.
#[derive(Debug, Clone, PartialEq, ConnectorError)]
enum E {
    #[connector(transient)]
    Unavailable,
    #[connector(rejected)]
    Rejected(Rejected),
}

fn hooks() -> impl HookSet<(), E> {
    Hooks::new().with_from_rejected(E::from_rejected)
}

const BACKOFF: Backoff = Backoff::new()
    .with_base(Duration::from_millis(100))
    .with_max(Duration::from_secs(1));

static SITE: Site = Site::new(
    &Policy::new("cancel", module_path!())
        .with_retries(3)
        .idempotent()
        .with_backoff(BACKOFF)
        .with_breaker("cancel-dep")
        .with_rate_limit("cancel-rl")
        .with_bulkhead("cancel-bh")
        .with_timeout(Duration::from_millis(500))
        .with_deadline(Duration::from_secs(5)),
);

/// Where a call was when it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Before its first attempt: waiting for a rate-limit permit.
    BeforeFirstAttempt,
    /// Inside an attempt, holding a bulkhead slot and a closed-breaker ticket.
    Attempt,
    /// Inside an attempt, holding a bulkhead slot and a half-open probe.
    Probe,
    /// Between attempts: a backoff sleep or a rate-limit wait.
    BetweenAttempts,
}

struct World {
    registry: Registry,
    bulkhead: Arc<ConcurrencyLimit>,
}

/// A registry with the site's breaker, budget, rate limiter (`burst` permits per 50 ms) and a
/// bulkhead of 32.
fn world(burst: u32) -> World {
    let registry = Registry::new().with_seed(11);
    registry
        .configure_breaker(
            "cancel-dep",
            BreakerConfig::new()
                .with_failure_threshold(5)
                .with_cooldown(Duration::from_secs(2))
                .with_half_open_probes(2),
        )
        .unwrap();
    registry
        .configure_budget("cancel-dep", BudgetConfig::new())
        .unwrap();
    registry.set_rate_limit(
        "cancel-rl",
        Arc::new(Gcra::new(burst, Duration::from_millis(50))),
    );
    let bulkhead = Arc::new(ConcurrencyLimit::new(32));
    registry.set_bulkhead("cancel-bh", bulkhead.clone());
    World { registry, bulkhead }
}

#[derive(Debug, Default)]
struct Tally {
    completed: u64,
    cancelled: BTreeMap<Phase, u64>,
    attempts_cancelled: u64,
    attempts_failed: u64,
}

/// Runs `calls` calls, in bursts of ten every 100 ms, each dropped after a random delay of up to
/// `cancel_max` (or allowed to finish),
/// against a dependency that fails with probability `fail` (and always during five-second outages
/// every twenty seconds when `outage` is set), and answers after 0 to 400 ms.
async fn storm(
    w: &World,
    calls: u64,
    fail: f64,
    outage: bool,
    cancel_max: Duration,
    seed: u64,
) -> Tally {
    let cancel_max = cancel_max.as_millis() as u64;
    let tally = Rc::new(RefCell::new(Tally::default()));
    let rng = Rc::new(RefCell::new(Rng::seeded(seed)));
    let start = Instant::now();
    let breaker = w.registry.breaker("cancel-dep");
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut handles = Vec::new();
            for _ in 0..calls {
                let (tally, rng, registry, breaker) = (
                    tally.clone(),
                    rng.clone(),
                    w.registry.clone(),
                    breaker.clone(),
                );
                // A third of the calls run to the end; a third are dropped within the first
                // attempt's latency, a third at any moment up to `cancel_max`.
                let cancel_after = {
                    let mut r = rng.borrow_mut();
                    match r.next_u64() % 3 {
                        0 => None,
                        1 => Some(Duration::from_millis(r.next_u64() % 400)),
                        _ => Some(Duration::from_millis(r.next_u64() % cancel_max)),
                    }
                };
                handles.push(tokio::task::spawn_local(async move {
                    let phase = Rc::new(Cell::new(Phase::BeforeFirstAttempt));
                    let call = registry.scope(execute(&SITE, hooks(), || {
                        let (phase, tally, rng) = (phase.clone(), tally.clone(), rng.clone());
                        // The breaker admitted this attempt just now, on this thread: it is a
                        // probe exactly when the breaker is half-open.
                        let probe = breaker.state() == BreakerState::HalfOpen;
                        async move {
                            phase.set(if probe { Phase::Probe } else { Phase::Attempt });
                            let (latency, fails) = {
                                let mut r = rng.borrow_mut();
                                let down = outage
                                    && start.elapsed().as_secs() % 20 >= 10
                                    && start.elapsed().as_secs() % 20 < 15;
                                (
                                    Duration::from_millis(r.next_u64() % 400),
                                    down || r.unit() < fail,
                                )
                            };
                            let mut guard = AttemptGuard(tally.clone(), true);
                            tokio::time::sleep(latency).await;
                            guard.1 = false;
                            drop(guard);
                            phase.set(Phase::BetweenAttempts);
                            if fails {
                                tally.borrow_mut().attempts_failed += 1;
                                Err(E::Unavailable)
                            } else {
                                Ok(())
                            }
                        }
                    }));
                    match cancel_after {
                        None => {
                            let _ = call.await;
                            tally.borrow_mut().completed += 1;
                        }
                        Some(after) => match tokio::time::timeout(after, call).await {
                            Ok(_) => tally.borrow_mut().completed += 1,
                            Err(_) => {
                                *tally.borrow_mut().cancelled.entry(phase.get()).or_default() += 1;
                            }
                        },
                    }
                }));
                if handles.len() % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            for h in handles {
                h.await.unwrap();
            }
        })
        .await;
    Rc::try_unwrap(tally).unwrap().into_inner()
}

/// Counts an attempt dropped before it finished.
struct AttemptGuard(Rc<RefCell<Tally>>, bool);

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if self.1 {
            self.0.borrow_mut().attempts_cancelled += 1;
        }
    }
}

/// Everything the calls held is back, and the breaker still works: after its cooldown a healthy
/// call goes through and closes it.
async fn assert_consistent(w: &World) {
    let b = w.registry.breaker("cancel-dep");
    assert_eq!(b.probes_in_flight(), 0, "a half-open probe leaked: {b:?}");
    assert_eq!(w.bulkhead.in_use(), 0, "a bulkhead slot leaked");
    let budget = w.registry.budget("cancel-dep");
    assert!(budget.tokens_milli() <= 100_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..200 {
        let r = w
            .registry
            .scope(execute(&SITE, hooks(), || async { Ok::<(), E>(()) }))
            .await;
        assert_eq!(r, Ok(()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.probes_in_flight(), 0);
    assert_eq!(w.bulkhead.in_use(), 0);
    // Two hundred successes refill whatever the storm spent.
    assert_eq!(budget.tokens_milli(), 100_000);
}

fn print(name: &str, t: &Tally) {
    let c = |p| t.cancelled.get(&p).copied().unwrap_or(0);
    println!(
        "{name}: completed {}, cancelled before the first attempt {}, in an attempt {}, \
         holding a probe {}, between attempts {}; attempts cancelled {}, attempts failed {}",
        t.completed,
        c(Phase::BeforeFirstAttempt),
        c(Phase::Attempt),
        c(Phase::Probe),
        c(Phase::BetweenAttempts),
        t.attempts_cancelled,
        t.attempts_failed,
    );
}

/// 10,000 calls through breaker, rate limit, bulkhead, timeout and deadline against a dependency
/// that is slow, fails 5% of the time and has an outage every twenty seconds, two thirds of them
/// dropped at random moments. Every kind of await point is hit, and nothing leaks.
#[tokio::test(start_paused = true)]
async fn calls_dropped_at_random_points_leak_nothing() {
    let w = world(5);
    let t = storm(&w, 10_000, 0.05, true, Duration::from_secs(3), 42).await;
    print("storm", &t);
    println!(
        "storm metrics: {:?}",
        w.registry.metrics().site("cancel").unwrap().metrics
    );
    for p in [
        Phase::BeforeFirstAttempt,
        Phase::Attempt,
        Phase::Probe,
        Phase::BetweenAttempts,
    ] {
        assert!(
            t.cancelled.get(&p).copied().unwrap_or(0) > 0,
            "never dropped at {p:?}"
        );
    }
    let b = w.registry.breaker("cancel-dep");
    assert!(b.opened_total() > 0, "the outage never opened the breaker");
    // Every call that finished was counted once; no cancelled call was counted at all.
    let m = w.registry.metrics();
    let s = m.site("cancel").unwrap().metrics.clone();
    let counted =
        s.ok + s.errors.transient + s.errors.permanent + s.errors.policy_violation + s.errors.auth;
    let counted = counted + s.rejected;
    assert_eq!(counted, t.completed, "{s:?}");
    assert_consistent(&w).await;
}

/// With a healthy but slow dependency, calls dropped mid-attempt are no health signal: the
/// breaker never opens and counts no failure, and no call is counted as an error.
#[tokio::test(start_paused = true)]
async fn cancelled_calls_are_not_failures() {
    let w = world(1_000);
    let t = storm(&w, 3_000, 0.0, false, Duration::from_millis(400), 7).await;
    print("healthy", &t);
    assert!(t.cancelled.get(&Phase::Attempt).copied().unwrap_or(0) > 500);
    let b = w.registry.breaker("cancel-dep");
    assert_eq!(b.opened_total(), 0);
    assert_eq!(b.failures(), 0);
    let m = w.registry.metrics();
    let s = &m.site("cancel").unwrap().metrics;
    assert_eq!(s.ok, t.completed);
    assert_eq!(s.errors.transient + s.errors.permanent, 0);
    assert_eq!(s.retries, 0);
    assert_consistent(&w).await;
}

static PANICS: Site = Site::new(
    &Policy::new("panics", module_path!())
        .with_retries(3)
        .idempotent()
        .with_breaker("panic-dep")
        .with_bulkhead("panic-bh"),
);

/// A panicking attempt, as a closed-breaker call and as a half-open probe, gives back its ticket
/// and bulkhead slot, is counted exactly once (as a permanent error: never retried, no health
/// signal), and the panic reaches the caller.
#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_releases_what_it_holds_and_is_counted_once() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "panic-dep",
            BreakerConfig::new()
                .with_failure_threshold(1)
                .with_cooldown(Duration::from_secs(10)),
        )
        .unwrap();
    let bulkhead = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("panic-bh", bulkhead.clone());
    let attempts = Rc::new(Cell::new(0));
    let panicking = |registry: Registry, attempts: Rc<Cell<u32>>| async move {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                tokio::task::spawn_local(registry.scope(async move {
                    let _: Result<(), E> = execute(&PANICS, hooks(), || {
                        attempts.set(attempts.get() + 1);
                        async { panic!("bug in the connector") }
                    })
                    .await;
                }))
                .await
            })
            .await
    };

    // Closed breaker.
    let r = panicking(registry.clone(), attempts.clone()).await;
    assert!(r.unwrap_err().is_panic());
    assert_eq!(attempts.get(), 1, "a panicking attempt must not be retried");
    assert_eq!(bulkhead.in_use(), 0);
    let b = registry.breaker("panic-dep");
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "a panic is not a dependency failure"
    );

    // Half-open probe: open the breaker, wait out the cooldown, panic in the probe.
    let _ = registry
        .scope(execute(&PANICS, hooks(), || async {
            Err::<(), E>(E::Unavailable)
        }))
        .await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r = panicking(registry.clone(), attempts.clone()).await;
    assert!(r.unwrap_err().is_panic());
    assert_eq!(attempts.get(), 2);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 0, "the panicking probe kept its slot");
    assert_eq!(bulkhead.in_use(), 0);
    // The slot is usable: the next probe closes the breaker.
    let r = registry
        .scope(execute(&PANICS, hooks(), || async { Ok::<(), E>(()) }))
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(b.state(), BreakerState::Closed);

    let m = registry.metrics();
    let s = &m.site("panics").unwrap().metrics;
    assert_eq!(s.errors.permanent, 2, "each panic counted once: {s:?}");
    assert_eq!(s.ok, 1);
}

/// The blocking engine does the same on unwind.
#[test]
fn a_panicking_blocking_attempt_releases_its_bulkhead_slot_and_is_counted_once() {
    static BLOCKING: Site = Site::new(
        &Policy::new("panics_blocking", module_path!())
            .with_retries(2)
            .idempotent()
            .with_breaker("panic-blocking")
            .with_bulkhead("panic-blocking-bh"),
    );
    let registry = Registry::new().with_blocking_sleep(|_| {});
    let bulkhead = Arc::new(ConcurrencyLimit::new(1));
    registry.set_bulkhead("panic-blocking-bh", bulkhead.clone());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.enter(|| {
            resilience_runtime::engine::execute_blocking(&BLOCKING, hooks(), || -> Result<(), E> {
                panic!("bug in the connector")
            })
        })
    }));
    assert!(r.is_err());
    assert_eq!(bulkhead.in_use(), 0);
    let m = registry.metrics();
    let s = &m.site("panics_blocking").unwrap().metrics;
    assert_eq!(s.errors.permanent, 1);
}
