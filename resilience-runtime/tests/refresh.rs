//! Single-flight refresh: many concurrent calls that meet an expired or refused token cause one
//! refresh, not one each. Paused time; thousands of tasks.

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
}

impl Endpoint {
    fn new(fail_until: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            fetches: AtomicU32::new(0),
            fail_until,
        })
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        .get_or_refresh(fresh, || endpoint.fetch())
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
        .get_or_refresh(fresh, || endpoint.fetch())
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
async fn a_cancelled_refresh_hands_over_to_a_waiter() {
    let endpoint = Endpoint::new(0);
    let cell = Arc::new(SingleFlight::<Token, TokenError>::new());
    let leader = {
        let (cell, endpoint) = (cell.clone(), endpoint.clone());
        tokio::spawn(async move { cell.get_or_refresh(fresh, || endpoint.fetch()).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let (cell, endpoint) = (cell.clone(), endpoint.clone());
            tokio::spawn(async move { cell.get_or_refresh(fresh, || endpoint.fetch()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for t in waiters {
        let v = t.await.unwrap().unwrap();
        assert_eq!((v.value.id, v.generation), (2, 1));
    }
    // The abandoned fetch and the one that took over.
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(cell.refreshes(), 2);
}
