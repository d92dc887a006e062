//! What `#[resilient]` drives: a [`Slot`] that starts its [`Call`] lazily, and one future per
//! attempt ([`Attempt`]) that passes the gate, runs the attempt and decides what comes next.
//!
//! # The first attempt's fast path
//!
//! Most calls are decided in the first poll of their first attempt: the breaker is closed, the
//! attempt is ready at once or fails, and nothing else is asked of the engine. That poll keeps
//! the call's state in locals (the site's state, the breaker's ticket, the context it installs)
//! and writes a [`Call`] into the slot only when the attempt is pending or failed. What it does
//! is what [`Call::gate`], [`Call::entered`] and [`Call::decide`] do, in the same order, for the
//! calls it takes:
//!
//! - no subscriber wants the call's span;
//! - the call is not nested in another resilient call (a nested call joins its outer call's
//!   correlation id, which the full path resolves), and no
//!   [`Registry::scope`](crate::Registry::scope) is in force on its thread (one thread-local
//!   tells both);
//! - no latency histogram is exported, and the policy has no deadline;
//! - no configuration overrides the site's policy (a `[sites]` table, a per-call override): its
//!   policy is the attribute's, a constant;
//! - the gate is the breaker alone (no rate limit, no bulkhead), and the breaker is closed (the
//!   key's breaker, for a keyed site, looked up before the attempt).
//!
//! Any other call takes the full path from its start. Both paths count, record and log the same.

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use crate::breaker::{Breaker, Outcome, Ticket};
use crate::budget::RetryBudget;
use crate::classify::Classify;
use crate::clock::Instant;
use crate::context::{self, CorrelationId};
use crate::registry::SiteState;

use super::{Call, HookSet, Policy, RetryOk, Site, Step, TimeoutKind};

/// [`Attempt::phase`]: the gate has not passed yet.
const BEFORE: u8 = 0;
/// [`Attempt::phase`]: the attempt is running (its call is in the slot).
const RUNNING: u8 = 1;
/// [`Attempt::phase`]: the attempt failed and the call waits out its backoff.
const BACKOFF: u8 = 2;

/// A call site known by type: `#[resilient]` generates one zero-sized type per site, so that
/// the site and its policy are constants in the code that drives its calls.
#[doc(hidden)]
pub trait SiteDef: 'static {
    /// The site's policy.
    const POLICY: &'static Policy;
    /// Where a call holds its key's breaker before it starts: [`HeldKey`] for a site with a
    /// `breaker_key`, else [`NoKey`], which takes no room.
    type Key: KeySlot;
    /// The site.
    fn site() -> &'static Site;
}

/// Where a [`Slot`]'s site comes from: a type ([`Typed`], what `#[resilient]` generates, which
/// takes no room) or a `&'static Site` (what [`execute`](super::execute) and the tower layer
/// are given). Every call runs the same machine either way.
#[doc(hidden)]
pub trait SiteRef: Copy + 'static {
    /// The site.
    fn site(self) -> &'static Site;
    /// The site's policy.
    fn policy(self) -> &'static Policy;
}

/// A site known by type.
#[doc(hidden)]
pub struct Typed<S>(PhantomData<S>);

impl<S> Typed<S> {
    /// The site `S`.
    #[inline(always)]
    pub const fn new() -> Self {
        Typed(PhantomData)
    }
}

impl<S> Default for Typed<S> {
    fn default() -> Self {
        Typed::new()
    }
}

impl<S> std::fmt::Debug for Typed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Typed")
    }
}

impl<S> Clone for Typed<S> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Typed<S> {}

impl<S: SiteDef> SiteRef for Typed<S> {
    #[inline(always)]
    fn site(self) -> &'static Site {
        S::site()
    }
    #[inline(always)]
    fn policy(self) -> &'static Policy {
        S::POLICY
    }
}

impl SiteRef for &'static Site {
    #[inline(always)]
    fn site(self) -> &'static Site {
        self
    }
    #[inline(always)]
    fn policy(self) -> &'static Policy {
        Site::policy(self)
    }
}

/// Where a [`Slot`] holds its call's per-key breaker until the call starts.
#[doc(hidden)]
pub trait KeySlot: Default + 'static {
    /// The breaker held, if any.
    fn breaker(&self) -> Option<&Breaker>;
    /// Takes the breaker held, if any.
    fn take(&mut self) -> Option<Arc<Breaker>>;
    /// Holds `b`; gives it back if this slot holds none.
    fn hold(&mut self, b: Arc<Breaker>) -> Result<(), Arc<Breaker>>;
}

/// No per-key breaker: a site without `breaker_key`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct NoKey;

impl KeySlot for NoKey {
    #[inline(always)]
    fn breaker(&self) -> Option<&Breaker> {
        None
    }
    #[inline(always)]
    fn take(&mut self) -> Option<Arc<Breaker>> {
        None
    }
    #[inline(always)]
    fn hold(&mut self, b: Arc<Breaker>) -> Result<(), Arc<Breaker>> {
        Err(b)
    }
}

/// A per-key breaker, once chosen: a site with `breaker_key`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct HeldKey(Option<Arc<Breaker>>);

impl KeySlot for HeldKey {
    #[inline(always)]
    fn breaker(&self) -> Option<&Breaker> {
        self.0.as_deref()
    }
    #[inline(always)]
    fn take(&mut self) -> Option<Arc<Breaker>> {
        self.0.take()
    }
    #[inline(always)]
    fn hold(&mut self, b: Arc<Breaker>) -> Result<(), Arc<Breaker>> {
        self.0 = Some(b);
        Ok(())
    }
}

/// One logical call as the generated code holds it: the site's hooks and the [`Call`], started
/// by the first attempt that needs it. The site and the hooks are known by type (`S`, and `H`
/// when it is [`StaticHooks`](super::StaticHooks)): the caller's future holds the call alone.
#[doc(hidden)]
pub struct Slot<T, E, S, H, K = HeldKey> {
    hooks: H,
    /// Dropped by `Slot`'s own `Drop`, out of line: dropping a slot whose call never started
    /// (every call the fast path ended) is then one compare, small enough to inline into the
    /// caller's future's drop.
    call: ManuallyDrop<Option<Call<T, E, H>>>,
    /// The call's per-key breaker, chosen before the call started (`breaker_key`): the fast
    /// path admits through it, and a call that starts takes it over.
    key: K,
    site: S,
}

impl<T, E, S, H, K> Drop for Slot<T, E, S, H, K> {
    #[inline(always)]
    fn drop(&mut self) {
        match &*self.call {
            None => {}
            // An ended call that holds and owns nothing: its drop would do nothing, and
            // `ManuallyDrop` lets it go without running it.
            Some(call) if call.drops_to_nothing() => {}
            Some(_) => drop_call(&mut self.call),
        }
    }
}

/// Drops a started call in place (see [`Slot`]'s `call` field).
#[inline(never)]
fn drop_call<C>(call: &mut ManuallyDrop<Option<C>>) {
    **call = None;
}

impl<T, E, S: SiteRef, H, K> std::fmt::Debug for Slot<T, E, S, H, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("operation", &self.site.policy().operation)
            .field("started", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<T, E: Classify, S: SiteRef, H: HookSet<T, E>, K: KeySlot> Slot<T, E, S, H, K> {
    /// A call at `site`, not started.
    #[inline(always)]
    pub fn new(site: S, hooks: H) -> Self {
        Slot {
            hooks,
            call: ManuallyDrop::new(None),
            key: K::default(),
            site,
        }
    }

    /// The call, started now if it was not.
    #[inline(always)]
    pub(crate) fn call(&mut self) -> &mut Call<T, E, H> {
        let (hooks, site) = (self.hooks, self.site);
        let key = &mut self.key;
        self.call
            .get_or_insert_with(|| start_call::<T, E, H>(site.site(), hooks, key))
    }

    /// Sets the call's idempotency key (see [`Call::set_idempotency_key`]).
    #[inline]
    pub fn set_idempotency_key(&mut self, key: String) {
        self.call().set_idempotency_key(key);
    }

    /// Chooses the call's per-key breaker (see [`Call::set_breaker_key`]). Before the call
    /// starts, at the global registry, the slot holds it, so that the first attempt may still
    /// take the fast path.
    #[inline]
    pub fn set_breaker_key(&mut self, key: &str) {
        if self.call.is_none() && !context::in_call_or_scope() {
            let Some(keyed) = &self.site.site().global_state().keyed else {
                return;
            };
            match self.key.hold(keyed.get(key)) {
                Ok(()) => return,
                Err(b) => return self.call().set_keyed(b),
            }
        }
        self.call().set_breaker_key(key);
    }

    /// Ends the call with an error from outside an attempt (see [`Call::fail`]).
    #[inline]
    pub fn fail(&mut self, error: E) -> Result<T, E> {
        self.call().fail(error)
    }

    /// One attempt of `attempt`, run without a timer (the policy has no `timeout` or
    /// `deadline`).
    #[inline(always)]
    pub fn attempt<F: Future<Output = Result<T, E>>>(
        &mut self,
        attempt: F,
    ) -> Attempt<'_, T, E, S, H, F, NoTimer, K> {
        Attempt {
            slot: self,
            phase: BEFORE,
            timer: NoTimer,
            fut: Some(attempt),
        }
    }

    /// One attempt of `attempt` under the per-attempt timeout and the deadline.
    #[inline(always)]
    pub fn attempt_timed<F: Future<Output = Result<T, E>>>(
        &mut self,
        attempt: F,
    ) -> Attempt<'_, T, E, S, H, F, Timer, K> {
        Attempt {
            slot: self,
            phase: BEFORE,
            timer: Timer::new(),
            fut: Some(attempt),
        }
    }

    /// One attempt of a blocking `attempt`: the gate (waiting for a rate-limit permit with the
    /// registry's blocking sleep), the attempt, the decision, and the backoff before a retry.
    #[inline(always)]
    pub fn attempt_blocking(&mut self, attempt: impl FnOnce() -> Result<T, E>) -> Step<T, E> {
        if self.call.is_none()
            && let Some(fast) = self.fast_start()
        {
            let FastStart { state, admitted } = fast;
            let mut guard = FastGuard::install(self.site);
            let r = attempt();
            let correlation = guard.finish();
            return match r {
                Ok(v) => {
                    // `RetryOk::Accept`, inline, for hooks without `retry_if_ok`.
                    let verdict = self.hooks.ok_verdict(&v);
                    if !matches!(verdict, RetryOk::Accept) {
                        let ticket = admitted.map(|(_, t)| t);
                        let call = self.store(state, ticket, correlation);
                        let step = call.decide_ok(v, verdict);
                        return settle_blocking(call, step);
                    }
                    succeeded(state, admitted, false);
                    Step::Ok(v)
                }
                Err(e) => {
                    let ticket = admitted.map(|(_, t)| t);
                    let call = self.store(state, ticket, correlation);
                    let step = call.decide(Err(e));
                    settle_blocking(call, step)
                }
            };
        }
        let call = self.call();
        if let Err(r) = call.begin_blocking() {
            return Step::ret(r);
        }
        call.start_attempt();
        let r = call.entered(attempt);
        let step = call.decide(r);
        settle_blocking(call, step)
    }

    /// The credential refresh of [`Step::Refresh`] under the call's deadline (see
    /// [`Call::refresh`]).
    #[inline]
    pub fn refresh<F: Future<Output = Result<(), E>>>(
        &mut self,
        refresh: F,
    ) -> impl Future<Output = Result<(), Result<T, E>>> {
        self.call().refresh(refresh)
    }

    /// A blocking refresh's result (see [`Call::refreshed`]).
    #[inline]
    pub fn refreshed(&mut self, refreshed: Result<(), E>) -> Result<(), Result<T, E>> {
        self.call().refreshed(refreshed)
    }

    /// Whether the first attempt may take the fast path (see the [module docs](self)), and what
    /// it starts with if so. Reads only; takes nothing.
    #[inline(always)]
    fn fast_start(&self) -> Option<FastStart<'_>> {
        let p = self.site.policy();
        let rejects = self.hooks.rejects();
        if crate::metrics::latency_enabled() || (rejects && p.deadline.is_some()) || span_wanted() {
            return None;
        }
        let state = self.site.site().global_state();
        // A nested or scoped call (a per-call override is a scope), or a site the global
        // registry's `[sites]` table overrides: its policy is not the constant above.
        if context::in_call_or_scope() || self.site.site().overridden_globally() {
            return None;
        }
        // The gate consults the site's breaker when the runtime may reject. Whether the site has
        // one is its policy's, a constant: the registry gives a breaker to every site whose
        // policy names one, and a keyed site's call holds its key's.
        let admitted = if rejects && p.breaker.is_some() {
            let b = match self.key.breaker() {
                Some(b) if state.simple_gate => b,
                Some(_) => return None,
                // Set only when the breaker is the whole gate: one check for both.
                None => state.gate_breaker.as_deref()?,
            };
            Some((b, b.closed_ticket()?))
        } else {
            if rejects && !state.simple_gate {
                return None;
            }
            None
        };
        Some(FastStart { state, admitted })
    }

    /// Writes the fast path's call into the slot, for an attempt that is pending or failed.
    #[cold]
    #[inline(never)]
    fn store(
        &mut self,
        state: &'static SiteState,
        ticket: Option<Ticket>,
        correlation: CorrelationId,
    ) -> &mut Call<T, E, H> {
        let key = self.key.take();
        self.call.insert(Call::started_fast(
            self.hooks,
            state,
            ticket,
            correlation,
            key,
        ))
    }
}

/// Starts a call at `S` (out of line: a started call is the common case where it is asked for).
#[cold]
#[inline(never)]
fn start_call<T, E: Classify, H: HookSet<T, E>>(
    site: &'static Site,
    hooks: H,
    key: &mut impl KeySlot,
) -> Call<T, E, H> {
    let mut call = Call::with_hooks(site, hooks);
    if let Some(key) = key.take() {
        call.set_keyed(key);
    }
    call
}

/// The breaker that admitted the attempt, and its ticket.
pub(super) type Admitted<'a> = Option<(&'a Breaker, Ticket)>;

/// What the fast path starts with.
#[derive(Clone, Copy)]
struct FastStart<'a> {
    state: &'static SiteState,
    admitted: Admitted<'a>,
}

/// Whether a subscriber may want the call's span: the level check alone (a load and a
/// compare); the subscriber's own interest is asked when the span is built.
#[inline(always)]
pub(super) fn span_wanted() -> bool {
    tracing::Level::INFO <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// A success: the breaker's record, the budget's refund and the site's counter.
#[inline(always)]
pub(super) fn succeeded(state: &SiteState, admitted: Admitted<'_>, retried: bool) {
    succeeded_with(state, &state.budget, admitted, retried);
}

/// [`succeeded`], refunding `budget` (a call's policy may name another than its site's).
#[inline(always)]
pub(super) fn succeeded_with(
    state: &SiteState,
    budget: &RetryBudget,
    admitted: Admitted<'_>,
    retried: bool,
) {
    if let Some((b, t)) = admitted {
        b.record(t, Outcome::Success);
    }
    budget.refund();
    state.counters.ok(retried);
}

/// The fast path's context, installed over an empty one; it restores the empty context when it
/// drops, and when it drops unwinding (the attempt panicked) it counts the call as a permanent
/// error, as a [`Call`] does. (The fast path's ticket is a closed breaker's, never a probe's:
/// giving it back would record nothing, so the guard does not hold it.)
struct FastGuard<S: SiteRef> {
    armed: bool,
    site: S,
}

impl<S: SiteRef> FastGuard<S> {
    #[inline(always)]
    fn install(site: S) -> Self {
        context::enter_first(site.site());
        FastGuard { armed: true, site }
    }

    /// The attempt returned: restores the empty context and gives the correlation id the body
    /// took, if it took one.
    #[inline(always)]
    fn finish(&mut self) -> CorrelationId {
        self.armed = false;
        context::leave_first()
    }
}

impl<S: SiteRef> Drop for FastGuard<S> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.armed {
            unwound(self.site.site());
        }
    }
}

/// The fast path's attempt panicked.
#[cold]
#[inline(never)]
fn unwound(site: &'static Site) {
    context::leave_first();
    super::count_panic(site.global_state(), 0, None);
}

/// A timer for the attempt: [`NoTimer`] or [`Timer`].
#[doc(hidden)]
pub trait AttemptTimer {
    /// Whether the attempt's future holds the timer; without it, a call whose configuration
    /// gives the site a `timeout` or `deadline` keeps one in its cold state.
    const IN_FUTURE: bool;
    /// Arms the timer for an attempt that starts now.
    /// `limit` is the call's: asked only by a timer that has a use for it.
    fn arm(self: Pin<&mut Self>, limit: impl FnOnce() -> Option<(Instant, TimeoutKind)>);
    /// Arms the timer for the fast path's attempt, which has no deadline.
    fn arm_fast(self: Pin<&mut Self>, policy: &Policy, rejects: bool);
    /// Whether the armed limit has passed.
    fn poll_expired(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Option<TimeoutKind>;
}

/// No timer: the attempt's future holds none.
#[doc(hidden)]
#[derive(Debug)]
pub struct NoTimer;

impl AttemptTimer for NoTimer {
    const IN_FUTURE: bool = false;
    #[inline(always)]
    fn arm(self: Pin<&mut Self>, _: impl FnOnce() -> Option<(Instant, TimeoutKind)>) {}
    #[inline(always)]
    fn arm_fast(self: Pin<&mut Self>, _: &Policy, _: bool) {}
    #[inline(always)]
    fn poll_expired(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Option<TimeoutKind> {
        None
    }
}

pin_project_lite::pin_project! {
    /// The per-attempt timeout or the deadline, whichever comes first.
    #[doc(hidden)]
    pub struct Timer {
        // Polled outside the task's coop budget, as tokio's own `Timeout` polls its delay: an
        // attempt that spends the budget (a busy channel or socket) must still time out.
        #[pin]
        sleep: Option<tokio::task::Unconstrained<tokio::time::Sleep>>,
        kind: TimeoutKind,
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("armed", &self.sleep.is_some())
            .field("kind", &self.kind)
            .finish()
    }
}

/// The timer's sleep until `at`, outside the coop budget.
fn limit_at(at: Instant) -> tokio::task::Unconstrained<tokio::time::Sleep> {
    tokio::task::unconstrained(tokio::time::sleep_until(at))
}

impl Timer {
    /// A timer not armed.
    pub(super) fn new() -> Timer {
        Timer {
            sleep: None,
            kind: TimeoutKind::Attempt,
        }
    }
}

impl AttemptTimer for Timer {
    const IN_FUTURE: bool = true;
    #[inline]
    fn arm(self: Pin<&mut Self>, limit: impl FnOnce() -> Option<(Instant, TimeoutKind)>) {
        let mut this = self.project();
        match limit() {
            Some((at, kind)) => {
                this.sleep.set(Some(limit_at(at)));
                *this.kind = kind;
            }
            None => this.sleep.set(None),
        }
    }

    #[inline(always)]
    fn arm_fast(self: Pin<&mut Self>, policy: &Policy, rejects: bool) {
        if rejects && let Some(at) = policy.timeout.and_then(|t| Instant::now().checked_add(t)) {
            let mut this = self.project();
            this.sleep.set(Some(limit_at(at)));
            *this.kind = TimeoutKind::Attempt;
        }
    }

    #[inline]
    fn poll_expired(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Option<TimeoutKind> {
        let this = self.project();
        let sleep = this.sleep.as_pin_mut()?;
        sleep.poll(cx).is_ready().then_some(*this.kind)
    }
}

pin_project_lite::pin_project! {
    /// One attempt of a [`Slot`]'s call: resolves to what comes next.
    #[doc(hidden)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Attempt<'a, T, E, S, H, F, L, K = HeldKey> {
        slot: &'a mut Slot<T, E, S, H, K>,
        // `BEFORE`, `RUNNING` or `BACKOFF`.
        phase: u8,
        #[pin]
        timer: L,
        // The attempt; `None` once it ended and the call waits out its backoff, so that what
        // the attempt held (a connection, a permit, a lock) is released before the wait.
        #[pin]
        fut: Option<F>,
    }
}

impl<T, E, S, H, F, L, K> std::fmt::Debug for Attempt<'_, T, E, S, H, F, L, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<T, E, S, H, F, L, K> Future for Attempt<'_, T, E, S, H, F, L, K>
where
    E: Classify,
    S: SiteRef,
    H: HookSet<T, E>,
    F: Future<Output = Result<T, E>>,
    L: AttemptTimer,
    K: KeySlot,
{
    type Output = Step<T, E>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Step<T, E>> {
        let mut this = self.project();
        if *this.phase == BEFORE {
            if this.slot.call.is_none()
                && let Some(fast) = this.slot.fast_start()
            {
                let FastStart { state, admitted } = fast;
                let (site, rejects) = (this.slot.site, this.slot.hooks.rejects());
                this.timer.as_mut().arm_fast(site.policy(), rejects);
                let Some(fut) = this.fut.as_mut().as_pin_mut() else {
                    // Only a backoff clears the attempt, and a backoff comes after `BEFORE`.
                    return Poll::Pending;
                };
                let mut guard = FastGuard::install(site);
                let poll = fut.poll(cx);
                let correlation = guard.finish();
                return match poll {
                    Poll::Ready(Ok(v)) => {
                        // `RetryOk::Accept`, inline, for hooks without `retry_if_ok`.
                        let verdict = this.slot.hooks.ok_verdict(&v);
                        if !matches!(verdict, RetryOk::Accept) {
                            let ticket = admitted.map(|(_, t)| t);
                            let call = this.slot.store(state, ticket, correlation);
                            let step = call.decide_ok(v, verdict);
                            return settle(call, this.phase, this.fut, step, cx);
                        }
                        succeeded(state, admitted, false);
                        Poll::Ready(Step::Ok(v))
                    }
                    Poll::Ready(Err(e)) => {
                        let ticket = admitted.map(|(_, t)| t);
                        let call = this.slot.store(state, ticket, correlation);
                        let step = call.decide(Err(e));
                        settle(call, this.phase, this.fut, step, cx)
                    }
                    Poll::Pending => {
                        let ticket = admitted.map(|(_, t)| t);
                        let slot = &mut **this.slot;
                        slot.store(state, ticket, correlation);
                        *this.phase = RUNNING;
                        poll_timer(slot.call(), this.phase, this.fut, this.timer, cx)
                    }
                };
            }
            let call = this.slot.call();
            // A wait for a rate-limit permit is kept with the call's cold state: the future of
            // an attempt holds none.
            if let Err(r) = ready!(call.poll_gate(cx)) {
                return Poll::Ready(Step::ret(r));
            }
            call.start_attempt();
            call.timed_out = None;
            this.timer.as_mut().arm(|| call.attempt_limit());
            if !L::IN_FUTURE && call.overridden() {
                let limit = call.attempt_limit();
                call.arm_spare_timer(limit);
            }
            *this.phase = RUNNING;
        }
        let call = this.slot.call();
        if *this.phase == BACKOFF {
            return backoff(call, cx);
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            // Only a backoff clears the attempt, and it returned above.
            return Poll::Pending;
        };
        match call.entered(|| fut.poll(cx)) {
            Poll::Ready(r) => {
                // A spare timer left armed is replaced by the next attempt's, or dropped with
                // the call: its one wake-up, at the most, finds the call waiting out a backoff.
                let step = call.decide(r);
                settle(call, this.phase, this.fut, step, cx)
            }
            Poll::Pending => poll_timer(call, this.phase, this.fut, this.timer, cx),
        }
    }
}

/// What the attempt's decision means for its future: a backoff is waited out here (in the call's
/// cold state), after the attempt is dropped, and the future resolves to [`Step::Retry`] when
/// it is over.
#[inline(always)]
fn settle<T, E: Classify, H: HookSet<T, E>, F>(
    call: &mut Call<T, E, H>,
    phase: &mut u8,
    mut fut: Pin<&mut Option<F>>,
    step: Step<T, E>,
    cx: &mut TaskContext<'_>,
) -> Poll<Step<T, E>> {
    match step {
        Step::Wait(d) => {
            fut.set(None);
            call.start_wait(d);
            *phase = BACKOFF;
            backoff(call, cx)
        }
        other => Poll::Ready(other),
    }
}

/// Waits out the backoff before the next attempt.
#[inline(never)]
fn backoff<T, E: Classify, H: HookSet<T, E>>(
    call: &mut Call<T, E, H>,
    cx: &mut TaskContext<'_>,
) -> Poll<Step<T, E>> {
    if let Some(w) = call.wait() {
        ready!(w.as_mut().poll(cx));
        call.end_wait();
    }
    Poll::Ready(Step::Retry)
}

/// [`settle`] for a blocking call: the backoff is slept with the registry's blocking sleep.
#[inline(always)]
fn settle_blocking<T, E: Classify, H: HookSet<T, E>>(
    call: &mut Call<T, E, H>,
    step: Step<T, E>,
) -> Step<T, E> {
    match step {
        Step::Wait(d) => {
            call.sleep_blocking(d);
            Step::Retry
        }
        other => other,
    }
}

/// The attempt is pending: whether its timer has fired, which ends it with the timeout's error.
#[inline(always)]
fn poll_timer<T, E: Classify, H: HookSet<T, E>, F, L: AttemptTimer>(
    call: &mut Call<T, E, H>,
    phase: &mut u8,
    fut: Pin<&mut Option<F>>,
    timer: Pin<&mut L>,
    cx: &mut TaskContext<'_>,
) -> Poll<Step<T, E>> {
    let expired = match timer.poll_expired(cx) {
        None if !L::IN_FUTURE && call.overridden() => call.poll_spare_timer(cx),
        expired => expired,
    };
    match expired {
        None => Poll::Pending,
        Some(kind) => match timed_out(call, kind) {
            Some(step) => settle(call, phase, fut, step, cx),
            // A timer is armed only when the runtime may reject (`Call::attempt_limit`).
            None => Poll::Pending,
        },
    }
}

/// Ends an attempt that its timer stopped; `None` if the site takes no rejections.
#[cold]
#[inline(never)]
fn timed_out<T, E: Classify, H: HookSet<T, E>>(
    call: &mut Call<T, E, H>,
    kind: TimeoutKind,
) -> Option<Step<T, E>> {
    match call.hooks.rejected(kind.rejection(call.policy())) {
        Some(e) => {
            call.disarm_spare_timer();
            call.timed_out = Some(kind);
            Some(call.decide(Err(e)))
        }
        None => None,
    }
}
