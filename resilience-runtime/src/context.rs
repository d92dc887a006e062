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
        FRAME.with(Frame::next_id)
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

/// What is installed while an attempt is polled: plain data, so the thread-local that holds it
/// needs no destructor and installing it is a couple of moves.
#[derive(Clone, Copy)]
pub(crate) struct Active {
    pub(crate) operation: &'static str,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) correlation: CorrelationId,
    pub(crate) has_key: bool,
}

/// This thread's view of the innermost resilient call: its context while an attempt is being
/// polled, and the counter for fresh correlation ids.
struct Frame {
    active: Cell<Option<Active>>,
    next_id: Cell<u64>,
}

impl Frame {
    fn next_id(&self) -> CorrelationId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static THREADS: AtomicU64 = AtomicU64::new(1);
        let mut v = self.next_id.get();
        if v & 0xFF_FFFF_FFFF == 0 {
            // First use on this thread, or 2^40 ids used: take a new prefix.
            v = THREADS.fetch_add(1, Ordering::Relaxed) << 40;
        }
        v += 1;
        self.next_id.set(v);
        CorrelationId(v)
    }
}

thread_local! {
    static FRAME: Frame = const {
        Frame {
            active: Cell::new(None),
            next_id: Cell::new(0),
        }
    };
    /// The idempotency key of the installed call, for calls that have one.
    static KEY: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

impl CallContext {
    /// The context of the innermost resilient call running on this task or thread.
    pub fn current() -> Option<CallContext> {
        let a = FRAME.with(|f| f.active.get())?;
        let idempotency_key = if a.has_key {
            KEY.with(|k| k.try_borrow().ok().and_then(|k| k.clone()))
        } else {
            None
        };
        Some(CallContext {
            operation: a.operation,
            attempt: a.attempt,
            max_attempts: a.max_attempts,
            correlation_id: a.correlation,
            idempotency_key,
        })
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

/// The correlation id for a new call: the one of the resilient call running on this thread (a
/// nested call joins its outer call), else a fresh one.
#[inline]
pub(crate) fn correlation_for_new_call() -> CorrelationId {
    FRAME.with(|f| match f.active.get() {
        Some(a) => a.correlation,
        None => f.next_id(),
    })
}

/// Installs `active` (and the call's key, moved out of `key`) as the current context until the
/// guard drops; the guard gives the key back and restores whatever was current before.
pub(crate) struct Installed<'a> {
    key: &'a mut Option<Arc<str>>,
    prev: Option<Active>,
    prev_key: Option<Option<Arc<str>>>,
}

#[inline]
pub(crate) fn install(active: Active, key: &mut Option<Arc<str>>) -> Installed<'_> {
    let prev = FRAME.with(|f| f.active.replace(Some(active)));
    let prev_key = if active.has_key {
        let mine = key.take();
        KEY.with(|k| {
            k.try_borrow_mut()
                .ok()
                .map(|mut k| std::mem::replace(&mut *k, mine))
        })
    } else {
        None
    };
    Installed {
        key,
        prev,
        prev_key,
    }
}

impl Drop for Installed<'_> {
    #[inline]
    fn drop(&mut self) {
        FRAME.with(|f| f.active.set(self.prev));
        if let Some(prev_key) = self.prev_key.take()
            && let Some(mine) = KEY.with(|k| {
                k.try_borrow_mut()
                    .ok()
                    .map(|mut k| std::mem::replace(&mut *k, prev_key))
            })
        {
            *self.key = mine;
        }
    }
}
