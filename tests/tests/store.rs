//! The store seam: a rate limiter kept on a server answers each permit by a round trip
//! (`Permit::Ask`), and the call awaits it before its attempt.
//!
//! The "server" here answers after 5 ms on the paused clock, from a queue of answers the test
//! sets, so every wait is exact.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::breaker::{BreakerConfig, BreakerState, Outcome};
use resilience_runtime::limit::RateLimit;
use resilience_runtime::store::Permit;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
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

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, rate_limit = "store_remote", deadline = "10s")]
async fn limited() -> Result<u32, ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
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
    let runs = RUNS.load(Ordering::SeqCst);
    let start = Instant::now();
    assert_eq!(registry.scope(limited()).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ROUND_TRIP);
    assert_eq!(RUNS.load(Ordering::SeqCst), runs + 1);
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
    let runs = RUNS.load(Ordering::SeqCst);
    let start = Instant::now();
    assert_eq!(registry.scope(limited()).await.unwrap(), 1);
    // A round trip, the server's 300 ms, another round trip.
    assert_eq!(start.elapsed(), ROUND_TRIP * 2 + Duration::from_millis(300));
    assert_eq!(RUNS.load(Ordering::SeqCst), runs + 1, "one attempt");
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
    let runs = RUNS.load(Ordering::SeqCst);
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
    assert_eq!(RUNS.load(Ordering::SeqCst), runs, "no attempt");
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

static BLOCKING_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, rate_limit = "store_blocking")]
fn blocking() -> Result<u32, ApiError> {
    BLOCKING_RUNS.fetch_add(1, Ordering::SeqCst);
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
    assert_eq!(BLOCKING_RUNS.load(Ordering::SeqCst), 1);
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
