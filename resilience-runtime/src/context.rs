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

use crate::engine::Site;
use crate::registry::SitePolicy;

/// An id that ties together every log line, retry and event of one logical call. Nested resilient
/// calls share their outer call's id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId(u64);

impl CorrelationId {
    /// A fresh id, unique within the process (a per-thread counter under a per-thread prefix).
    pub fn next() -> CorrelationId {
        next_id()
    }

    /// No id yet: a call takes its id on first use.
    pub(crate) const UNSET: CorrelationId = CorrelationId(0);

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
    site: SiteOf,
}

/// The site of a [`CallContext`], compared by address.
#[derive(Clone, Copy)]
struct SiteOf(&'static Site);

impl PartialEq for SiteOf {
    fn eq(&self, other: &SiteOf) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for SiteOf {}

impl fmt::Debug for SiteOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.policy().site_name())
    }
}

/// What is installed while an attempt is polled: plain data, three words, so the thread-local
/// that holds it needs no destructor and installing it is a few moves. The operation and the
/// largest number of attempts are read from the site's policy when asked for.
///
/// `site` is `None` outside any call, and then every other field is zero.
#[derive(Clone, Copy)]
pub(crate) struct Active {
    pub(crate) site: Option<&'static Site>,
    pub(crate) correlation: CorrelationId,
    pub(crate) attempt: u32,
    /// 1 when the call's idempotency key is installed in `KEY`, else 0.
    pub(crate) has_key: u32,
}

impl Active {
    /// Whether this is the context outside any call: every field zero.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn is_empty(&self) -> bool {
        self.site.is_none()
            && self.correlation == CorrelationId::UNSET
            && self.attempt == 0
            && self.has_key == 0
    }
}

#[inline]
fn next_id() -> CorrelationId {
    // `with` and the cell's own methods: `LocalKey::set` goes through a slower lazy-init path.
    NEXT_ID.with(|n| {
        let mut v = n.get();
        if v & 0xFF_FFFF_FFFF == 0 {
            v = new_prefix();
        }
        v += 1;
        n.set(v);
        CorrelationId(v)
    })
}

/// First use on this thread, or 2^40 ids used: take a new prefix.
#[cold]
fn new_prefix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static THREADS: AtomicU64 = AtomicU64::new(1);
    THREADS.fetch_add(1, Ordering::Relaxed) << 40
}

/// [`Active`] as one cell per field, so that a first attempt writes only the fields that differ
/// from an empty context (its site, and its correlation id when it has one). Outside any call
/// every field is zero: whatever installs a context with a site restores the whole of what it
/// replaced, or empties the fields it wrote over an empty one.
struct ActiveCells {
    site: Cell<Option<&'static Site>>,
    correlation: Cell<CorrelationId>,
    attempt: Cell<u32>,
    has_key: Cell<u32>,
    /// This thread's stripe of the striped counters (`metrics`): kept here, not in a
    /// thread-local of its own, so that a call finds it at the address it found its context.
    stripe: Cell<usize>,
    /// Whether a [`Registry::scope`](crate::Registry::scope) or
    /// [`Registry::enter`](crate::Registry::enter) is in force on this thread: calls then look
    /// for their registry there (and take the engine's full path). Kept beside the context so
    /// that a call learns both from one thread-local.
    scoped: Cell<bool>,
}

impl ActiveCells {
    #[inline(always)]
    fn get(&self) -> Active {
        Active {
            site: self.site.get(),
            correlation: self.correlation.get(),
            attempt: self.attempt.get(),
            has_key: self.has_key.get(),
        }
    }

    #[inline(always)]
    fn set(&self, a: Active) {
        self.site.set(a.site);
        self.correlation.set(a.correlation);
        self.attempt.set(a.attempt);
        self.has_key.set(a.has_key);
    }

    #[inline(always)]
    fn replace(&self, a: Active) -> Active {
        let prev = self.get();
        self.set(a);
        prev
    }
}

thread_local! {
    /// This thread's view of the innermost resilient call: its context while an attempt is
    /// being polled.
    static ACTIVE: ActiveCells = const {
        ActiveCells {
            site: Cell::new(None),
            correlation: Cell::new(CorrelationId::UNSET),
            attempt: Cell::new(0),
            has_key: Cell::new(0),
            stripe: Cell::new(crate::metrics::NO_STRIPE),
            scoped: Cell::new(false),
        }
    };
    /// The counter for fresh correlation ids.
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
    /// The idempotency key of the installed call, for calls that have one.
    static KEY: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// The idempotency key of the resilient call running on this task or thread: one per logical
/// call, the same on every attempt; `None` outside a call or for a call without one. Send it with
/// each attempt (an `Idempotency-Key` header), so that the server applies a create once.
///
/// ```
/// use resilience_runtime::{ConnectorError, Rejected, resilient};
///
/// #[derive(Debug, ConnectorError)]
/// enum ApiError {
///     #[connector(transient)]
///     Busy,
///     #[connector(rejected)]
///     Rejected(Rejected),
/// }
///
/// #[resilient(retries = 2, idempotency_key = format!("create-{name}"))]
/// async fn create(name: &str) -> Result<String, ApiError> {
///     let key = resilience_runtime::idempotency_key().unwrap_or_default();
///     Ok(key.to_string()) // in a connector: `.header("Idempotency-Key", &*key)`
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(create("dev-1").await.unwrap(), "create-dev-1");
/// assert_eq!(resilience_runtime::idempotency_key(), None);
/// # }
/// ```
pub fn idempotency_key() -> Option<Arc<str>> {
    let has_key = ACTIVE.with(|a| a.site.get().is_some() && a.has_key.get() != 0);
    if !has_key {
        return None;
    }
    KEY.with(|k| k.try_borrow().ok().and_then(|k| k.clone()))
}

/// The attempt of the resilient call running on this task or thread: 0 for the first, 1 for
/// the first retry, ...; 0 outside a call too (see [`CallContext::current`] to tell the two
/// apart).
///
/// ```
/// use resilience_runtime::{ConnectorError, Rejected, resilient};
///
/// #[derive(Debug, ConnectorError)]
/// enum ApiError {
///     #[connector(transient)]
///     Busy,
///     #[connector(rejected)]
///     Rejected(Rejected),
/// }
///
/// #[resilient(retries = 2, idempotent, backoff(base = "1ms", max = "1ms"))]
/// async fn flaky() -> Result<u32, ApiError> {
///     match resilience_runtime::attempt() {
///         0 => Err(ApiError::Busy),
///         n => Ok(n),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(flaky().await.unwrap(), 1);
/// # }
/// ```
pub fn attempt() -> u32 {
    ACTIVE.with(|a| a.attempt.get())
}

impl CallContext {
    /// The context of the innermost resilient call running on this task or thread.
    pub fn current() -> Option<CallContext> {
        let a = ACTIVE.with(|c| {
            let mut a = c.get();
            if a.site.is_some() && a.correlation == CorrelationId::UNSET {
                // The call takes its id now; it reads it back when the attempt is polled out.
                a.correlation = next_id();
                c.set(a);
            }
            a
        });
        let site = a.site?;
        let idempotency_key = if a.has_key != 0 {
            KEY.with(|k| k.try_borrow().ok().and_then(|k| k.clone()))
        } else {
            None
        };
        let p = site.policy();
        let retries = match effective(site) {
            Some(e) => e.policy.retries,
            None => p.retries,
        };
        Some(CallContext {
            operation: p.operation,
            attempt: a.attempt,
            max_attempts: retries.saturating_add(1),
            correlation_id: a.correlation,
            idempotency_key,
            site: SiteOf(site),
        })
    }

    /// The policy the call runs under, and where each value came from: the attribute's, with the
    /// configuration's `[sites]` table and the per-call override in force
    /// ([`with_policy`](crate::with_policy)) over it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::registry::{PolicyOverride, PolicySource};
    /// use resilience_runtime::{resilient, with_policy, CallContext, ConnectorError, Rejected};
    ///
    /// #[derive(Debug, ConnectorError)]
    /// enum ApiError {
    ///     #[connector(transient)]
    ///     Busy,
    ///     #[connector(rejected)]
    ///     Rejected(Rejected),
    /// }
    ///
    /// #[resilient(retries = 3, idempotent, timeout = "10s")]
    /// async fn list() -> Result<(u32, Option<Duration>, PolicySource), ApiError> {
    ///     let p = CallContext::current().expect("in a call").policy();
    ///     Ok((p.retries, p.timeout, p.sources.timeout))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let tenant = PolicyOverride::new().with_timeout(Duration::from_secs(2));
    /// let seen = with_policy(tenant, list()).unwrap().await.unwrap();
    /// assert_eq!(seen, (3, Some(Duration::from_secs(2)), PolicySource::Call));
    /// # }
    /// ```
    pub fn policy(&self) -> SitePolicy {
        let site = self.site.0;
        match site.state_here() {
            Some(s) => s.report(s.effective(site.policy().needs_rejected()).as_deref()),
            None => crate::registry::attribute_policy(site.policy()),
        }
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

/// The policy a call at `site` starting here runs under, when it is not the attribute's (see
/// `SiteState::effective`): for what the call's context reports, not on the call's path. A
/// `timeout` or `deadline` of a per-call override is shown as the site takes it when its error
/// type carries `Rejected`.
fn effective(site: &'static Site) -> Option<Arc<crate::registry::Effective>> {
    site.state_here()?.effective(site.policy().needs_rejected())
}

/// The correlation id for a new call: the one of the resilient call running on this thread (a
/// nested call joins its outer call, which takes its id now if it had none), else
/// [`CorrelationId::UNSET`]: a call outside any other takes its id on first use ([`assigned`]).
#[inline]
pub(crate) fn correlation_for_new_call() -> CorrelationId {
    let a = ACTIVE.with(ActiveCells::get);
    match a.site {
        None => CorrelationId::UNSET,
        Some(_) => outer_correlation(),
    }
}

#[cold]
fn outer_correlation() -> CorrelationId {
    ACTIVE.with(|c| {
        let mut a = c.get();
        if a.correlation == CorrelationId::UNSET {
            a.correlation = next_id();
            c.set(a);
        }
        a.correlation
    })
}

/// The call's correlation id, taken now if it has none.
#[inline]
pub(crate) fn assigned(id: &Cell<CorrelationId>) -> CorrelationId {
    let v = id.get();
    if v != CorrelationId::UNSET {
        return v;
    }
    let v = next_id();
    id.set(v);
    v
}

/// Installs `active` as the current context until the guard drops; the guard restores whatever
/// was current before, and gives the call back the correlation id it took meanwhile, if it took
/// one. A call with an idempotency key also installs it with [`install_key`].
pub(crate) struct Installed<'a> {
    prev: Active,
    correlation: &'a Cell<CorrelationId>,
}

#[inline(always)]
pub(crate) fn install(active: Active, correlation: &Cell<CorrelationId>) -> Installed<'_> {
    Installed {
        prev: ACTIVE.with(|a| a.replace(active)),
        correlation,
    }
}

impl Drop for Installed<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let prev = self.prev;
        let mine = ACTIVE.with(|a| {
            let mine = a.get().correlation;
            a.set(prev);
            mine
        });
        self.correlation.set(mine);
    }
}

/// This thread's stripe of the striped counters; see `metrics`.
#[inline(always)]
pub(crate) fn stripe() -> usize {
    ACTIVE.with(|a| a.stripe.get())
}

/// Records this thread's stripe, returning the one it had; `None` once the thread-local is gone
/// (the thread is exiting).
pub(crate) fn set_stripe(i: usize) -> Option<usize> {
    ACTIVE.try_with(|a| a.stripe.replace(i)).ok()
}

/// Whether a resilient call's context is installed on this thread.
#[inline(always)]
pub(crate) fn in_call() -> bool {
    ACTIVE.with(|a| a.site.get().is_some())
}

/// Whether a resilient call's context or a scoped registry is installed on this thread: what
/// sends a first attempt down the engine's full path (a nested call joins its outer call; a
/// scoped one resolves its registry).
#[inline(always)]
pub(crate) fn in_call_or_scope() -> bool {
    ACTIVE.with(|a| a.site.get().is_some() || a.scoped.get())
}

/// Whether a scoped registry is in force on this thread.
#[inline(always)]
pub(crate) fn in_scope() -> bool {
    ACTIVE.try_with(|a| a.scoped.get()).unwrap_or(false)
}

/// Marks a scoped registry in force on this thread (or not), returning the previous mark.
pub(crate) fn set_scope(on: bool) -> bool {
    ACTIVE.try_with(|a| a.scoped.replace(on)).unwrap_or(false)
}

/// Installs the context of a call's first attempt at `site` over an empty one (checked with
/// [`in_call`] just before): the other fields of an empty context are already the attempt's
/// (no correlation id yet, attempt 0, no key).
#[inline(always)]
pub(crate) fn enter_first(site: &'static Site) {
    ACTIVE.with(|a| a.site.set(Some(site)));
}

/// Undoes [`enter_first`]: the context is empty again. Returns the correlation id the call took
/// meanwhile, if it took one.
#[inline(always)]
pub(crate) fn leave_first() -> CorrelationId {
    ACTIVE.with(|a| {
        a.site.set(None);
        a.correlation.replace(CorrelationId::UNSET)
    })
}

/// Installs the context of a call's first attempt, keyless, over an empty one (checked with
/// [`in_call`] just before): of an empty context, only the site and the correlation id differ
/// (attempt 0, no key). The guard empties the context again when it drops, unwinding too, and
/// gives the call back the correlation id it took meanwhile, if it took one.
#[inline(always)]
pub(crate) fn enter_first_again<'a>(
    site: &'static Site,
    correlation: &'a Cell<CorrelationId>,
) -> FirstInstalled<'a> {
    ACTIVE.with(|a| {
        debug_assert!(a.get().is_empty(), "installed over a non-empty context");
        a.site.set(Some(site));
        a.correlation.set(correlation.get());
    });
    FirstInstalled { correlation }
}

/// The guard of [`enter_first_again`].
pub(crate) struct FirstInstalled<'a> {
    correlation: &'a Cell<CorrelationId>,
}

impl Drop for FirstInstalled<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.correlation.set(leave_first());
        debug_assert!(
            ACTIVE.with(|a| a.get().is_empty()),
            "left a non-empty context"
        );
    }
}

/// Installs the call's key, moved out of `key`, until the guard drops; the guard gives the key
/// back and restores the key that was installed before.
pub(crate) struct KeyInstalled<'a> {
    key: &'a mut Option<Arc<str>>,
    prev: Option<Option<Arc<str>>>,
}

pub(crate) fn install_key(key: &mut Option<Arc<str>>) -> KeyInstalled<'_> {
    let mine = key.take();
    let prev = KEY.with(|k| {
        k.try_borrow_mut()
            .ok()
            .map(|mut k| std::mem::replace(&mut *k, mine))
    });
    KeyInstalled { key, prev }
}

impl Drop for KeyInstalled<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take()
            && let Some(mine) = KEY.with(|k| {
                k.try_borrow_mut()
                    .ok()
                    .map(|mut k| std::mem::replace(&mut *k, prev))
            })
        {
            *self.key = mine;
        }
    }
}
