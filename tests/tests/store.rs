//! The store seam.
//!
//! A rate limiter kept on a server answers each permit by a round trip (`Permit::Ask`), and the
//! call awaits it before its attempt. The "server" here answers after 5 ms on the paused clock,
//! from a queue of answers the test sets, so every wait is exact.
//!
//! Breakers and retry budgets keep their local state and ask a store on their slow paths only:
//! two registries here are two replicas sharing one in-memory "fleet" store.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::breaker::Breaker;
use resilience_runtime::breaker::{BreakerConfig, BreakerState, Outcome};
use resilience_runtime::budget::RetryBudget;
use resilience_runtime::limit::RateLimit;
use resilience_runtime::store::{BreakerStore, BudgetStore, Permit};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("busy")]
    #[connector(transient)]
    Busy,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

const ROUND_TRIP: Duration = Duration::from_millis(5);

/// A limiter that asks its server for every permit.
#[derive(Debug, Default)]
struct Remote {
    /// The server's next answers; `None` once they run out: the server never answers.
    answers: Mutex<VecDeque<Result<(), Duration>>>,
    /// The keys asked for, in order.
    asked: Mutex<Vec<Option<String>>>,
    /// Round trips dropped before they were answered.
    abandoned: Arc<AtomicU32>,
    /// How the server answers: after `ROUND_TRIP` on the clock, or from another thread.
    from_thread: bool,
}

impl Remote {
    fn answering(answers: impl IntoIterator<Item = Result<(), Duration>>) -> Arc<Remote> {
        Arc::new(Remote {
            answers: Mutex::new(answers.into_iter().collect()),
            ..Remote::default()
        })
    }

    fn asked(&self) -> Vec<Option<String>> {
        self.asked.lock().unwrap().clone()
    }
}

/// Counts a round trip dropped before its answer.
struct Abandoned(Arc<AtomicU32>, bool);

impl Abandoned {
    fn answered(mut self) {
        self.1 = true;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl RateLimit for Remote {
    fn try_acquire(&self) -> Result<(), Duration> {
        // The engine asks through `acquire`; nothing else may take a permit here.
        Err(Duration::from_secs(3600))
    }

    fn acquire(&self, key: Option<&str>) -> Permit {
        self.asked.lock().unwrap().push(key.map(str::to_owned));
        let answer = self.answers.lock().unwrap().pop_front();
        let guard = Abandoned(self.abandoned.clone(), false);
        if self.from_thread {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(answer.unwrap_or(Ok(())));
            });
            return Permit::ask(async move {
                let a = rx.await.unwrap_or(Ok(()));
                guard.answered();
                a
            });
        }
        Permit::ask(async move {
            tokio::time::sleep(ROUND_TRIP).await;
            let Some(a) = answer else {
                return std::future::pending().await;
            };
            guard.answered();
            a
        })
    }
}

thread_local! {
    /// Attempts run on this thread: each test drives its calls on its own thread (a
    /// current-thread runtime), so tests running in parallel do not see each other's.
    static RUNS: Cell<u32> = const { Cell::new(0) };
}

#[resilient(retries = 3, idempotent, rate_limit = "store_remote", deadline = "10s")]
async fn limited() -> Result<u32, ApiError> {
    RUNS.set(RUNS.get() + 1);
    Ok(1)
}

fn site(r: &Registry, op: &str) -> resilience_runtime::metrics::SiteMetrics {
    r.metrics().site(op).unwrap().metrics.clone()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_granted_round_trip_lets_the_attempt_run_once_it_is_answered() {
    let registry = Registry::new();
    let remote = Remote::answering([Ok(())]);
    registry.set_rate_limit("store_remote", remote.clone());
    let runs = RUNS.get();
    let start = Instant::now();
    assert_eq!(registry.scope(limited()).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ROUND_TRIP);
    assert_eq!(RUNS.get(), runs + 1);
    assert_eq!(remote.asked(), vec![None]);
    let s = site(&registry, "limited");
    assert_eq!(
        (
            s.ok,
            s.rate_limit_allowed,
            s.rate_limit_blocked,
            s.capacity_waits
        ),
        (1, 1, 0, 0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refusal_by_round_trip_is_waited_out_and_asked_again() {
    let registry = Registry::new();
    let remote = Remote::answering([Err(Duration::from_millis(300)), Ok(())]);
    registry.set_rate_limit("store_remote", remote.clone());
    let runs = RUNS.get();
    let start = Instant::now();
    assert_eq!(registry.scope(limited()).await.unwrap(), 1);
    // A round trip, the server's 300 ms, another round trip.
    assert_eq!(start.elapsed(), ROUND_TRIP * 2 + Duration::from_millis(300));
    assert_eq!(RUNS.get(), runs + 1, "one attempt");
    assert_eq!(remote.asked().len(), 2);
    let s = site(&registry, "limited");
    assert_eq!(
        (
            s.ok,
            s.retries,
            s.rate_limit_allowed,
            s.rate_limit_blocked,
            s.capacity_waits
        ),
        (1, 0, 1, 1, 1)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_round_trip_that_never_answers_ends_at_the_deadline() {
    let registry = Registry::new();
    let remote = Remote::answering([]);
    registry.set_rate_limit("store_remote", remote.clone());
    let runs = RUNS.get();
    let start = Instant::now();
    let r = registry.scope(limited()).await;
    assert!(
        matches!(
            r,
            Err(ApiError::Rejected(Rejected::DeadlineExceeded { .. }))
        ),
        "{r:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(RUNS.get(), runs, "no attempt");
    assert_eq!(remote.abandoned.load(Ordering::SeqCst), 1);
    let s = site(&registry, "limited");
    assert_eq!((s.ok, s.rejected, s.rate_limit_allowed), (0, 1, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_dropped_while_it_asks_drops_its_round_trip_and_its_ticket() {
    let registry = Registry::new();
    let remote = Remote::answering([]);
    registry.set_rate_limit("store_keyed", remote.clone());
    let config = BreakerConfig::default().with_half_open_probes(1);
    registry.configure_breaker("store_probe", config).unwrap();
    // The tenant's breaker, tripped and cooled down: the next call is its one probe, and a
    // probe ticket kept by a dropped call would refuse every call after it.
    let b = registry.keyed_breakers("store_probe").get("t1");
    while b.state() != BreakerState::Open {
        let t = b.acquire().unwrap();
        b.record(t, Outcome::Failure);
    }
    tokio::time::advance(config.cooldown).await;
    let r = registry
        .scope(tokio::time::timeout(Duration::from_secs(1), keyed("t1")))
        .await;
    assert!(r.is_err(), "still asking after 1 s");
    assert_eq!(remote.abandoned.load(Ordering::SeqCst), 1);
    assert_eq!(remote.asked(), vec![Some("t1".to_owned())]);
    remote.answers.lock().unwrap().push_back(Ok(()));
    assert_eq!(registry.scope(keyed("t1")).await.unwrap(), 2);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the probe went through and closed it"
    );
}

#[resilient(
    retries = 3,
    idempotent,
    rate_limit = "store_keyed",
    breaker = "store_probe",
    breaker_key = tenant
)]
async fn keyed(tenant: &str) -> Result<u32, ApiError> {
    let _ = tenant;
    Ok(2)
}

thread_local! {
    /// Attempts run on this thread: each test drives its calls on its own thread (a
    /// current-thread runtime), so tests running in parallel do not see each other's.
    static BLOCKING_RUNS: Cell<u32> = const { Cell::new(0) };
}

#[resilient(retries = 3, idempotent, rate_limit = "store_blocking")]
fn blocking() -> Result<u32, ApiError> {
    BLOCKING_RUNS.set(RUNS.get() + 1);
    Ok(3)
}

#[test]
fn a_blocking_call_waits_for_its_round_trip_on_its_thread() {
    let registry = Registry::new().with_blocking_sleep(|_| {});
    let remote = Arc::new(Remote {
        answers: Mutex::new([Err(Duration::from_millis(300)), Ok(())].into()),
        from_thread: true,
        ..Remote::default()
    });
    registry.set_rate_limit("store_blocking", remote.clone());
    assert_eq!(registry.enter(blocking).unwrap(), 3);
    assert_eq!(BLOCKING_RUNS.get(), 1);
    assert_eq!(remote.asked().len(), 2);
    let s = site(&registry, "blocking");
    assert_eq!(
        (
            s.ok,
            s.rate_limit_allowed,
            s.rate_limit_blocked,
            s.capacity_waits
        ),
        (1, 1, 1, 1)
    );
}

/// A fleet's breaker state: open once any replica tripped, one probe at a time fleet-wide.
#[derive(Debug, Default)]
struct FleetBreaker {
    open: AtomicBool,
    probing: AtomicBool,
    /// Every transition the replicas reported: (from, to, by the store).
    seen: Mutex<Vec<(BreakerState, BreakerState, bool)>>,
}

impl FleetBreaker {
    /// What a backend's sync task does for each replica.
    fn sync(&self, replica: &Breaker) {
        if self.open.load(Ordering::SeqCst) {
            replica.open_by_store();
        }
    }
}

impl BreakerStore for FleetBreaker {
    fn transitioned(&self, _: &Breaker, from: BreakerState, to: BreakerState, by_store: bool) {
        self.seen.lock().unwrap().push((from, to, by_store));
        if from == BreakerState::HalfOpen {
            self.probing.store(false, Ordering::SeqCst);
        }
        match to {
            BreakerState::Open => self.open.store(true, Ordering::SeqCst),
            BreakerState::Closed => self.open.store(false, Ordering::SeqCst),
            _ => {}
        }
    }

    fn may_probe(&self, _: &Breaker) -> Result<(), Duration> {
        if self.probing.swap(true, Ordering::SeqCst) {
            return Err(Duration::from_millis(100));
        }
        Ok(())
    }
}

thread_local! {
    /// Attempts run on this thread: each test drives its calls on its own thread (a
    /// current-thread runtime), so tests running in parallel do not see each other's.
    static FLEET_RUNS: Cell<u32> = const { Cell::new(0) };
}

#[resilient(retries = 2, idempotent, jitter = "none", breaker = "store_fleet")]
async fn fleet_call(fail: bool) -> Result<u32, ApiError> {
    FLEET_RUNS.set(FLEET_RUNS.get() + 1);
    if fail { Err(ApiError::Busy) } else { Ok(4) }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_breaker_opened_on_one_replica_opens_on_the_other_and_the_fleet_probes_once() {
    let fleet = Arc::new(FleetBreaker::default());
    let config = BreakerConfig::default().with_failure_threshold(1);
    let replicas = [Registry::new(), Registry::new()];
    for r in &replicas {
        r.configure_breaker("store_fleet", config).unwrap();
        r.breaker("store_fleet").set_store(fleet.clone());
    }
    let [a, b] = &replicas;
    // Replica a trips its breaker; b learns it at its next sync and refuses without an attempt.
    let runs = FLEET_RUNS.get();
    assert!(matches!(
        a.scope(fleet_call(true)).await,
        Err(ApiError::Rejected(_))
    ));
    assert_eq!(a.breaker("store_fleet").state(), BreakerState::Open);
    fleet.sync(&b.breaker("store_fleet"));
    assert_eq!(b.breaker("store_fleet").state(), BreakerState::Open);
    let r = b.scope(fleet_call(false)).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(FLEET_RUNS.get(), runs + 1, "only a's first attempt ran");
    // Both cooled down: a takes the fleet's probe, b is refused while it is out.
    tokio::time::advance(config.cooldown).await;
    let probe = a.breaker("store_fleet").acquire().expect("a probes");
    let r = b.scope(fleet_call(false)).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { retry_in, .. })) if retry_in == Duration::from_millis(100)),
        "{r:?}"
    );
    assert_eq!(
        b.breaker("store_fleet").state(),
        BreakerState::Open,
        "b did not turn half-open"
    );
    a.breaker("store_fleet").record(probe, Outcome::Success);
    assert_eq!(a.breaker("store_fleet").state(), BreakerState::Closed);
    // The probe is back: b may probe now.
    assert_eq!(b.scope(fleet_call(false)).await.unwrap(), 4);
    assert_eq!(
        *fleet.seen.lock().unwrap(),
        [
            (BreakerState::Closed, BreakerState::Open, false),
            (BreakerState::Closed, BreakerState::Open, true),
            (BreakerState::Open, BreakerState::HalfOpen, false),
            (BreakerState::HalfOpen, BreakerState::Closed, false),
            (BreakerState::Open, BreakerState::HalfOpen, false),
            (BreakerState::HalfOpen, BreakerState::Closed, false),
        ]
    );
}

/// A fleet's retry budget: `left` retries for every replica together.
#[derive(Debug)]
struct FleetBudget {
    left: AtomicU32,
}

impl BudgetStore for FleetBudget {
    fn may_spend(&self, _: &RetryBudget) -> bool {
        self.left.load(Ordering::SeqCst) > 0
    }

    fn spent(&self, _: &RetryBudget) {
        self.left.fetch_sub(1, Ordering::SeqCst);
    }
}

#[resilient(retries = 3, idempotent, jitter = "none", breaker = "store_budget")]
async fn always_busy() -> Result<u32, ApiError> {
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fleet_budget_bounds_the_retries_of_every_replica_together() {
    let fleet = Arc::new(FleetBudget {
        left: AtomicU32::new(2),
    });
    let replicas = [Registry::new(), Registry::new()];
    for r in &replicas {
        let never_opens = BreakerConfig::default().with_failure_threshold(100);
        r.configure_breaker("store_budget", never_opens).unwrap();
        r.budget("store_budget").set_store(fleet.clone());
    }
    let [a, b] = &replicas;
    assert!(matches!(a.scope(always_busy()).await, Err(ApiError::Busy)));
    assert!(matches!(b.scope(always_busy()).await, Err(ApiError::Busy)));
    let m = |r: &Registry| r.metrics().site("always_busy").unwrap().metrics.clone();
    let (ma, mb) = (m(a), m(b));
    // a retried twice (the fleet's two), and was refused its third; b was refused its first.
    assert_eq!((ma.retries, ma.budget_exhausted), (2, 1));
    assert_eq!((mb.retries, mb.budget_exhausted), (0, 1));
    assert_eq!(b.budget("store_budget").exhausted_total(), 1);
    assert_eq!(fleet.left.load(Ordering::SeqCst), 0);
}

/// A store whose every hook panics.
#[derive(Debug)]
struct Broken;

impl BreakerStore for Broken {
    fn transitioned(&self, _: &Breaker, _: BreakerState, _: BreakerState, _: bool) {
        panic!("transitioned");
    }
    fn may_probe(&self, _: &Breaker) -> Result<(), Duration> {
        panic!("may_probe");
    }
}

impl BudgetStore for Broken {
    fn may_spend(&self, _: &RetryBudget) -> bool {
        panic!("may_spend");
    }
    fn spent(&self, _: &RetryBudget) {
        panic!("spent");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panicking_store_leaves_the_local_state_in_charge() {
    let r = Registry::new();
    let config = BreakerConfig::default().with_failure_threshold(2);
    r.configure_breaker("store_fleet", config).unwrap();
    r.breaker("store_fleet").set_store(Arc::new(Broken));
    r.budget("store_fleet").set_store(Arc::new(Broken));
    // The budget's panicking store refuses the retry rather than let it through unbounded.
    let runs = FLEET_RUNS.get();
    assert!(matches!(
        r.scope(fleet_call(true)).await,
        Err(ApiError::Busy)
    ));
    assert_eq!(FLEET_RUNS.get(), runs + 1);
    assert_eq!(r.budget("store_fleet").exhausted_total(), 1);
    assert_eq!(r.breaker("store_fleet").state(), BreakerState::Closed);
    // The second failure trips the breaker (the store's panic at the transition changes
    // nothing), which ends the call before its retry is asked of the budget.
    assert!(matches!(
        r.scope(fleet_call(true)).await,
        Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))
    ));
    assert_eq!(FLEET_RUNS.get(), runs + 2);
    assert_eq!(r.breaker("store_fleet").state(), BreakerState::Open);
    assert_eq!(r.budget("store_fleet").exhausted_total(), 1);
    // After the cooldown the local machine decides the probe, and closes on its success.
    tokio::time::advance(config.cooldown).await;
    assert_eq!(r.scope(fleet_call(false)).await.unwrap(), 4);
    assert_eq!(r.breaker("store_fleet").state(), BreakerState::Closed);
}
