//! Single-flight refresh: many concurrent calls that meet an expired or refused token cause one
//! refresh, not one each; a caller's cancellation neither cancels nor restarts it; a panic in it
//! reaches every waiter once. Paused time; thousands of tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::refresh::{SingleFlight, Versioned};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
struct TokenError(u32);

/// A token that expires at a point in (paused) time.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    id: u32,
    expires_at: Instant,
}

struct Endpoint {
    fetches: AtomicU32,
    /// Fetches numbered below this fail.
    fail_until: u32,
    /// Fetches numbered below this panic.
    panic_until: u32,
    /// How long a fetch takes.
    latency: Duration,
}

impl Endpoint {
    fn new(fail_until: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            fetches: AtomicU32::new(0),
            fail_until,
            panic_until: 0,
            latency: Duration::from_millis(200),
        })
    }

    fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// One request; the future owns the endpoint, so it can outlive its caller.
    async fn fetch(self: Arc<Self>) -> Result<Token, TokenError> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.latency).await;
        if n < self.panic_until {
            panic!("token endpoint panicked");
        }
        if n < self.fail_until {
            return Err(TokenError(n));
        }
        Ok(Token {
            id: n,
            expires_at: Instant::now() + Duration::from_secs(60),
        })
    }
}

fn fresh(t: &Token) -> bool {
    t.expires_at > Instant::now()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_meeting_an_expired_token_cause_one_refresh() {
    let endpoint = Endpoint::new(0);
    let cell = Arc::new(SingleFlight::with_value(Token {
        id: 0,
        expires_at: Instant::now() + Duration::from_secs(1),
    }));
    tokio::time::sleep(Duration::from_secs(2)).await; // the token has expired
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move {
                // Callers arrive over 500 ms, before, during and after the refresh.
                tokio::time::sleep(Duration::from_micros(500 * i)).await;
                cell.get_or_refresh(fresh, || endpoint.fetch()).await
            })
        })
        .collect();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!((v.value.id, v.generation), (1, 2));
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(cell.refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn late_refusals_of_an_old_generation_do_not_refresh_again() {
    let endpoint = Endpoint::new(0);
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let first = cell
        .get_or_refresh(fresh, || endpoint.clone().fetch())
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    // Many calls used generation 1 and are refused, some long after a refresh has finished.
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(3 * i)).await;
                cell.refresh(1, || endpoint.fetch()).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().generation, 2);
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);
    // Invalidate: only the current generation can be invalidated, and the next caller refreshes.
    assert!(!cell.invalidate(1));
    assert!(cell.invalidate(2));
    assert_eq!(cell.get(), None);
    let v = cell
        .get_or_refresh(fresh, || endpoint.clone().fetch())
        .await
        .unwrap();
    assert_eq!((v.value.id, v.generation), (3, 3));
    assert_eq!(cell.get().map(|v| v.generation), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_fails_its_waiters_once_and_the_next_wave_retries() {
    let endpoint = Endpoint::new(2); // the first fetch fails
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let wave = |n: usize| {
        (0..n)
            .map(|_| {
                let (cell, endpoint) = (cell.clone(), endpoint.clone());
                tokio::spawn(async move { cell.get_or_refresh(fresh, || endpoint.fetch()).await })
            })
            .collect::<Vec<_>>()
    };
    for t in wave(300) {
        assert_eq!(t.await.unwrap(), Err(TokenError(1)));
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1);
    for t in wave(300) {
        let v: Versioned<Token> = t.await.unwrap().unwrap();
        assert_eq!((v.value.id, v.generation), (2, 1));
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_does_not_cancel_the_refresh() {
    let endpoint = Endpoint::new(0);
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let start = Instant::now();
    let leader = {
        let (cell, endpoint) = (cell.clone(), endpoint.clone());
        tokio::spawn(async move { cell.get_or_refresh(fresh, || endpoint.fetch()).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move {
                let v = cell.get_or_refresh(fresh, || endpoint.fetch()).await;
                (v, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for t in waiters {
        let (v, at) = t.await.unwrap();
        let v = v.unwrap();
        // The leader's fetch, neither restarted nor delayed.
        assert_eq!((v.value.id, v.generation), (1, 1));
        assert_eq!(at - start, Duration::from_millis(200));
    }
    assert_eq!(endpoint.fetches(), 1);
    assert_eq!(cell.refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn callers_timing_out_before_a_slow_refresh_neither_restart_nor_lose_it() {
    let endpoint = Arc::new(Endpoint {
        latency: Duration::from_secs(5),
        ..Arc::into_inner(Endpoint::new(0)).unwrap()
    });
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let start = Instant::now();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    cell.get_or_refresh(fresh, || endpoint.fetch()),
                )
                .await
            })
        })
        .collect();
    for t in callers {
        assert!(t.await.unwrap().is_err(), "a caller got a token within 2 s");
    }
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    assert_eq!(endpoint.fetches(), 1);
    // Nobody waits any more; the refresh still finishes at 5 s and keeps its token.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = cell
        .get_or_refresh(fresh, || endpoint.clone().fetch())
        .await
        .unwrap();
    assert_eq!((v.value.id, v.generation), (1, 1));
    assert_eq!(endpoint.fetches(), 1);
    assert_eq!(cell.refreshes(), 1);
}

/// The message of a task's panic.
fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .expect("a string payload")
}

#[tokio::test(start_paused = true)]
async fn a_panicking_refresh_runs_once_and_panics_every_waiter() {
    let endpoint = Arc::new(Endpoint {
        panic_until: 2, // the first fetch panics
        ..Arc::into_inner(Endpoint::new(0)).unwrap()
    });
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let waiters: Vec<_> = (0..50)
        .map(|i| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * i)).await;
                cell.get_or_refresh(fresh, || endpoint.fetch()).await
            })
        })
        .collect();
    for t in waiters {
        let e = t.await.unwrap_err();
        assert!(e.is_panic());
        assert_eq!(panic_message(e), "token endpoint panicked");
    }
    assert_eq!(endpoint.fetches(), 1);
    assert_eq!(cell.refreshes(), 1);
    assert_eq!(cell.get(), None);
    // The flight is over: the next call refreshes again, and that works.
    let v = cell
        .get_or_refresh(fresh, || endpoint.clone().fetch())
        .await
        .unwrap();
    assert_eq!((v.value.id, v.generation), (2, 1));
    assert_eq!(endpoint.fetches(), 2);
    assert_eq!(cell.refreshes(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_closure_that_panics_leaves_no_refresh_in_flight() {
    let endpoint = Endpoint::new(0);
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let caller = {
        let cell = cell.clone();
        tokio::spawn(async move {
            cell.get_or_refresh(
                fresh,
                || -> std::future::Ready<Result<Token, TokenError>> {
                    panic!("no credentials configured")
                },
            )
            .await
        })
    };
    assert_eq!(
        panic_message(caller.await.unwrap_err()),
        "no credentials configured"
    );
    assert_eq!(cell.refreshes(), 1);
    let v = cell
        .get_or_refresh(fresh, || endpoint.clone().fetch())
        .await
        .unwrap();
    assert_eq!((v.value.id, v.generation), (1, 1));
    assert_eq!(cell.refreshes(), 2);
}

/// A runtime on a paused clock.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn a_refresh_dropped_with_its_runtime_is_started_again_by_the_next_call() {
    let endpoint = Endpoint::new(0);
    let cell = SingleFlight::<Token, TokenError>::new();
    let first = paused_runtime();
    first.block_on(async {
        let call = cell.get_or_refresh(fresh, || endpoint.clone().fetch());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err()
        );
    });
    // The refresh's task goes with its runtime, unfinished.
    drop(first);
    assert_eq!(cell.get(), None);
    let v = paused_runtime()
        .block_on(cell.get_or_refresh(fresh, || endpoint.clone().fetch()))
        .unwrap();
    assert_eq!((v.value.id, v.generation), (2, 1));
    assert_eq!(endpoint.fetches(), 2);
    assert_eq!(cell.refreshes(), 2);
}

/// Outside any Tokio runtime there is nothing to spawn on: the refresh runs in the call that
/// starts it, and its value is shared as usual (no panic).
#[test]
fn a_refresh_outside_a_runtime_runs_in_its_call() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let cell = SingleFlight::<String, TokenError>::new();
    let fut = cell.get_or_refresh(|_| true, || async { Ok("token-1".to_owned()) });
    let mut fut = std::pin::pin!(fut);
    let got = match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("a ready refresh outside a runtime completes at once"),
    };
    assert_eq!((got.value.as_str(), got.generation), ("token-1", 1));
    assert_eq!(cell.refreshes(), 1);
    assert_eq!(cell.get().map(|v| v.value), Some("token-1".to_owned()));
}
