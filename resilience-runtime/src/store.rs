//! The store seam: where a named rate limiter keeps the state that decides a call, and how the
//! engine waits for a store that must be asked over the network.
//!
//! Each kind of shared state sits behind a small trait whose in-process implementation is the
//! default, so that a backend every replica of a connector sees (a Redis server, say) can serve
//! a named instance without a change to the engine or to the generated code:
//!
//! | state | trait | in-process default | what a shared backend does |
//! |---|---|---|---|
//! | rate limits | [`RateLimit`](crate::limit::RateLimit) | [`Gcra`](crate::limit::Gcra) | answers [`Permit::Ask`]: one round trip per permit, the call waiting for it |
//! | concurrency | [`Bulkhead`](crate::limit::Bulkhead) | [`ConcurrencyLimit`](crate::limit::ConcurrencyLimit) | (process-local by nature) |
//!
//! A decision that needs no round trip is answered at once ([`Permit::Granted`],
//! [`Permit::Refused`]); the engine then never allocates or awaits. A decision that needs one is a
//! [`StoreFuture`] the call awaits before its attempt, bounded by the call's `deadline`, with its
//! breaker ticket held: a slow store delays calls, it never lets more through.
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
use std::time::Duration;

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
