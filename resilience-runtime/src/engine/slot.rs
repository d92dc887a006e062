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
//! - the global registry is in force (no [`Registry::scope`](crate::Registry::scope) was ever
//!   used), and no subscriber wants the call's span;
//! - the call is not nested in another resilient call (a nested call joins its outer call's
//!   correlation id, which the full path resolves);
//! - no latency histogram is exported, and the policy has no deadline;
//! - the gate is the breaker alone (no rate limit, no bulkhead), and the breaker is closed.
//!
//! Any other call takes the full path from its start. Both paths count, record and log the same.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use crate::breaker::{Breaker, Outcome, Ticket};
use crate::classify::{Classify, Rejected};
use crate::clock::Instant;
use crate::context::{self, Active, CorrelationId};
use crate::metrics;
use crate::registry::{self, SiteState};

use super::{Call, Gate, HookSet, Policy, Site, Step, TimeoutKind};

/// A call site known by type: `#[resilient]` generates one zero-sized type per site, so that
/// the site and its policy are constants in the code that drives its calls.
#[doc(hidden)]
pub trait SiteDef: 'static {
    /// The site's policy.
    const POLICY: &'static Policy;
    /// The site.
    fn site() -> &'static Site;
}

/// One logical call as the generated code holds it: the site's hooks and the [`Call`], started
/// by the first attempt that needs it. The site and the hooks are known by type (`S`, and `H`
/// when it is [`StaticHooks`](super::StaticHooks)): the caller's future holds the call alone.
#[doc(hidden)]
pub struct Slot<T, E, S, H> {
    hooks: H,
    call: Option<Call<T, E, H>>,
    site: PhantomData<S>,
}

impl<T, E, S: SiteDef, H> std::fmt::Debug for Slot<T, E, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("operation", &S::POLICY.operation)
            .field("started", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<T, E: Classify, S: SiteDef, H: HookSet<T, E>> Slot<T, E, S, H> {
    /// A call at the site `S`, not started.
    #[inline(always)]
    pub fn new(hooks: H) -> Self {
        Slot {
            hooks,
            call: None,
            site: PhantomData,
        }
    }

    /// The call, started now if it was not.
    #[inline]
    pub fn call(&mut self) -> &mut Call<T, E, H> {
        let hooks = self.hooks;
        self.call
            .get_or_insert_with(|| Call::with_hooks(S::site(), hooks))
    }

    /// One attempt of `attempt`, run without a timer (the policy has no `timeout` or
    /// `deadline`).
    #[inline(always)]
    pub fn attempt<F: Future<Output = Result<T, E>>>(
        &mut self,
        attempt: F,
    ) -> Attempt<'_, T, E, S, H, F, NoTimer> {
        Attempt {
            slot: self,
            started: false,
            wait: None,
            timer: NoTimer,
            fut: attempt,
        }
    }

    /// One attempt of `attempt` under the per-attempt timeout and the deadline.
    #[inline(always)]
    pub fn attempt_timed<F: Future<Output = Result<T, E>>>(
        &mut self,
        attempt: F,
    ) -> Attempt<'_, T, E, S, H, F, Timer> {
        Attempt {
            slot: self,
            started: false,
            wait: None,
            timer: Timer {
                sleep: None,
                kind: TimeoutKind::Attempt,
            },
            fut: attempt,
        }
    }

    /// One attempt of a blocking `attempt`: the gate (waiting for a rate-limit permit with the
    /// registry's blocking sleep), the attempt, and the decision.
    #[inline(always)]
    pub fn attempt_blocking(&mut self, attempt: impl FnOnce() -> Result<T, E>) -> Step<T, E> {
        if self.call.is_none()
            && let Some(fast) = self.fast_start()
        {
            let FastStart { state, ticket } = fast;
            let mut guard = FastGuard::install(S::site(), state, self.breaker_of(state), ticket);
            let r = attempt();
            let correlation = guard.finish();
            return match r {
                Ok(v) => {
                    succeeded(state, self.breaker_of(state), ticket, false);
                    Step::Ok(v)
                }
                Err(e) => self.store(state, ticket, correlation).decide(Err(e)),
            };
        }
        let call = self.call();
        if let Err(r) = call.begin_blocking() {
            return Step::ret(r);
        }
        call.start_attempt();
        let r = call.entered(attempt);
        call.decide(r)
    }

    /// Waits out [`Step::Wait`] in a blocking call (with the registry's blocking sleep, if set).
    pub fn sleep_blocking(&mut self, wait: Duration) {
        self.call().sleep_blocking(wait);
    }

    /// Whether the first attempt may take the fast path (see the [module docs](self)), and what
    /// it starts with if so. Reads only; takes nothing.
    #[inline(always)]
    fn fast_start(&self) -> Option<FastStart> {
        let p = S::POLICY;
        let rejects = self.hooks.rejects();
        if registry::scoping_in_use()
            || (rejects && p.deadline.is_some())
            || metrics::latency_enabled()
            || span_wanted()
        {
            return None;
        }
        let state = S::site().global_state();
        if context::active().site.is_some() || (rejects && !state.simple_gate) {
            return None;
        }
        let ticket = match self.breaker_of(state) {
            Some(b) => Some(b.closed_ticket()?),
            None => None,
        };
        Some(FastStart { state, ticket })
    }

    /// The breaker the gate consults: the site's, when the runtime may reject.
    #[inline(always)]
    fn breaker_of(&self, state: &'static SiteState) -> Option<&'static Breaker> {
        if self.hooks.rejects() {
            state.breaker.as_deref()
        } else {
            None
        }
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
        self.call
            .insert(Call::started_fast(self.hooks, state, ticket, correlation))
    }
}

/// What the fast path starts with.
#[derive(Clone, Copy)]
struct FastStart {
    state: &'static SiteState,
    ticket: Option<Ticket>,
}

/// Whether a subscriber may want the call's span: the level check alone (a load and a
/// compare); the subscriber's own interest is asked when the span is built.
#[inline(always)]
fn span_wanted() -> bool {
    tracing::Level::INFO <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// A success: the breaker's record, the budget's refund and the site's counter.
#[inline(always)]
pub(super) fn succeeded(
    state: &SiteState,
    breaker: Option<&Breaker>,
    ticket: Option<Ticket>,
    retried: bool,
) {
    if let (Some(t), Some(b)) = (ticket, breaker) {
        b.record(t, Outcome::Success);
    }
    state.budget.refund();
    state.counters.ok(retried);
}

/// The fast path's context, installed over an empty one; it restores the empty context when it
/// drops, and when it drops unwinding (the attempt panicked) it gives back the breaker's ticket
/// and counts the call as a permanent error, as a [`Call`] does.
struct FastGuard {
    state: &'static SiteState,
    breaker: Option<&'static Breaker>,
    ticket: Option<Ticket>,
    armed: bool,
}

impl FastGuard {
    #[inline(always)]
    fn install(
        site: &'static Site,
        state: &'static SiteState,
        breaker: Option<&'static Breaker>,
        ticket: Option<Ticket>,
    ) -> FastGuard {
        context::replace_active(Active {
            site: Some(site),
            correlation: CorrelationId::UNSET,
            attempt: 0,
            has_key: 0,
        });
        FastGuard {
            state,
            breaker,
            ticket,
            armed: true,
        }
    }

    /// The attempt returned: restores the empty context and gives the correlation id the body
    /// took, if it took one.
    #[inline(always)]
    fn finish(&mut self) -> CorrelationId {
        self.armed = false;
        context::restore_active(Active::NONE)
    }
}

impl Drop for FastGuard {
    #[inline(always)]
    fn drop(&mut self) {
        if self.armed {
            unwound(self.state, self.breaker, self.ticket);
        }
    }
}

/// The fast path's attempt panicked.
#[cold]
#[inline(never)]
fn unwound(state: &SiteState, breaker: Option<&Breaker>, ticket: Option<Ticket>) {
    context::restore_active(Active::NONE);
    if let (Some(t), Some(b)) = (ticket, breaker) {
        b.release(t);
    }
    super::count_panic(state, 0, None);
}

/// A timer for the attempt: [`NoTimer`] or [`Timer`].
#[doc(hidden)]
pub trait AttemptTimer {
    /// Arms the timer for an attempt that starts now.
    fn arm<T, E: Classify, H: HookSet<T, E>>(self: Pin<&mut Self>, call: &Call<T, E, H>);
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
    #[inline(always)]
    fn arm<T, E: Classify, H: HookSet<T, E>>(self: Pin<&mut Self>, _: &Call<T, E, H>) {}
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
    #[derive(Debug)]
    pub struct Timer {
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        kind: TimeoutKind,
    }
}

impl AttemptTimer for Timer {
    #[inline]
    fn arm<T, E: Classify, H: HookSet<T, E>>(self: Pin<&mut Self>, call: &Call<T, E, H>) {
        let mut this = self.project();
        match call.attempt_limit() {
            Some((at, kind)) => {
                this.sleep.set(Some(tokio::time::sleep_until(at)));
                *this.kind = kind;
            }
            None => this.sleep.set(None),
        }
    }

    #[inline(always)]
    fn arm_fast(self: Pin<&mut Self>, policy: &Policy, rejects: bool) {
        if rejects && let Some(at) = policy.timeout.and_then(|t| Instant::now().checked_add(t)) {
            let mut this = self.project();
            this.sleep.set(Some(tokio::time::sleep_until(at)));
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
    pub struct Attempt<'a, T, E, S, H, F, L> {
        slot: &'a mut Slot<T, E, S, H>,
        // The gate passed and the attempt is running (its call is in the slot).
        started: bool,
        // A wait for a rate-limit permit before the attempt.
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        timer: L,
        #[pin]
        fut: F,
    }
}

impl<T, E, S, H, F, L> std::fmt::Debug for Attempt<'_, T, E, S, H, F, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl<T, E, S, H, F, L> Future for Attempt<'_, T, E, S, H, F, L>
where
    E: Classify,
    S: SiteDef,
    H: HookSet<T, E>,
    F: Future<Output = Result<T, E>>,
    L: AttemptTimer,
{
    type Output = Step<T, E>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Step<T, E>> {
        let mut this = self.project();
        if !*this.started {
            if this.slot.call.is_none()
                && let Some(fast) = this.slot.fast_start()
            {
                let FastStart { state, ticket } = fast;
                let slot = &mut **this.slot;
                let breaker = slot.breaker_of(state);
                this.timer
                    .as_mut()
                    .arm_fast(S::POLICY, slot.hooks.rejects());
                let mut guard = FastGuard::install(S::site(), state, breaker, ticket);
                let poll = this.fut.as_mut().poll(cx);
                let correlation = guard.finish();
                return match poll {
                    Poll::Ready(Ok(v)) => {
                        succeeded(state, breaker, ticket, false);
                        Poll::Ready(Step::Ok(v))
                    }
                    Poll::Ready(Err(e)) => {
                        Poll::Ready(slot.store(state, ticket, correlation).decide(Err(e)))
                    }
                    Poll::Pending => {
                        slot.store(state, ticket, correlation);
                        *this.started = true;
                        poll_timer(slot, this.timer, cx)
                    }
                };
            }
            let call = this.slot.call();
            loop {
                if let Some(w) = this.wait.as_mut() {
                    ready!(w.as_mut().poll(cx));
                    *this.wait = None;
                }
                match call.gate() {
                    Gate::Pass => break,
                    Gate::End(r) => return Poll::Ready(Step::ret(r)),
                    Gate::Wait(d) => *this.wait = Some(Box::pin(tokio::time::sleep(d))),
                }
            }
            call.start_attempt();
            call.timed_out = None;
            this.timer.as_mut().arm(call);
            *this.started = true;
        }
        let call = this.slot.call();
        let fut = this.fut;
        match call.entered(|| fut.poll(cx)) {
            Poll::Ready(r) => Poll::Ready(call.decide(r)),
            Poll::Pending => poll_timer(this.slot, this.timer, cx),
        }
    }
}

/// The attempt is pending: whether its timer has fired, which ends it with the timeout's error.
#[inline(always)]
fn poll_timer<T, E: Classify, S: SiteDef, H: HookSet<T, E>, L: AttemptTimer>(
    slot: &mut Slot<T, E, S, H>,
    timer: Pin<&mut L>,
    cx: &mut TaskContext<'_>,
) -> Poll<Step<T, E>> {
    match timer.poll_expired(cx) {
        None => Poll::Pending,
        Some(kind) => timed_out(slot.call(), kind),
    }
}

/// Ends an attempt that its timer stopped.
#[cold]
#[inline(never)]
fn timed_out<T, E: Classify, H: HookSet<T, E>>(
    call: &mut Call<T, E, H>,
    kind: TimeoutKind,
) -> Poll<Step<T, E>> {
    let p = call.site().policy;
    let rejection = match kind {
        TimeoutKind::Attempt => Rejected::AttemptTimeout {
            timeout: p.timeout.unwrap_or_default(),
        },
        TimeoutKind::Deadline => Rejected::DeadlineExceeded {
            deadline: p.deadline.unwrap_or_default(),
        },
    };
    match call.hooks.rejected(rejection) {
        Some(e) => {
            call.timed_out = Some(kind);
            Poll::Ready(call.decide(Err(e)))
        }
        // A timer is armed only when the runtime may reject (`Call::attempt_limit`).
        None => Poll::Pending,
    }
}
