//! The per-call context: attempt number, idempotency key and correlation id, readable in the body.
//!
//! While an attempt runs, [`CallContext::current`] returns the context of the innermost
//! resilient call on this task (async) or thread (blocking). The context is installed around each
//! poll of the attempt, the way a tokio task-local is, so it follows the task across threads. A
//! task spawned from the body does not inherit it.
//!
//! ```
//! use resilience_runtime::CallContext;
//! assert!(CallContext::current().is_none()); // outside any resilient call
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;

/// An id that ties together every log line, retry and event of one logical call. Nested resilient
/// calls share their outer call's id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId(u64);

impl CorrelationId {
    /// A fresh id, unique within the process (a per-thread counter under a per-thread prefix).
    pub fn next() -> CorrelationId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static THREADS: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static NEXT: Cell<u64> = const { Cell::new(0) };
        }
        NEXT.with(|n| {
            let mut v = n.get();
            if v & 0xFF_FFFF_FFFF == 0 {
                // First use on this thread, or 2^40 ids used: take a new prefix.
                v = THREADS.fetch_add(1, Ordering::Relaxed) << 40;
            }
            v += 1;
            n.set(v);
            CorrelationId(v)
        })
    }

    /// An id from its numeric value.
    pub const fn from_u64(v: u64) -> CorrelationId {
        CorrelationId(v)
    }

    /// The numeric value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({self})")
    }
}

impl serde::Serialize for CorrelationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the body of a resilient fn can know about the call it runs in.
///
/// ```
/// use resilience_runtime::{resilient, CallContext, ConnectorError, Rejected};
///
/// #[derive(Debug, ConnectorError)]
/// enum E {
///     #[connector(transient)]
///     Busy,
/// }
///
/// #[resilient(retries = 2, idempotency_key = format!("{intent}-create-assignment"))]
/// async fn create(intent: &str) -> Result<String, E> {
///     let ctx = CallContext::current().expect("inside a resilient call");
///     if ctx.attempt() < 2 {
///         return Err(E::Busy);
///     }
///     Ok(ctx.idempotency_key().unwrap_or_default().to_owned())
/// }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// assert_eq!(create("i-1").await.unwrap(), "i-1-create-assignment");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub(crate) operation: &'static str,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) idempotency_key: Option<Arc<str>>,
}

thread_local! {
    static CURRENT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
    static CORRELATION: Cell<Option<CorrelationId>> = const { Cell::new(None) };
}

impl CallContext {
    /// The context of the innermost resilient call running on this task or thread.
    pub fn current() -> Option<CallContext> {
        CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
    }

    /// The operation (the annotated fn's name).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The attempt running now: 0 for the first, 1 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The largest number of attempts the policy allows (retries + 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The call's correlation id.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The idempotency key: one per logical call, the same on every attempt.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }
}

/// The correlation id of the resilient call running on this thread, if any: inherited by calls
/// nested in it.
pub(crate) fn inherited_correlation() -> Option<CorrelationId> {
    CORRELATION.with(Cell::get)
}

/// Installs `ctx` as the current context until the guard drops; the guard puts the context back
/// into `slot` and restores whatever was current before.
pub(crate) struct Installed<'a> {
    slot: &'a mut Option<CallContext>,
    prev: Option<CallContext>,
    prev_corr: Option<CorrelationId>,
}

pub(crate) fn install(slot: &mut Option<CallContext>) -> Installed<'_> {
    let ctx = slot.take();
    let corr = ctx.as_ref().map(|c| c.correlation_id);
    let prev = CURRENT.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => std::mem::replace(&mut *c, ctx),
        Err(_) => None,
    });
    let prev_corr = CORRELATION.with(|c| c.replace(corr));
    Installed {
        slot,
        prev,
        prev_corr,
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let mine = CURRENT.with(|c| match c.try_borrow_mut() {
            Ok(mut c) => std::mem::replace(&mut *c, prev),
            Err(_) => None,
        });
        CORRELATION.with(|c| c.set(self.prev_corr));
        *self.slot = mine;
    }
}
