//! Single-flight refresh: many calls that meet an expired token cause one refresh, not one each.
//!
//! A [`SingleFlight`] holds a value (an access token) with a generation number that every
//! refresh bumps. A call reads the value with [`SingleFlight::get`] and remembers its
//! generation; when the server refuses it, the call asks for a refresh *of that generation* with
//! [`SingleFlight::refresh`]. If another call has already refreshed past it, the new value is
//! returned at once; if a refresh is running, the call waits for it; otherwise this call starts the
//! refresh and everyone waiting gets its result. [`SingleFlight::get_or_refresh`] does the same
//! for a value that is missing or that the caller's check finds expired.
//!
//! The refresh runs in a task of its own (`tokio::spawn`), detached from the call that started
//! it: cancelling any caller, the one that started it included (a dropped future, a
//! `tokio::time::timeout` that fired), neither cancels nor restarts it. It runs to completion and
//! its value is kept for later calls, so callers that time out on a slow token endpoint cause one
//! request, and the next call after it answers finds the token. This is why the refresh future
//! must be `Send + 'static`: build it from owned handles (an `Arc` of the client), not from a
//! borrow of the caller.
//!
//! A failed refresh fails every call that waited on it (with a clone of the error) and leaves the
//! value stale, so the next call tries again: a down token endpoint sees one request per wave of
//! callers, not one per caller. A refresh that panics panics every call that waited on it, once,
//! with a copy of its message (see [`SingleFlight::refresh`]), and leaves the value stale; it is
//! not run again for them, and the next call starts a new one.
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
//! /// The token endpoint; shared, so a refresh can own a handle to it.
//! struct Endpoint {
//!     fetches: AtomicU32,
//! }
//!
//! impl Endpoint {
//!     /// One request to the token endpoint.
//!     async fn fetch_token(self: Arc<Self>) -> Result<String, TokenError> {
//!         let n = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         Ok(format!("token-{n}"))
//!     }
//! }
//!
//! struct Client {
//!     token: SingleFlight<String, TokenError>,
//!     endpoint: Arc<Endpoint>,
//! }
//!
//! impl Client {
//!     /// One attempt of an API call: the server refuses the first token.
//!     async fn list_devices(&self) -> Result<String, TokenError> {
//!         // The refresh future owns its `Arc<Endpoint>`: it is `Send + 'static`.
//!         let fetch = || self.endpoint.clone().fetch_token();
//!         let token = self.token.get_or_refresh(|_| true, fetch).await?;
//!         if token.value == "token-1" {
//!             // 401: refresh the token this call used, unless someone already has.
//!             let fresh = self.token.refresh(token.generation, fetch).await?;
//!             return Ok(format!("devices with {}", fresh.value));
//!         }
//!         Ok(format!("devices with {}", token.value))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let endpoint = Arc::new(Endpoint { fetches: AtomicU32::new(0) });
//! let client = Arc::new(Client { token: SingleFlight::new(), endpoint: endpoint.clone() });
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
//! assert_eq!(endpoint.fetches.load(Ordering::Relaxed), 2);
//! assert_eq!(client.token.refreshes(), 2);
//! # }
//! ```
//!
//! With `#[resilient(refresh = Self::refresh)]` the refresh hook is the natural caller: the body
//! calls [`SingleFlight::invalidate`] with the generation it used before returning its `auth`
//! error, and the hook calls [`SingleFlight::get_or_refresh`], which refreshes once for all the
//! calls that were refused together.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::sync::watch;

/// A value and the generation that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value (a token).
    pub value: T,
    /// The refresh that produced it: 1 for the first, bumped by every refresh.
    pub generation: u64,
}

/// What a panicking refresh left for its waiters: a payload cannot be cloned, its text can.
#[derive(Debug, Clone)]
enum PanicPayload {
    Static(&'static str),
    Owned(String),
    Other,
}

/// The payload every waiter of a refresh whose panic payload was neither a `&'static str` nor a
/// `String` panics with.
const OPAQUE_PANIC: &str = "the refresh panicked (with a payload that is not a string)";

impl PanicPayload {
    fn of(payload: &(dyn Any + Send)) -> PanicPayload {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            PanicPayload::Static(s)
        } else if let Some(s) = payload.downcast_ref::<String>() {
            PanicPayload::Owned(s.clone())
        } else {
            PanicPayload::Other
        }
    }

    /// A payload of the same type and text, for one waiter.
    fn copy(&self) -> Box<dyn Any + Send> {
        match self {
            PanicPayload::Static(s) => Box::new(*s),
            PanicPayload::Owned(s) => Box::new(s.clone()),
            PanicPayload::Other => Box::new(OPAQUE_PANIC),
        }
    }
}

/// How a refresh ended.
enum Outcome<T, E> {
    Done(Result<Versioned<T>, E>),
    Panicked(PanicPayload),
}

/// The end of the refresh in flight, `None` until it ends; closed unsent if its task was dropped
/// unfinished (its runtime shut down).
type Flight<T, E> = watch::Receiver<Option<Outcome<T, E>>>;

struct State<T, E> {
    current: Option<Versioned<T>>,
    stale: bool,
    generation: u64,
    flight: Option<Flight<T, E>>,
}

struct Inner<T, E> {
    state: Mutex<State<T, E>>,
    refreshes: AtomicU64,
}

impl<T, E> Inner<T, E> {
    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }
}

/// A value refreshed by at most one refresh at a time, which no caller's cancellation stops. See
/// the [module docs](self).
///
/// The refresh runs in a Tokio task of its own, so its future must be `Send + 'static`. Outside a
/// Tokio runtime there is no task to start: the refresh then runs in the call that starts it.
///
/// # Example
///
/// Callers that give up before a slow refresh ends do not stop it; a later call finds its value.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::refresh::SingleFlight;
///
/// async fn slow_token_endpoint() -> Result<String, ()> {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok("token".to_string())
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let cell = SingleFlight::<String, ()>::new();
/// let call = cell.get_or_refresh(|_| true, slow_token_endpoint);
/// assert!(tokio::time::timeout(Duration::from_secs(2), call).await.is_err());
///
/// tokio::time::sleep(Duration::from_secs(4)).await;
/// let token = cell.get().expect("the refresh finished without its caller");
/// assert_eq!((token.value.as_str(), token.generation), ("token", 1));
/// assert_eq!(cell.refreshes(), 1);
/// # }
/// ```
pub struct SingleFlight<T, E> {
    inner: Arc<Inner<T, E>>,
}

impl<T, E> fmt::Debug for SingleFlight<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (generation, stale, in_flight) = match self.inner.state.lock() {
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
    pub fn new() -> Self {
        SingleFlight {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    current: None,
                    stale: false,
                    generation: 0,
                    flight: None,
                }),
                refreshes: AtomicU64::new(0),
            }),
        }
    }

    /// A cell holding `value` as generation 1 (a token obtained at start-up).
    pub fn with_value(value: T) -> Self {
        let cell = SingleFlight::new();
        {
            let mut s = cell.lock();
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
        self.inner.refreshes.load(Ordering::Relaxed)
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

    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        self.inner.lock()
    }
}

impl<T: Clone, E> SingleFlight<T, E> {
    /// The current value, unless there is none or it was invalidated.
    pub fn get(&self) -> Option<Versioned<T>> {
        let s = self.lock();
        if s.stale {
            return None;
        }
        s.current.clone()
    }
}

impl<T, E> SingleFlight<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// The current value if there is one, it was not invalidated and `is_fresh` accepts it (a
    /// token's expiry check); otherwise a refresh shared with every concurrent caller, as
    /// [`SingleFlight::refresh`].
    ///
    /// # Errors
    ///
    /// The refresh's error, cloned to every caller that waited on it.
    ///
    /// # Panics
    ///
    /// As [`SingleFlight::refresh`]: when the refresh panics.
    pub async fn get_or_refresh<F, Fut>(
        &self,
        is_fresh: impl FnOnce(&T) -> bool,
        refresh: F,
    ) -> Result<Versioned<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
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
    /// joins a refresh in flight, or starts one with the future `refresh` returns and shares its
    /// result.
    ///
    /// `refresh` is called in this call; the future it returns is spawned on the current Tokio
    /// runtime and runs to its end even if every caller waiting on it is cancelled. Its value is
    /// then kept as the next generation; its error leaves the value stale.
    ///
    /// # Errors
    ///
    /// The refresh's error, cloned to every caller that waited on it.
    ///
    /// # Panics
    ///
    /// - When the refresh panics (the future, or the `refresh` closure itself): every caller that
    ///   waited on it panics once, by [`std::panic::resume_unwind`] (the panic hook reports the
    ///   panic once, where it happened, not once per caller), with a copy of the payload: a
    ///   `&'static str` or a `String` keeps its type and text, any other payload becomes a
    ///   `&'static str` saying the refresh panicked. The refresh is not run again for them; the
    ///   value is left stale and the next call starts a new refresh.
    pub async fn refresh<F, Fut>(&self, seen: u64, refresh: F) -> Result<Versioned<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut refresh = Some(refresh);
        loop {
            let mut inline = None;
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
                        let Some(refresh) = refresh.take() else {
                            drop(s);
                            // Only after a runtime shut down under the refresh this call started.
                            panic!("the refresh was dropped unfinished: its runtime shut down");
                        };
                        let runtime = Handle::try_current().ok();
                        let (tx, rx) = watch::channel(None);
                        s.flight = Some(rx.clone());
                        self.inner.refreshes.fetch_add(1, Ordering::Relaxed);
                        drop(s);
                        inline = self.start(runtime.as_ref(), tx, &rx, refresh);
                        rx
                    }
                }
            };
            // Outside a Tokio runtime there is nothing to spawn on: the refresh runs in this call
            // (and a cancelled call then takes it along, as any future would).
            if let Some(task) = inline {
                task.await;
            }
            // The receiver keeps the last value: a refresh that ended before this wait is seen.
            match flight.wait_for(Option::is_some).await {
                Ok(outcome) => match outcome.as_ref() {
                    Some(Outcome::Done(r)) => return r.clone(),
                    Some(Outcome::Panicked(p)) => {
                        let payload = p.copy();
                        drop(outcome);
                        resume_unwind(payload);
                    }
                    None => continue,
                },
                // The refresh's task was dropped unfinished (its runtime shut down; the flight is
                // already cleared): look again, and maybe start one here.
                Err(_) => continue,
            }
        }
    }

    /// Spawns the refresh on `runtime`, detached from this call; its task stores and publishes
    /// the outcome. Without a runtime, returns that task for this call to run.
    fn start<F, Fut>(
        &self,
        runtime: Option<&Handle>,
        tx: watch::Sender<Option<Outcome<T, E>>>,
        rx: &Flight<T, E>,
        refresh: F,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<F, Fut, T, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let landing = Landing {
            inner: self.inner.clone(),
            flight: rx.clone(),
            tx: Some(tx),
        };
        let future = match catch_unwind(AssertUnwindSafe(refresh)) {
            Ok(future) => future,
            Err(payload) => {
                landing.land(Err(PanicPayload::of(&*payload)));
                resume_unwind(payload);
            }
        };
        let task = async move {
            let mut future = pin!(future);
            let outcome = std::future::poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(payload) => Poll::Ready(Err(PanicPayload::of(&*payload))),
                }
            })
            .await;
            landing.land(outcome);
        };
        match runtime {
            Some(runtime) => {
                runtime.spawn(task);
                None
            }
            None => Some(task),
        }
    }
}

/// Stores a refresh's outcome and hands it to its waiters; dropped unused (the refresh's task
/// dropped unfinished), clears the flight so that a later call starts a new refresh.
struct Landing<T, E> {
    inner: Arc<Inner<T, E>>,
    flight: Flight<T, E>,
    tx: Option<watch::Sender<Option<Outcome<T, E>>>>,
}

impl<T: Clone, E> Landing<T, E> {
    fn land(mut self, outcome: Result<Result<T, E>, PanicPayload>) {
        let outcome = {
            let mut s = self.inner.lock();
            self.clear(&mut s);
            match outcome {
                Ok(Ok(value)) => {
                    s.generation += 1;
                    s.stale = false;
                    let v = Versioned {
                        value,
                        generation: s.generation,
                    };
                    s.current = Some(v.clone());
                    Outcome::Done(Ok(v))
                }
                Ok(Err(e)) => {
                    s.stale = true;
                    Outcome::Done(Err(e))
                }
                Err(panic) => {
                    s.stale = true;
                    Outcome::Panicked(panic)
                }
            }
        };
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(outcome));
        }
    }
}

impl<T, E> Landing<T, E> {
    fn clear(&self, s: &mut State<T, E>) {
        if s.flight
            .as_ref()
            .is_some_and(|f| f.same_channel(&self.flight))
        {
            s.flight = None;
        }
    }
}

impl<T, E> Drop for Landing<T, E> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // Cleared before the sender closes, so the waiters it wakes find no flight.
            let mut s = self.inner.lock();
            self.clear(&mut s);
        }
    }
}
