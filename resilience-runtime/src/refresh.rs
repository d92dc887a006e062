//! Single-flight refresh: many calls that meet an expired token cause one refresh, not one each.
//!
//! A [`SingleFlight`] holds a value (an access token) with a generation number that every
//! refresh bumps. A call reads the value with [`SingleFlight::get`] and remembers its
//! generation; when the server refuses it, the call asks for a refresh *of that generation* with
//! [`SingleFlight::refresh`]. If another call has already refreshed past it, the new value is
//! returned at once; if a refresh is running, the call waits for it; otherwise this call runs the
//! refresh and everyone waiting gets its result. [`SingleFlight::get_or_refresh`] does the same
//! for a value that is missing or that the caller's check finds expired.
//!
//! A failed refresh fails every call that waited on it (with a clone of the error) and leaves the
//! value stale, so the next call tries again: a down token endpoint sees one request per wave of
//! callers, not one per caller. A refresh whose caller is cancelled hands the job to one of the
//! waiters.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use resilience_runtime::refresh::SingleFlight;
//!
//! #[derive(Debug, Clone)]
//! struct TokenError;
//!
//! struct Client {
//!     token: SingleFlight<String, TokenError>,
//!     fetches: AtomicU32,
//! }
//!
//! impl Client {
//!     /// One request to the token endpoint.
//!     async fn fetch_token(&self) -> Result<String, TokenError> {
//!         let n = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         Ok(format!("token-{n}"))
//!     }
//!
//!     /// One attempt of an API call: the server refuses the first token.
//!     async fn list_devices(&self) -> Result<String, TokenError> {
//!         let token = self.token.get_or_refresh(|_| true, || self.fetch_token()).await?;
//!         if token.value == "token-1" {
//!             // 401: refresh the token this call used, unless someone already has.
//!             let fresh = self.token.refresh(token.generation, || self.fetch_token()).await?;
//!             return Ok(format!("devices with {}", fresh.value));
//!         }
//!         Ok(format!("devices with {}", token.value))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let client = Arc::new(Client { token: SingleFlight::new(), fetches: AtomicU32::new(0) });
//! let calls: Vec<_> = (0..100)
//!     .map(|_| {
//!         let c = client.clone();
//!         tokio::spawn(async move { c.list_devices().await })
//!     })
//!     .collect();
//! for call in calls {
//!     assert_eq!(call.await.unwrap().unwrap(), "devices with token-2");
//! }
//! // A hundred calls: one fetch for the missing token, one refresh after the 401.
//! assert_eq!(client.fetches.load(Ordering::Relaxed), 2);
//! assert_eq!(client.token.refreshes(), 2);
//! # }
//! ```
//!
//! With `#[resilient(refresh = Self::refresh)]` the refresh hook is the natural caller: the body
//! calls [`SingleFlight::invalidate`] with the generation it used before returning its `auth`
//! error, and the hook calls [`SingleFlight::get_or_refresh`], which refreshes once for all the
//! calls that were refused together.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// A value and the generation that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value (a token).
    pub value: T,
    /// The refresh that produced it: 1 for the first, bumped by every refresh.
    pub generation: u64,
}

type Flight<T, E> = watch::Receiver<Option<Result<Versioned<T>, E>>>;

struct State<T, E> {
    current: Option<Versioned<T>>,
    stale: bool,
    generation: u64,
    flight: Option<Flight<T, E>>,
}

/// A value refreshed by at most one caller at a time. See the [module docs](self).
pub struct SingleFlight<T, E> {
    state: Mutex<State<T, E>>,
    refreshes: AtomicU64,
}

impl<T, E> fmt::Debug for SingleFlight<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (generation, stale, in_flight) = match self.state.lock() {
            Ok(s) => (
                s.generation,
                s.stale || s.current.is_none(),
                s.flight.is_some(),
            ),
            Err(_) => (0, true, false),
        };
        f.debug_struct("SingleFlight")
            .field("generation", &generation)
            .field("stale", &stale)
            .field("refresh_in_flight", &in_flight)
            .field("refreshes", &self.refreshes())
            .finish()
    }
}

impl<T, E> Default for SingleFlight<T, E> {
    fn default() -> Self {
        SingleFlight::new()
    }
}

impl<T, E> SingleFlight<T, E> {
    /// An empty cell: the first [`SingleFlight::get_or_refresh`] fills it.
    pub const fn new() -> Self {
        SingleFlight {
            state: Mutex::new(State {
                current: None,
                stale: false,
                generation: 0,
                flight: None,
            }),
            refreshes: AtomicU64::new(0),
        }
    }

    /// A cell holding `value` as generation 1 (a token obtained at start-up).
    pub fn with_value(value: T) -> Self {
        let cell = SingleFlight::new();
        if let Ok(mut s) = cell.state.lock() {
            s.generation = 1;
            s.current = Some(Versioned {
                value,
                generation: 1,
            });
        }
        cell
    }

    /// The generation of the current value (0 before the first).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// How many refreshes have been started.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Marks the value of generation `seen` stale (the server refused it), so the next
    /// [`SingleFlight::get_or_refresh`] refreshes it. Returns false, and does nothing, when the
    /// value has already been refreshed past `seen`.
    pub fn invalidate(&self, seen: u64) -> bool {
        let mut s = self.lock();
        if s.generation == seen {
            s.stale = true;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T, E>> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }
}

impl<T: Clone, E: Clone> SingleFlight<T, E> {
    /// The current value, unless there is none or it was invalidated.
    pub fn get(&self) -> Option<Versioned<T>> {
        let s = self.lock();
        if s.stale {
            return None;
        }
        s.current.clone()
    }

    /// The current value if there is one, it was not invalidated and `is_fresh` accepts it (a
    /// token's expiry check); otherwise a refresh shared with every concurrent caller.
    ///
    /// # Errors
    ///
    /// The refresh's error, cloned to every caller that waited on it.
    pub async fn get_or_refresh<F, Fut>(
        &self,
        is_fresh: impl FnOnce(&T) -> bool,
        refresh: F,
    ) -> Result<Versioned<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let seen = {
            let s = self.lock();
            match &s.current {
                Some(v) if !s.stale && is_fresh(&v.value) => return Ok(v.clone()),
                _ => s.generation,
            }
        };
        self.refresh(seen, refresh).await
    }

    /// Refreshes the value of generation `seen`: returns a newer value at once if there is one,
    /// joins a refresh in flight, or runs `refresh` and shares its result.
    ///
    /// # Errors
    ///
    /// The refresh's error, cloned to every caller that waited on it.
    pub async fn refresh<F, Fut>(&self, seen: u64, refresh: F) -> Result<Versioned<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let tx = loop {
            let mut flight = {
                let mut s = self.lock();
                if s.generation > seen
                    && !s.stale
                    && let Some(v) = &s.current
                {
                    return Ok(v.clone());
                }
                match &s.flight {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        s.flight = Some(rx);
                        break tx;
                    }
                }
            };
            // The receiver keeps the last value: a refresh that ended before this wait is seen.
            match flight.wait_for(Option::is_some).await {
                Ok(r) => {
                    if let Some(r) = r.as_ref() {
                        return r.clone();
                    }
                }
                // The refresh's caller was cancelled: look again, and maybe take over.
                Err(_) => continue,
            }
        };
        self.lead(tx, refresh).await
    }

    async fn lead<F, Fut>(
        &self,
        tx: watch::Sender<Option<Result<Versioned<T>, E>>>,
        refresh: F,
    ) -> Result<Versioned<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        /// Clears the flight if the leader is dropped before it finishes, so a waiter takes over.
        struct Abandon<'a, T, E>(&'a SingleFlight<T, E>, bool);
        impl<T, E> Drop for Abandon<'_, T, E> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.lock().flight = None;
                }
            }
        }
        let mut guard = Abandon(self, true);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let result = refresh().await;
        let shared = {
            let mut s = self.lock();
            s.flight = None;
            guard.1 = false;
            match result {
                Ok(value) => {
                    s.generation += 1;
                    s.stale = false;
                    let v = Versioned {
                        value,
                        generation: s.generation,
                    };
                    s.current = Some(v.clone());
                    Ok(v)
                }
                Err(e) => {
                    s.stale = true;
                    Err(e)
                }
            }
        };
        tx.send_replace(Some(shared.clone()));
        shared
    }
}
