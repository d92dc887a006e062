//! The store seam: where named breakers, retry budgets and rate limiters keep the state that
//! decides a call, and how the engine waits for a store that must be asked over the network.
//!
//! Each kind of shared state sits behind a small trait whose in-process implementation is the
//! default, so that a backend every replica of a connector sees (a Redis server, say) can serve
//! a named instance without a change to the engine or to the generated code:
//!
//! | state | trait | in-process default | what a shared backend does |
//! |---|---|---|---|
//! | rate limits | [`RateLimit`](crate::limit::RateLimit) | [`Gcra`](crate::limit::Gcra) | answers [`Permit::Ask`]: one round trip per permit, the call waiting for it |
//! | breaker state | [`BreakerStore`], beside each breaker's local state machine | none: the machine alone | learns every local transition ([`BreakerStore::transitioned`]), grants probes fleet-wide ([`BreakerStore::may_probe`]), and opens the local breaker when the fleet decides ([`Breaker::open_by_store`]) |
//! | retry budgets | [`BudgetStore`], beside each budget's local bucket | none: the bucket alone | bounds the fleet's retries ([`BudgetStore::may_spend`]) and learns what each replica spent |
//! | concurrency | [`Bulkhead`](crate::limit::Bulkhead) | [`ConcurrencyLimit`](crate::limit::ConcurrencyLimit) | (process-local by nature) |
//!
//! Two kinds of decision, two shapes:
//!
//! - **A local fast check where no round trip is needed.** A closed breaker admits a call, and a
//!   success refunds its budget, with the local state alone: no store is asked on the hot path,
//!   whatever backend serves the name. The breaker and budget stores are asked only on the slow
//!   paths (a transition, an open breaker whose cooldown has passed, a retry), and answer from
//!   what they know locally; a shared backend keeps that knowledge current on a task of its own
//!   (a subscription, or a refresh every sync interval), never by a round trip inside a call.
//! - **An async acquisition where a round trip is needed.** A rate limit shared by a fleet is
//!   decided by the server, one permit at a time (or a lease of several). A decision that needs
//!   no round trip is answered at once ([`Permit::Granted`], [`Permit::Refused`]), and the engine
//!   then never allocates or awaits; one that needs one is a [`StoreFuture`] the call awaits
//!   before its attempt, bounded by the call's `deadline`, with its breaker ticket held: a slow
//!   store delays calls, it never lets more through.
//!
//! A store is set per name, on a [`Breaker`] ([`Breaker::set_store`]) or a
//! [`RetryBudget`] ([`RetryBudget::set_store`]); per-key breakers of one name share their base's.
//!
//! # A limiter that asks a server
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::limit::RateLimit;
//! use resilience_runtime::store::Permit;
//!
//! /// Asks a (here simulated) server for every permit.
//! #[derive(Debug)]
//! struct Remote;
//!
//! impl RateLimit for Remote {
//!     fn try_acquire(&self) -> Result<(), Duration> {
//!         // Asked only by code that cannot wait: refuse rather than block.
//!         Err(Duration::from_millis(10))
//!     }
//!
//!     fn acquire(&self, key: Option<&str>) -> Permit {
//!         let key = key.map(str::to_owned);
//!         Permit::ask(async move {
//!             // One round trip to the server, which decides for every replica.
//!             let granted = key.as_deref() != Some("over-quota");
//!             if granted { Ok(()) } else { Err(Duration::from_secs(1)) }
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! match Remote.acquire(Some("tenant-a")) {
//!     Permit::Ask(round_trip) => assert_eq!(round_trip.await, Ok(())),
//!     _ => unreachable!("this limiter always asks"),
//! }
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerState};
use crate::budget::RetryBudget;

/// What a store's round trip is: a boxed future the call awaits (boxed once per round trip, a
/// cost far below the round trip's own).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A store's answer to a call asking to proceed.
#[non_exhaustive]
pub enum Permit {
    /// Proceed now.
    Granted,
    /// Not now: capacity is expected back after this long (the call waits for it within its
    /// deadline, or ends with the rejection).
    Refused(Duration),
    /// The answer needs a round trip: the call awaits it before its attempt. It resolves to
    /// `Ok(())` for a permit, or to `Err` with the time until one, as [`Permit::Refused`].
    Ask(StoreFuture<Result<(), Duration>>),
}

impl Permit {
    /// A round trip to ask: `fut` boxed.
    pub fn ask<F>(fut: F) -> Permit
    where
        F: Future<Output = Result<(), Duration>> + Send + 'static,
    {
        Permit::Ask(Box::pin(fut))
    }
}

impl From<Result<(), Duration>> for Permit {
    /// The answer of a check made at once.
    #[inline(always)]
    fn from(r: Result<(), Duration>) -> Permit {
        match r {
            Ok(()) => Permit::Granted,
            Err(d) => Permit::Refused(d),
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::Granted => f.write_str("Granted"),
            Permit::Refused(d) => f.debug_tuple("Refused").field(d).finish(),
            Permit::Ask(_) => f.write_str("Ask(..)"),
        }
    }
}

/// The shared side of a named breaker: what other replicas learn from this one's transitions,
/// and whether this one may probe.
///
/// The local state machine stays the one that admits calls: a closed breaker never asks its
/// store. A shared backend publishes the transitions it is told of, keeps the fleet's state
/// current on a task of its own, and opens a replica's breaker by [`Breaker::open_by_store`]
/// when the fleet decides it.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use resilience_runtime::breaker::{Breaker, BreakerConfig, BreakerState, Outcome};
/// use resilience_runtime::store::BreakerStore;
///
/// /// Lets one probe at a time through, whichever replica asks.
/// #[derive(Debug, Default)]
/// struct OneProbe(AtomicU32);
///
/// impl BreakerStore for OneProbe {
///     fn transitioned(&self, _: &Breaker, from: BreakerState, to: BreakerState, _: bool) {
///         if from == BreakerState::HalfOpen {
///             self.0.store(0, Ordering::SeqCst); // the probe came back
///         }
///         let _ = to;
///     }
///
///     fn may_probe(&self, _: &Breaker) -> Result<(), Duration> {
///         match self.0.swap(1, Ordering::SeqCst) {
///             0 => Ok(()),
///             _ => Err(Duration::from_millis(100)), // another replica is probing
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let store = Arc::new(OneProbe::default());
/// let config = BreakerConfig::new().with_failure_threshold(1);
/// let (a, b) = (Breaker::new("graph", config), Breaker::new("graph", config));
/// a.set_store(store.clone());
/// b.set_store(store.clone());
/// for r in [&a, &b] {
///     let t = r.acquire().unwrap();
///     r.record(t, Outcome::Failure);
/// }
/// tokio::time::advance(config.cooldown).await;
/// let probe = a.acquire().expect("the first replica probes");
/// assert!(b.acquire().is_err(), "the second waits for the fleet's probe");
/// a.record(probe, Outcome::Success);
/// assert_eq!(a.state(), BreakerState::Closed);
/// # }
/// ```
pub trait BreakerStore: fmt::Debug + Send + Sync + 'static {
    /// `breaker` changed state here, from `from` to `to`; `by_store` when the change was the
    /// store's own ([`Breaker::open_by_store`]). Called once the breaker's state is complete and
    /// consistent, after its logs and events; it must not block (a shared backend queues the
    /// publication and returns). A panic here is caught and logged, and changes nothing.
    fn transitioned(&self, breaker: &Breaker, from: BreakerState, to: BreakerState, by_store: bool);

    /// Whether this replica may send a probe now that `breaker`'s cooldown has passed, asked
    /// before the breaker turns half-open here (and, once half-open, for each further probe).
    /// Answered from what the store knows locally, never by a round trip: `Err` keeps the
    /// breaker as it is and refuses the call, with the time to wait before asking again. The
    /// default lets every replica probe on its own.
    fn may_probe(&self, breaker: &Breaker) -> Result<(), Duration> {
        let _ = breaker;
        Ok(())
    }
}

/// The shared side of a named retry budget: what bounds the retries of a whole fleet.
///
/// The local bucket stays the budget every replica spends from and that successes refund, with
/// no store asked on the hot path. A store is asked before a retry spends a local token, and
/// told of every retry spent; a shared backend answers from the fleet's balance as of its last
/// sync (or a lease of it), so that N replicas together retry no more than one budget allows.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use resilience_runtime::budget::{BudgetConfig, RetryBudget};
/// use resilience_runtime::store::BudgetStore;
///
/// /// At most `0` retries, across every budget it serves.
/// #[derive(Debug)]
/// struct Fleet(AtomicU32);
///
/// impl BudgetStore for Fleet {
///     fn may_spend(&self, _: &RetryBudget) -> bool {
///         self.0.load(Ordering::SeqCst) > 0
///     }
///     fn spent(&self, _: &RetryBudget) {
///         self.0.fetch_sub(1, Ordering::SeqCst);
///     }
/// }
///
/// let fleet = Arc::new(Fleet(AtomicU32::new(3)));
/// let replicas = [RetryBudget::new(BudgetConfig::new()), RetryBudget::new(BudgetConfig::new())];
/// replicas.iter().for_each(|b| b.set_store(fleet.clone()));
/// let spent = (0..10).filter(|i| replicas[i % 2].try_spend()).count();
/// assert_eq!(spent, 3, "three retries for the two replicas together");
/// ```
pub trait BudgetStore: fmt::Debug + Send + Sync + 'static {
    /// Whether a retry may spend a token of `budget` here, answered from what the store knows
    /// locally. A refusal refuses the retry as an empty local bucket does (the call returns its
    /// last error and counts `budget_exhausted`). A panic refuses the retry.
    fn may_spend(&self, budget: &RetryBudget) -> bool;

    /// A retry spent a token of `budget` here (after [`may_spend`](BudgetStore::may_spend) and
    /// the local bucket agreed). It must not block.
    fn spent(&self, budget: &RetryBudget);
}

/// A shared backend as health reports it: where the shared state of some named instances lives,
/// and whether this replica is sharing it now or answering from its local state.
///
/// Made known to a registry with [`Registry::add_backend`](crate::Registry::add_backend) (a
/// configuration's `[backends.<name>]` tables are added by
/// [`Registry::apply`](crate::Registry::apply)); each appears in
/// [`HealthReport::backends`](crate::registry::HealthReport::backends).
///
/// ```
/// use resilience_runtime::Registry;
/// use resilience_runtime::registry::{BackendHealth, BackendState};
/// use resilience_runtime::store::Backend;
///
/// /// A backend that has lost its server.
/// #[derive(Debug)]
/// struct Gone;
///
/// impl Backend for Gone {
///     fn health(&self, name: &str) -> BackendHealth {
///         BackendHealth::new(name, "memory", BackendState::Fallback).with_errors_total(3)
///     }
/// }
///
/// let registry = Registry::new();
/// registry.add_backend("fleet", std::sync::Arc::new(Gone));
/// let fleet = &registry.health().backends[0];
/// assert!(fleet.backend_fallback);
/// assert_eq!(fleet.backend_errors_total, 3);
/// ```
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// How the backend configured as `name` is doing.
    fn health(&self, name: &str) -> crate::registry::BackendHealth;
}

/// Where a breaker or budget keeps its store: read on slow paths only, replaced rarely.
pub(crate) struct StoreCell<S: ?Sized>(RwLock<Option<Arc<S>>>);

impl<S: ?Sized> StoreCell<S> {
    pub(crate) const fn new() -> Self {
        StoreCell(RwLock::new(None))
    }

    pub(crate) fn get(&self) -> Option<Arc<S>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, store: Option<Arc<S>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = store;
    }
}

impl<S: ?Sized> fmt::Debug for StoreCell<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.read().map(|s| s.is_some()).unwrap_or(true);
        f.write_str(if set { "Some(..)" } else { "None" })
    }
}

/// Runs a store's hook, catching a panic: `fallback` then, and the panic logged once per call.
pub(crate) fn guarded<R>(what: &'static str, fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(
                hook = what,
                "a store's hook panicked; the local state decides"
            );
            fallback
        }
    }
}

/// Waits for a round trip on this thread, for a blocking call: parks the thread until the
/// future's waker unparks it. The store's future must not need the calling thread to make
/// progress (a backend drives its connection on a task of its own).
pub(crate) fn block_on<T>(fut: StoreFuture<T>) -> T {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let mut fut = fut;
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
