//! The execution engine: one logical call, attempt by attempt.
//!
//! # Order
//!
//! The layers wrap each other in one fixed order, outermost first:
//!
//! ```text
//! fallback                     called with the last error (the deadline's rejection too);
//!                              runs after the deadline, which does not bound it
//!   deadline                   the whole call, retries and waits included
//!     retries                  backoff, jitter, Retry-After, retry budget, auth refresh
//!       circuit breaker        one per name (or per key); records every attempt
//!         rate limit           a permit per attempt
//!           per-attempt timeout
//!             bulkhead         a concurrency slot per attempt
//!               the attempt    the body of the annotated fn
//! ```
//!
//! One call machine serves every caller: `#[resilient]`, [`execute`], [`execute_blocking`],
//! [`Execution`] and the tower layer. A call is driven attempt by attempt, one future per attempt
//! that passes the gate (deadline, breaker, rate limit, bulkhead; a refusal of the last two
//! waits for capacity), runs the attempt under its timeout with the
//! [`CallContext`](crate::CallContext) installed, records the outcome and decides: return, wait
//! and retry, or refresh credentials first. Blocking calls run the same decisions, sleeping with
//! the registry's blocking sleep.
//!
//! The first poll of a call's first attempt keeps the call's state in locals and writes it into
//! the caller's future only if the attempt is pending or failed. A site known by type (what
//! `#[resilient]` generates) and hooks known by type make what a site leaves out cost nothing.

//! Without the macro, [`execute`] and [`execute_blocking`] take a closure that makes one attempt;
//! [`Execution`] adds an idempotency key, a breaker key and a credential refresh.
//!
//! ```
//! use resilience_runtime::engine::{execute, Hooks, Policy, Site};
//! use resilience_runtime::{Classify, ErrorClass};
//!
//! #[derive(Debug)]
//! struct Busy;
//! impl Classify for Busy {
//!     fn class(&self) -> ErrorClass { ErrorClass::Transient }
//! }
//!
//! static SITE: Site = Site::new(&Policy::new("fetch", module_path!()).with_retries(3).idempotent());
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut calls = 0;
//! let r: Result<u32, Busy> = execute(&SITE, Hooks::new(), || {
//!     calls += 1;
//!     let n = calls;
//!     async move { if n < 3 { Err(Busy) } else { Ok(n) } }
//! })
//! .await;
//! assert_eq!(r.unwrap(), 3);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::InvalidConfig;
use crate::backoff::{Backoff, RetryAfter, Rng};
use crate::breaker::{Breaker, Outcome, Ticket};
use crate::budget::RetryBudget;
use crate::classify::{Classify, ErrorClass, Rejected};
use crate::clock::{self, Instant};
use crate::context::{self, CorrelationId};
use crate::events::{self, GiveUpReason, RuntimeEvent};
use crate::metrics;
use crate::registry::{self, Effective, SiteState};
use crate::store::{Permit, StoreFuture};

mod retry_ok;
mod slot;

#[doc(hidden)]
pub use self::retry_ok::OkHook;
pub use self::retry_ok::RetryOk;
#[doc(hidden)]
pub use self::slot::{
    Attempt, AttemptTimer, HeldKey, KeySlot, NoKey, NoTimer, SiteDef, SiteRef, Slot, Timer, Typed,
};

/// A call site's policy: what `#[resilient(...)]` says, as a `const`.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::engine::Policy;
///
/// const P: Policy = Policy::new("list_devices", "graph::client")
///     .with_retries(5)
///     .idempotent()
///     .with_breaker("graph")
///     .with_timeout(Duration::from_secs(10));
/// assert_eq!(P.retries, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// The operation's name (the fn's name).
    pub operation: &'static str,
    /// The module path of the fn.
    pub module: &'static str,
    /// The site's name when it is not `<module>::<operation>` (`#[resilient(name = "...")]`);
    /// see [`Policy::site_name`].
    pub name: Option<&'static str>,
    /// Whether the fn is blocking (a plain `fn`): no `timeout` or `deadline` can apply to it,
    /// from the attribute or from a configuration.
    pub blocking: bool,
    /// Extra attempts after the first.
    pub retries: u32,
    /// The backoff schedule.
    pub backoff: Backoff,
    /// How the server's Retry-After hint is honoured.
    pub retry_after: RetryAfter,
    /// Whether the operation is safe to repeat.
    pub idempotent: bool,
    /// Whether an idempotency key is computed per call.
    pub idempotency_key: bool,
    /// The breaker's name.
    pub breaker: Option<&'static str>,
    /// Whether the breaker is one per key.
    pub keyed_breaker: bool,
    /// Whether the keys of the per-key breaker are secrets, shown only redacted.
    pub sensitive_key: bool,
    /// The per-attempt timeout.
    pub timeout: Option<Duration>,
    /// The whole call's deadline.
    pub deadline: Option<Duration>,
    /// The rate limiter's name.
    pub rate_limit: Option<&'static str>,
    /// The bulkhead's name.
    pub bulkhead: Option<&'static str>,
    /// The retry budget's name when it is not the default (see [`Policy::budget_name`]).
    pub budget: Option<&'static str>,
    /// The `connector` label of the site's metrics and events when it is not the default (see
    /// [`Policy::connector_name`]).
    pub connector: Option<&'static str>,
}

impl Policy {
    /// A policy with no retries and nothing else: one attempt, counted.
    pub const fn new(operation: &'static str, module: &'static str) -> Policy {
        Policy {
            operation,
            module,
            name: None,
            blocking: false,
            retries: 0,
            backoff: Backoff::new(),
            retry_after: RetryAfter::new(),
            idempotent: false,
            idempotency_key: false,
            breaker: None,
            keyed_breaker: false,
            sensitive_key: false,
            timeout: None,
            deadline: None,
            rate_limit: None,
            bulkhead: None,
            budget: None,
            connector: None,
        }
    }

    /// Names the site: what `[sites."<name>"]` tables, reports and the startup check call it,
    /// instead of `<module>::<operation>`. Two sites may not share a name (the startup check
    /// refuses it): give one of two methods of the same name in one module a name of its own.
    /// What `#[resilient(name = "...")]` sets.
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// const P: Policy = Policy::new("list", "graph::users").with_name("graph::users::list_all");
    /// assert_eq!(P.site_name(), "graph::users::list_all");
    /// assert_eq!(Policy::new("list", "graph::users").site_name(), "graph::users::list");
    /// ```
    pub const fn with_name(mut self, name: &'static str) -> Policy {
        self.name = Some(name);
        self
    }

    /// Marks the fn blocking: a configuration cannot give it a `timeout` or a `deadline` (a
    /// blocking call cannot be interrupted). `#[resilient]` sets it on a plain `fn`.
    pub const fn blocking(mut self) -> Policy {
        self.blocking = true;
        self
    }

    /// Spends the named retry budget: sites that name the same budget share its tokens. What
    /// `#[resilient(budget = "...")]` sets; see [`Policy::budget_name`] for the default.
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// const P: Policy = Policy::new("list", "graph::users").with_breaker("graph").with_budget("graph-reads");
    /// assert_eq!(P.budget_name(), "graph-reads");
    /// ```
    pub const fn with_budget(mut self, name: &'static str) -> Policy {
        self.budget = Some(name);
        self
    }

    /// Labels the site's metrics and events with `connector = name`: the sites of one
    /// connector (one crate, usually) share the label, so that their series add up. What
    /// `#[resilient(connector = "...")]` sets; `#[resilient]` without it sets the crate's name.
    /// A policy made by hand (for [`execute`] or a [tower layer](crate::tower)) without it is
    /// labelled with the first segment of its module path: the crate's name, when the module is
    /// `module_path!()`. See [`Policy::connector_name`].
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// const P: Policy = Policy::new("list", "graph::users").with_connector("msgraph");
    /// assert_eq!(P.connector_name(), "msgraph");
    /// ```
    pub const fn with_connector(mut self, name: &'static str) -> Policy {
        self.connector = Some(name);
        self
    }

    /// The `connector` label: [`Policy::connector`] when set, else the first segment of
    /// [`Policy::module`] (the crate's name, for `module_path!()`).
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// assert_eq!(Policy::new("list", "graph_connector::users").connector_name(), "graph_connector");
    /// assert_eq!(Policy::new("list", "graph").with_breaker("msgraph").connector_name(), "graph");
    /// ```
    pub fn connector_name(&self) -> &'static str {
        match self.connector {
            Some(c) => c,
            None => self.module.split("::").next().unwrap_or(self.module),
        }
    }

    /// The site's name: [`Policy::name`] when set, else `<module>::<operation>`.
    pub fn site_name(&self) -> std::borrow::Cow<'static, str> {
        match self.name {
            Some(n) => n.into(),
            None => format!("{}::{}", self.module, self.operation).into(),
        }
    }

    /// The retry budget's name: [`Policy::budget`] when set, else the breaker's name, else the
    /// site's name ([`Policy::site_name`]).
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// assert_eq!(Policy::new("list", "graph::users").with_breaker("graph").budget_name(), "graph");
    /// assert_eq!(Policy::new("list", "graph::users").budget_name(), "graph::users::list");
    /// ```
    pub fn budget_name(&self) -> std::borrow::Cow<'static, str> {
        match self.budget.or(self.breaker) {
            Some(n) => n.into(),
            None => self.site_name(),
        }
    }

    /// Whether the site is safe to repeat (`idempotent` or an idempotency key): the only sites
    /// a configuration may give retries.
    pub const fn safe_to_repeat(&self) -> bool {
        self.idempotent || self.idempotency_key
    }

    /// Sets the extra attempts after the first.
    pub const fn with_retries(mut self, retries: u32) -> Policy {
        self.retries = retries;
        self
    }

    /// Sets the backoff schedule.
    pub const fn with_backoff(mut self, backoff: Backoff) -> Policy {
        self.backoff = backoff;
        self
    }

    /// Sets how Retry-After is honoured.
    pub const fn with_retry_after(mut self, retry_after: RetryAfter) -> Policy {
        self.retry_after = retry_after;
        self
    }

    /// Marks the operation safe to repeat.
    pub const fn idempotent(mut self) -> Policy {
        self.idempotent = true;
        self
    }

    /// Marks that the call computes an idempotency key.
    pub const fn with_idempotency_key(mut self) -> Policy {
        self.idempotency_key = true;
        self
    }

    /// Uses the named breaker.
    pub const fn with_breaker(mut self, name: &'static str) -> Policy {
        self.breaker = Some(name);
        self
    }

    /// Uses one breaker per key (set per call with [`Execution::breaker_key`]).
    pub const fn with_keyed_breaker(mut self) -> Policy {
        self.keyed_breaker = true;
        self
    }

    /// Marks the per-key breaker's keys as secrets (API keys, tenant secrets): logs, events,
    /// [`Rejected::CircuitOpen`], health and metrics show each as `key#` and 16 hex digits (see
    /// [`redacted_key`](crate::redact::redacted_key)), never the key. It marks the whole base, for
    /// every site that uses it, from this site's first call on. What `sensitive_key` sets.
    ///
    /// ```
    /// use resilience_runtime::engine::Policy;
    ///
    /// const P: Policy = Policy::new("users", "okta::client")
    ///     .with_breaker("okta")
    ///     .with_keyed_breaker()
    ///     .with_sensitive_key();
    /// assert!(P.sensitive_key);
    /// ```
    pub const fn with_sensitive_key(mut self) -> Policy {
        self.sensitive_key = true;
        self
    }

    /// Sets the per-attempt timeout.
    pub const fn with_timeout(mut self, timeout: Duration) -> Policy {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the whole call's deadline.
    pub const fn with_deadline(mut self, deadline: Duration) -> Policy {
        self.deadline = Some(deadline);
        self
    }

    /// Uses the named rate limiter.
    pub const fn with_rate_limit(mut self, name: &'static str) -> Policy {
        self.rate_limit = Some(name);
        self
    }

    /// Uses the named bulkhead.
    pub const fn with_bulkhead(mut self, name: &'static str) -> Policy {
        self.bulkhead = Some(name);
        self
    }

    /// Checks the policy by the rules `#[resilient]` applies at compile time (the same rule
    /// implementations, from `resilience-policy`): each value within its bounds, retries marked
    /// safe to repeat, a backoff schedule that holds, a per-attempt `timeout` no longer than the
    /// `deadline`, and a `deadline` that holds the worst-case schedule. A hand-built policy is
    /// checked once, at its site's first call: a violation is logged at ERROR, and the call
    /// runs as written.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_runtime::engine::Policy;
    ///
    /// let ok = Policy::new("list", module_path!()).with_retries(3).idempotent();
    /// assert!(ok.validate().is_ok());
    /// let err = Policy::new("list", module_path!())
    ///     .with_timeout(Duration::from_secs(60))
    ///     .with_deadline(Duration::from_secs(10))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "timeout");
    /// assert!(err.reason().contains("lower `timeout` to at most \"10s\""));
    /// ```
    ///
    /// # Errors
    ///
    /// The first rule the policy breaks, with the attribute key it concerns as the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        use resilience_policy as rules;
        rules::check_retries(self.retries)?;
        rules::check_retries_are_safe(self.retries, self.idempotent, self.idempotency_key)?;
        self.backoff
            .schedule()
            .check()
            .map_err(|v| InvalidConfig::from(v).within("backoff"))?;
        if let Some(t) = self.timeout {
            rules::check_duration("timeout", t)?;
        }
        if let Some(d) = self.deadline {
            rules::check_duration("deadline", d)?;
            if let Some(t) = self.timeout {
                rules::check_timeout_within_deadline(t, d)?;
            }
            rules::check_deadline_fits(d, self.retries, &self.backoff.schedule(), self.timeout)?;
        }
        if self.timeout.is_some() {
            rules::check_needs_async("timeout", self.operation, !self.blocking)?;
        }
        if self.deadline.is_some() {
            rules::check_needs_async("deadline", self.operation, !self.blocking)?;
        }
        if let Some(b) = self.budget {
            rules::check_name("budget", b)?;
        }
        Ok(())
    }

    /// Whether the policy can produce a [`Rejected`].
    pub const fn needs_rejected(&self) -> bool {
        self.breaker.is_some()
            || self.timeout.is_some()
            || self.deadline.is_some()
            || self.rate_limit.is_some()
            || self.bulkhead.is_some()
    }
}

/// A call site: its policy and its cached state. Make it a `static`.
pub struct Site {
    policy: &'static Policy,
    global: OnceLock<Arc<SiteState>>,
    /// Whether the warning of [`Site::check_hooks`] was given.
    warned: std::sync::atomic::AtomicBool,
    /// [`Site::check_policy`] has run.
    validated: std::sync::Once,
    /// Whether the global registry's `[sites]` table overrides the policy: the first attempt's
    /// fast path, which runs at the global registry only, reads it here, at the site's address
    /// (a constant where `#[resilient]` drives the call), rather than through its state.
    overridden_globally: std::sync::atomic::AtomicBool,
}

impl Site {
    /// A site for `policy`.
    pub const fn new(policy: &'static Policy) -> Site {
        Site {
            policy,
            global: OnceLock::new(),
            warned: std::sync::atomic::AtomicBool::new(false),
            validated: std::sync::Once::new(),
            overridden_globally: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the global registry's `[sites]` table overrides the site's policy.
    #[inline(always)]
    pub(crate) fn overridden_globally(&self) -> bool {
        self.overridden_globally
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether the global registry's `[sites]` table overrides the site's policy.
    pub(crate) fn set_overridden_globally(&self, overridden: bool) {
        self.overridden_globally
            .store(overridden, std::sync::atomic::Ordering::Release);
    }

    /// Checks the policy once per site, when the site is first resolved: a hand-built policy
    /// that breaks a rule `#[resilient]` would have refused ([`Policy::validate`]) is logged
    /// at ERROR, and its calls run as written.
    #[cold]
    fn check_policy(&'static self) {
        self.validated.call_once(|| {
            if let Err(e) = self.policy.validate() {
                tracing::error!(
                    operation = self.policy.operation,
                    module = self.policy.module,
                    field = e.field(),
                    "the site's policy breaks a rule: {}",
                    e.reason()
                );
            }
        });
    }

    /// Warns once per site when its policy names a breaker, a timeout, a deadline, a rate limit
    /// or a bulkhead and the hooks of a hand-written call cannot carry the [`Rejected`] they
    /// produce: none of them is applied then. (`#[resilient]` refuses this at compile time.)
    fn check_hooks(&'static self, rejects: bool) {
        // A load before the swap: a site that keeps calling with such hooks writes nothing.
        if rejects
            || !self.policy.needs_rejected()
            || self.warned.load(std::sync::atomic::Ordering::Relaxed)
            || self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        tracing::error!(
            operation = self.policy.operation,
            module = self.policy.module,
            "the policy names a breaker, timeout, deadline, rate limit or bulkhead, but the hooks \
             have no `with_from_rejected`, so none of them is applied; add \
             `Hooks::new().with_from_rejected(E::from_rejected)`"
        );
    }

    /// The site's policy.
    pub fn policy(&self) -> &'static Policy {
        self.policy
    }

    /// The site's state in the global registry.
    #[inline(always)]
    fn global_state(&'static self) -> &'static SiteState {
        self.global.get_or_init(|| {
            self.check_policy();
            crate::Registry::global().site_state(self)
        })
    }

    /// The site's state in the registry in force here, if the site has been called through it
    /// (for what a call's context reports; not on a call's path).
    pub(crate) fn state_here(&'static self) -> Option<StateRef> {
        match registry::scoped_registry() {
            Some(r) if !r.ptr_eq(crate::Registry::global()) => {
                r.called_site(self).map(StateRef::Owned)
            }
            _ => self.global.get().map(|s| StateRef::Static(s)),
        }
    }

    #[inline(always)]
    fn state(&'static self) -> StateRef {
        if let Some(r) = registry::scoped_registry()
            && !r.ptr_eq(crate::Registry::global())
        {
            self.check_policy();
            return StateRef::Owned(r.site_state(self));
        }
        StateRef::Static(self.global_state())
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site").field("policy", self.policy).finish()
    }
}

pub(crate) enum StateRef {
    Static(&'static SiteState),
    Owned(Arc<SiteState>),
}

/// A call's policy, held apart from the call: the attribute's, or a merged one.
enum PolicyRef {
    Static(&'static Policy),
    Shared(Arc<Effective>),
}

impl std::ops::Deref for PolicyRef {
    type Target = Policy;
    #[inline]
    fn deref(&self) -> &Policy {
        match self {
            PolicyRef::Static(p) => p,
            PolicyRef::Shared(e) => &e.policy,
        }
    }
}

impl std::ops::Deref for StateRef {
    type Target = SiteState;
    #[inline]
    fn deref(&self) -> &SiteState {
        match self {
            StateRef::Static(s) => s,
            StateRef::Owned(s) => s,
        }
    }
}

/// A per-site override of the classification, from `retry_on` / `abort_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// Retry this error whatever its class.
    Retry,
    /// Never retry this error (wins over `Retry`).
    Abort,
}

/// A site's hooks as the engine calls them: what a [`Hooks`] holds, for a call returning
/// `Result<T, E>`. Name it to pass hooks around: `fn hooks() -> impl HookSet<u32, MyError>`.
pub trait HookSet<T, E>: Copy {
    /// Whether the runtime may reject: breakers, timeouts, deadlines and limits apply.
    fn rejects(&self) -> bool;
    /// The rejection as the site's error; `None` when the site takes none.
    fn rejected(&self, r: Rejected) -> Option<E>;
    /// The per-site override of the classification of `e`.
    fn override_class(&self, e: &E) -> Option<Override>;
    /// Whether the site has a fallback.
    fn has_fallback(&self) -> bool;
    /// The fallback's result for the last error (`Err(e)` without one).
    fn fallback(&self, e: E) -> Result<T, E>;
    /// Whether the caller refreshes credentials on [`Step::Refresh`].
    fn refresh(&self) -> bool;
    /// Whether the fallback takes `e` (`fallback_on`): counted as a fallback when it does.
    #[inline(always)]
    fn fallback_takes(&self, e: &E) -> bool {
        let _ = e;
        true
    }
    /// The verdict on an attempt's `Ok` (`retry_if_ok`): [`RetryOk::Accept`] without a hook.
    #[inline(always)]
    fn ok_verdict(&self, v: &T) -> RetryOk {
        let _ = v;
        RetryOk::Accept
    }
}

/// A hook the site does not have.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct NoHook;

/// A hook the site has: a fn item or a closure that captures nothing, so zero-sized.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Hook<F>(F);

/// A site's hooks into the user's types: how a [`Rejected`] becomes the site's error, a per-site
/// override of the classification, a fallback, a verdict on an attempt's `Ok`
/// ([`Hooks::with_retry_if_ok`]), and whether the caller refreshes credentials.
///
/// Each hook is a fn item or a closure that captures nothing, known by type: a hook the site
/// does not have costs nothing, and a call holds none of them. `#[resilient]` builds one from its
/// attribute; [`execute`] takes one built by hand.
///
/// ```
/// use resilience_runtime::engine::{Hooks, Override};
/// use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Rejected};
///
/// #[derive(Debug)]
/// enum MyError { Conflict, Rejected(Rejected) }
/// impl Classify for MyError {
///     fn class(&self) -> ErrorClass { ErrorClass::Permanent }
/// }
/// impl CarriesRejected for MyError {
///     fn from_rejected(r: Rejected) -> Self { MyError::Rejected(r) }
///     fn rejected(&self) -> Option<&Rejected> {
///         match self { MyError::Rejected(r) => Some(r), _ => None }
///     }
/// }
///
/// let hooks = Hooks::new()
///     .with_from_rejected(MyError::from_rejected)
///     .with_override(|e: &MyError| matches!(e, MyError::Conflict).then_some(Override::Retry))
///     .with_fallback(|_: MyError| Ok::<u32, MyError>(0));
/// # let _ = hooks;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Hooks<R = NoHook, O = NoHook, F = NoHook, const REFRESH: bool = false, K = NoHook> {
    rejected: R,
    over: O,
    fallback: F,
    retry_ok: K,
}

impl Hooks<NoHook, NoHook, NoHook, false> {
    /// No hooks.
    #[inline(always)]
    pub const fn new() -> Self {
        Hooks {
            rejected: NoHook,
            over: NoHook,
            fallback: NoHook,
            retry_ok: NoHook,
        }
    }
}

impl Default for Hooks<NoHook, NoHook, NoHook, false> {
    fn default() -> Self {
        Hooks::new()
    }
}

impl<R, O, F, const REFRESH: bool, K> Hooks<R, O, F, REFRESH, K> {
    /// How a [`Rejected`] becomes the site's error. Without it, the runtime makes no rejection:
    /// breakers, timeouts, deadlines and limits are not applied, and [`execute`] logs an ERROR
    /// once per site whose policy names one of them.
    #[inline(always)]
    pub fn with_from_rejected<C>(self, c: C) -> Hooks<Hook<C>, O, F, REFRESH, K> {
        Hooks {
            rejected: Hook(c),
            over: self.over,
            fallback: self.fallback,
            retry_ok: self.retry_ok,
        }
    }
    /// The per-site override of the classification.
    #[inline(always)]
    pub fn with_override<C>(self, c: C) -> Hooks<R, Hook<C>, F, REFRESH, K> {
        Hooks {
            rejected: self.rejected,
            over: Hook(c),
            fallback: self.fallback,
            retry_ok: self.retry_ok,
        }
    }
    /// Called with the last error; its result is the call's.
    #[inline(always)]
    pub fn with_fallback<C>(self, c: C) -> Hooks<R, O, Hook<C>, REFRESH, K> {
        Hooks {
            rejected: self.rejected,
            over: self.over,
            fallback: Hook(c),
            retry_ok: self.retry_ok,
        }
    }
    /// A fallback that the caller runs itself on the errors `takes` accepts: the engine counts
    /// each in the site's `fallbacks` and passes the error on, and the caller calls its fallback
    /// with it. What `#[resilient(fallback = .., fallback_on = [..])]` sets, since its fallback
    /// gets the receiver and the arguments (and may be async), which only the caller has.
    ///
    /// ```
    /// use resilience_runtime::engine::{execute, Hooks, Policy, Site};
    /// use resilience_runtime::{Classify, ErrorClass};
    ///
    /// #[derive(Debug)]
    /// enum DbError { Down, Missing }
    /// impl Classify for DbError {
    ///     fn class(&self) -> ErrorClass { ErrorClass::Permanent }
    /// }
    /// static SITE: Site = Site::new(&Policy::new("lookup", module_path!()));
    ///
    /// async fn from_replica(key: &str, _: DbError) -> Result<String, DbError> {
    ///     Ok(format!("replica:{key}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let key = "user-7";
    /// let takes = |e: &DbError| matches!(e, DbError::Down);
    /// let r = match execute(&SITE, Hooks::new().with_fallback_on(takes), || async {
    ///     Err::<String, _>(DbError::Down)
    /// })
    /// .await
    /// {
    ///     Err(e) if takes(&e) => from_replica(key, e).await,
    ///     r => r,
    /// };
    /// assert_eq!(r.unwrap(), "replica:user-7");
    /// # let _ = DbError::Missing;
    /// # }
    /// ```
    #[inline(always)]
    pub fn with_fallback_on<C>(self, takes: C) -> Hooks<R, O, Hook<FallbackOn<C>>, REFRESH, K> {
        Hooks {
            rejected: self.rejected,
            over: self.over,
            fallback: Hook(FallbackOn(takes)),
            retry_ok: self.retry_ok,
        }
    }
    /// Judges each attempt's `Ok`: [`RetryOk::Retry`] or [`RetryOk::RetryAfter`] makes another
    /// attempt under the same retries, budget and deadline, which the policy must allow (the
    /// site must be safe to repeat); when they run out, the last `Ok` is the call's result.
    /// What `#[resilient(retry_if_ok = ..)]` sets.
    ///
    /// ```
    /// use resilience_runtime::engine::{execute, Hooks, Policy, Site};
    /// use resilience_runtime::{Classify, ErrorClass, RetryOk};
    ///
    /// #[derive(Debug)]
    /// struct Down;
    /// impl Classify for Down {
    ///     fn class(&self) -> ErrorClass { ErrorClass::Transient }
    /// }
    /// static SITE: Site = Site::new(&Policy::new("report", module_path!()).with_retries(3).idempotent());
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut polls = 0;
    /// let hooks = Hooks::new().with_retry_if_ok(|status: &u16| {
    ///     if *status == 202 { RetryOk::Retry } else { RetryOk::Accept }
    /// });
    /// let r: Result<u16, Down> = execute(&SITE, hooks, || {
    ///     polls += 1;
    ///     let status = if polls < 3 { 202 } else { 200 };
    ///     async move { Ok(status) }
    /// })
    /// .await;
    /// assert_eq!(r.unwrap(), 200);
    /// # }
    /// ```
    #[inline(always)]
    pub fn with_retry_if_ok<C>(self, c: C) -> Hooks<R, O, F, REFRESH, Hook<C>> {
        Hooks {
            rejected: self.rejected,
            over: self.over,
            fallback: self.fallback,
            retry_ok: Hook(c),
        }
    }
    /// The caller refreshes credentials on an `auth` error ([`Execution::refresh`] sets it).
    #[inline(always)]
    pub fn with_refresh(self) -> Hooks<R, O, F, true, K> {
        Hooks {
            rejected: self.rejected,
            over: self.over,
            fallback: self.fallback,
            retry_ok: self.retry_ok,
        }
    }

    /// No refresh: an `auth` error ends the call ([`execute`] sets it).
    #[inline(always)]
    pub fn without_refresh(self) -> Hooks<R, O, F, false, K> {
        Hooks {
            rejected: self.rejected,
            over: self.over,
            fallback: self.fallback,
            retry_ok: self.retry_ok,
        }
    }
}

/// A `from_rejected` hook, or none.
#[doc(hidden)]
pub trait RejectedHook<E>: Copy {
    /// Whether there is one.
    const PRESENT: bool;
    /// Its result.
    fn call(&self, r: Rejected) -> Option<E>;
}

impl<E> RejectedHook<E> for NoHook {
    const PRESENT: bool = false;
    #[inline(always)]
    fn call(&self, _: Rejected) -> Option<E> {
        None
    }
}

impl<E, C: Fn(Rejected) -> E + Copy> RejectedHook<E> for Hook<C> {
    const PRESENT: bool = true;
    #[inline(always)]
    fn call(&self, r: Rejected) -> Option<E> {
        Some((self.0)(r))
    }
}

/// An override hook, or none.
#[doc(hidden)]
pub trait OverrideHook<E>: Copy {
    /// Its verdict on `e`.
    fn call(&self, e: &E) -> Option<Override>;
}

impl<E> OverrideHook<E> for NoHook {
    #[inline(always)]
    fn call(&self, _: &E) -> Option<Override> {
        None
    }
}

impl<E, C: Fn(&E) -> Option<Override> + Copy> OverrideHook<E> for Hook<C> {
    #[inline(always)]
    fn call(&self, e: &E) -> Option<Override> {
        (self.0)(e)
    }
}

/// A fallback hook, or none.
#[doc(hidden)]
pub trait FallbackHook<T, E>: Copy {
    /// Whether there is one.
    const PRESENT: bool;
    /// Its result for `e` (`Err(e)` without one).
    fn call(&self, e: E) -> Result<T, E>;
    /// Whether it takes `e`.
    #[inline(always)]
    fn takes(&self, e: &E) -> bool {
        let _ = e;
        Self::PRESENT
    }
}

/// A fallback the caller runs (see [`Hooks::with_fallback_on`]): the errors it takes.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct FallbackOn<C>(C);

impl<T, E, C: Fn(&E) -> bool + Copy> FallbackHook<T, E> for Hook<FallbackOn<C>> {
    const PRESENT: bool = true;
    #[inline(always)]
    fn call(&self, e: E) -> Result<T, E> {
        Err(e)
    }
    #[inline(always)]
    fn takes(&self, e: &E) -> bool {
        (self.0.0)(e)
    }
}

impl<T, E> FallbackHook<T, E> for NoHook {
    const PRESENT: bool = false;
    #[inline(always)]
    fn call(&self, e: E) -> Result<T, E> {
        Err(e)
    }
}

impl<T, E, C: Fn(E) -> Result<T, E> + Copy> FallbackHook<T, E> for Hook<C> {
    const PRESENT: bool = true;
    #[inline(always)]
    fn call(&self, e: E) -> Result<T, E> {
        (self.0)(e)
    }
}

impl<T, E, R, O, F, const REFRESH: bool, K> HookSet<T, E> for Hooks<R, O, F, REFRESH, K>
where
    R: RejectedHook<E>,
    O: OverrideHook<E>,
    F: FallbackHook<T, E>,
    K: OkHook<T>,
{
    #[inline(always)]
    fn rejects(&self) -> bool {
        R::PRESENT
    }
    #[inline(always)]
    fn rejected(&self, r: Rejected) -> Option<E> {
        self.rejected.call(r)
    }
    #[inline(always)]
    fn override_class(&self, e: &E) -> Option<Override> {
        self.over.call(e)
    }
    #[inline(always)]
    fn has_fallback(&self) -> bool {
        F::PRESENT
    }
    #[inline(always)]
    fn fallback(&self, e: E) -> Result<T, E> {
        self.fallback.call(e)
    }
    #[inline(always)]
    fn refresh(&self) -> bool {
        REFRESH
    }
    #[inline(always)]
    fn fallback_takes(&self, e: &E) -> bool {
        self.fallback.takes(e)
    }
    #[inline(always)]
    fn ok_verdict(&self, v: &T) -> RetryOk {
        self.retry_ok.call(v)
    }
}

/// What comes after an attempt of a [`Slot`].
#[doc(hidden)]
#[derive(Debug)]
pub enum Step<T, E> {
    /// Return `Ok` with this value. (`Ok` and `Err` are apart, not one `Result`, so that the
    /// caller moves only the value it returns.)
    Ok(T),
    /// Return `Err` with this error.
    Err(E),
    /// Wait this long, then make another attempt.
    Wait(Duration),
    /// Refresh credentials, then make another attempt; on a refresh error call [`Call::fail`].
    Refresh,
    /// Make another attempt: the backoff is already waited out ([`Slot`]'s attempts wait it
    /// out themselves).
    Retry,
}

/// What the gate before an attempt decided.
pub(crate) enum Gate<T, E> {
    /// Make the attempt.
    Pass,
    /// Wait this long for a rate-limit permit, then pass the gate again.
    Wait(Duration),
    /// Await a store's answer to the limiter (see [`crate::store`]), then go on through the gate.
    Ask(StoreFuture<Result<(), Duration>>),
    /// End the call with this result, without an attempt.
    End(Result<T, E>),
}

/// `Call::flags`: the call holds a bulkhead slot.
const IN_BULKHEAD: u8 = 1;
/// `Call::flags`: the call has produced its result (counted in the metrics).
const ENDED: u8 = 2;
/// `Call::clock`: the call's latency is recorded.
const CLOCK_LATENCY: u8 = 1;
/// `Call::clock`: the call has a deadline, `policy.deadline` after `started`.
const CLOCK_DEADLINE: u8 = 2;
/// `Call::clock`: the caller refreshes credentials on [`Step::Refresh`] (`Hooks::with_refresh`).
/// Kept here rather than in `flags` so that the drop of an ended call compares `flags` alone.
const HOOK_REFRESH: u8 = 4;
/// `Call::flags`: the call owns something on the heap (`keyed` or `cold`) that its
/// `Drop` gives back; without it, dropping an ended call is one compare.
const OWNS: u8 = 8;
/// `Call::flags`: a store's round trip granted the rate-limit permit of the gate in progress
/// (the gate goes on past the limiter without asking again).
const PERMITTED: u8 = 16;
/// `Call::flags`: `Call::retry`'s generator is seeded (at the first wait the call draws).
const SEEDED: u8 = 32;
/// `Call::flags`: the call runs under a policy other than its attribute's (`Call::over` holds
/// it; `OWNS` is set too). A bit of `flags`, which the success path tests anyway, so that a call
/// nothing overrides pays a bit test for it.
const OVER: u8 = 64;

/// One logical call in progress, held by a [`Slot`]; see the [module docs](self).
///
/// Kept small, because it lives in the caller's future: what only a traced call, a call with an
/// idempotency key or a call that retries needs is in one box that the happy path never
/// allocates.
///
/// `keyed` and `cold` are `ManuallyDrop`, released by `Drop` when `OWNS` is set, so that the drop
/// of a call on the happy path is inline: it compares the ticket and one byte.
pub(crate) struct Call<T, E, H> {
    state: StateRef,
    /// The call's policy when it is not the attribute's (a `[sites]` table, a per-call
    /// override): read through [`Call::policy`]. Released by `Drop` under `OWNS`, as `keyed` is.
    over: ManuallyDrop<Option<Arc<Effective>>>,
    /// The hooks; `refresh` is also `HOOK_REFRESH` in `clock`.
    hooks: H,
    types: PhantomData<fn() -> (T, E)>,
    /// The per-key breaker chosen by [`Call::set_breaker_key`]; else the site's breaker.
    keyed: ManuallyDrop<Option<Arc<Breaker>>>,
    ticket: Option<Ticket>,
    /// `IN_BULKHEAD`, `ENDED`, `OWNS`.
    flags: u8,
    timed_out: Option<TimeoutKind>,
    /// Attempts made, and retries among them: small, so that these and the bytes above fit
    /// beside the ticket in 16 bytes (a policy's retries are at most 20; the counts saturate).
    attempt: u16,
    retries: u16,
    /// Credential refreshes made: at most `retries + 1` in one call.
    refreshes: u8,
    /// The correlation id, assigned on first use (`CorrelationId::UNSET` until then): a call
    /// that nobody traces, asks about or logs never takes one.
    correlation: std::cell::Cell<CorrelationId>,
    /// `CLOCK_LATENCY`, `CLOCK_DEADLINE`: what `started` is read for; and `HOOK_REFRESH`. Set
    /// once, at the start.
    clock: u8,
    /// When the call started, in the clock's nanoseconds, when `clock` says it was read.
    started: u64,
    /// The jitter's state and the last wait: kept here, not in `cold`, so that a call that
    /// retries allocates nothing.
    retry: RetryState,
    cold: ManuallyDrop<Option<Box<Cold>>>,
}

/// What a call needs only off the happy path: allocated when a subscriber wants the call's
/// span, when the call has an idempotency key, at its first retry, or when it waits (for a
/// rate-limit permit, or out a backoff).
#[derive(Default)]
struct Cold {
    /// The attempt's timer when the attempt's future holds none (the attribute has no `timeout`
    /// or `deadline`) and the call's policy gives it one (see `Call::arm_spare_timer`).
    spare_timer: Option<Pin<Box<slot::Timer>>>,
    span: Option<tracing::Span>,
    key: Option<Arc<str>>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A store's round trip for the gate's rate-limit permit, in progress (while it lasts,
    /// `wait` is the call's deadline, if it has one).
    ask: Option<StoreFuture<Result<(), Duration>>>,
    /// Waits for capacity so far (a rate limit or a bulkhead refused the gate), and their sum.
    capacity_waits: u32,
    capacity_waited: Duration,
}

/// What a call that waits draws its jitter from, and the wait before.
struct RetryState {
    /// The last wait in nanoseconds; 0 before the first (no wait is shorter than 1 ms).
    prev_wait: u64,
    /// Valid once `Call::flags` has `SEEDED`.
    rng: Rng,
}

impl RetryState {
    const NEW: RetryState = RetryState {
        prev_wait: 0,
        rng: Rng::seeded(0),
    };

    fn prev_wait(&self) -> Option<Duration> {
        (self.prev_wait != 0).then(|| Duration::from_nanos(self.prev_wait))
    }
}

/// A generator for a call's jitter: from the registry's seed when it has one (tests), else from
/// entropy.
fn seed(state: &SiteState) -> Rng {
    match state.seed {
        Some(s) => Rng::seeded(
            s ^ state
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ),
        None => Rng::from_entropy(),
    }
}

impl<T, E, H> fmt::Debug for Call<T, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("operation", &self.site().policy.operation)
            .field("attempt", &self.attempt)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl<T, E: Classify, H: HookSet<T, E>> Call<T, E, H> {
    /// Starts a call at `site` with any [`HookSet`].
    #[inline(always)]
    pub(crate) fn with_hooks(site: &'static Site, hooks: H) -> Self {
        let state = site.state();
        let over = state.effective(hooks.rejects());
        let mut call = Call::bare(state, hooks, context::correlation_for_new_call());
        if over.is_some() {
            *call.over = over;
            call.flags |= OWNS | OVER;
        }
        let needs_deadline = call.policy().deadline.is_some() && hooks.rejects();
        let clock = if metrics::latency_enabled() {
            CLOCK_LATENCY
        } else {
            0
        } | if needs_deadline { CLOCK_DEADLINE } else { 0 };
        if clock != 0 {
            call.clock |= clock;
            call.started = start_clock();
        }
        // The level check inline (a load and a compare); the span, and the check of the
        // subscriber's interest in it, out of line.
        if slot::span_wanted()
            && let Some(cold) = traced(site.policy, &call.correlation)
        {
            *call.cold = Some(cold);
            call.flags |= OWNS;
        }
        call
    }

    /// A call at `state` before anything: no ticket, no clock, no span, nothing owned.
    #[inline(always)]
    fn bare(state: StateRef, hooks: H, correlation: CorrelationId) -> Self {
        Call {
            state,
            over: ManuallyDrop::new(None),
            hooks,
            types: PhantomData,
            keyed: ManuallyDrop::new(None),
            ticket: None,
            flags: 0,
            timed_out: None,
            attempt: 0,
            retries: 0,
            refreshes: 0,
            correlation: std::cell::Cell::new(correlation),
            clock: if hooks.refresh() { HOOK_REFRESH } else { 0 },
            started: 0,
            retry: RetryState::NEW,
            cold: ManuallyDrop::new(None),
        }
    }

    /// The call that [`Slot`]'s fast path ran its first attempt for: at the global registry, not
    /// traced, timed or nested, its breaker's `ticket` taken, the attempt started.
    fn started_fast(
        hooks: H,
        state: &'static SiteState,
        ticket: Option<Ticket>,
        correlation: CorrelationId,
        keyed: Option<Arc<Breaker>>,
    ) -> Self {
        let mut call = Call::bare(StateRef::Static(state), hooks, correlation);
        call.ticket = ticket;
        if let Some(b) = keyed {
            call.set_keyed(b);
        }
        call
    }

    /// Sets the call's idempotency key: the same on every attempt, readable in the body.
    pub(crate) fn set_idempotency_key(&mut self, key: String) {
        self.cold().key = Some(key.into());
    }

    /// Chooses the per-key breaker for this call (for `breaker_key = expr`).
    pub(crate) fn set_breaker_key(&mut self, key: &str) {
        if let Some(k) = &self.state.keyed {
            let b = k.get(key);
            self.set_keyed(b);
        }
    }

    /// Makes `b` the call's breaker (a key's, looked up before the call started).
    pub(crate) fn set_keyed(&mut self, b: Arc<Breaker>) {
        *self.keyed = Some(b);
        self.flags |= OWNS;
    }

    /// The gate, waiting (in the call's cold state) for a rate-limit permit when it must:
    /// `Err` with the call's final result when the call ends before the attempt.
    fn poll_gate(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Result<T, E>>> {
        loop {
            let gate = if let Some(ask) = self.cold.as_mut().and_then(|c| c.ask.as_mut()) {
                match ask.as_mut().poll(cx) {
                    Poll::Ready(answer) => {
                        self.end_ask();
                        self.answered(answer)
                    }
                    Poll::Pending => {
                        // The call's deadline, when it has one, bounds the round trip: past it,
                        // the call is rejected (its ticket given back), as at any gate.
                        let w = self.wait().map(|w| w.as_mut().poll(cx));
                        if !matches!(w, Some(Poll::Ready(()))) {
                            return Poll::Pending;
                        }
                        self.end_ask();
                        self.release_ticket();
                        let deadline = self.policy().deadline.unwrap_or_default();
                        self.reject(Rejected::DeadlineExceeded { deadline })
                    }
                }
            } else {
                if let Some(w) = self.wait() {
                    std::task::ready!(w.as_mut().poll(cx));
                    self.end_wait();
                }
                self.gate()
            };
            match gate {
                Gate::Pass => return Poll::Ready(Ok(())),
                Gate::End(r) => return Poll::Ready(Err(r)),
                Gate::Wait(d) => self.start_wait(d),
                Gate::Ask(ask) => self.start_ask(ask),
            }
        }
    }

    /// The gate of a blocking call, sleeping (with the registry's blocking sleep) for capacity
    /// when it must: `Err` with the call's final result when the call ends before the attempt.
    #[inline(always)]
    pub(crate) fn begin_blocking(&mut self) -> Result<(), Result<T, E>> {
        let mut gate = self.gate();
        loop {
            gate = match gate {
                Gate::Pass => return Ok(()),
                Gate::End(r) => return Err(r),
                Gate::Wait(d) => {
                    self.sleep_blocking(d);
                    self.gate()
                }
                // The store bounds its own round trip; the deadline is checked after it.
                Gate::Ask(ask) => {
                    let answer = crate::store::block_on(ask);
                    self.answered(answer)
                }
            }
        }
    }

    #[inline(always)]
    fn gate(&mut self) -> Gate<T, E> {
        if !self.hooks.rejects() {
            return Gate::Pass;
        }
        if self.clock & CLOCK_DEADLINE == 0 && self.state.simple_gate {
            match self.breaker() {
                None => return Gate::Pass,
                Some(b) => {
                    if let Ok(t) = b.acquire() {
                        self.ticket = Some(t);
                        return Gate::Pass;
                    }
                }
            }
        }
        self.gate_slow()
    }

    #[cold]
    #[inline(never)]
    fn gate_slow(&mut self) -> Gate<T, E> {
        if !self.hooks.rejects() {
            return Gate::Pass;
        }
        let deadline_at = self.deadline_at();
        if deadline_at != 0 && clock::now_nanos() >= deadline_at {
            let d = self.policy().deadline.unwrap_or_default();
            return self.reject(Rejected::DeadlineExceeded { deadline: d });
        }
        // A ticket already held was taken by this gate before a store's round trip.
        if self.ticket.is_none()
            && let Some(b) = self.breaker()
        {
            match b.acquire() {
                Ok(t) => self.ticket = Some(t),
                Err(retry_in) => {
                    let r = Rejected::CircuitOpen {
                        breaker: b.name().clone(),
                        retry_in,
                    };
                    return self.circuit_open(r, retry_in);
                }
            }
        }
        if self.flags & PERMITTED == 0
            && let Some((_, limiter)) = &self.state.limiter
        {
            // A per-key site draws on its key's permits (a tenant's quota), others on the name's.
            // The key itself, even when it is sensitive: a map key, never shown.
            let key = self.keyed.as_ref().and_then(|b| b.raw_key());
            match limiter.with(|l| l.acquire(key)) {
                Permit::Granted => self.state.counters.rate(true),
                Permit::Refused(wait) => return self.rate_limited(wait),
                Permit::Ask(ask) => return Gate::Ask(ask),
            }
        }
        if let Some((name, bulkhead)) = &self.state.bulkhead {
            if !bulkhead.with(|b| b.try_enter()) {
                let r = Rejected::BulkheadFull {
                    bulkhead: name.clone(),
                };
                self.release_ticket();
                return self.wait_for_capacity(r, None);
            }
            self.flags |= IN_BULKHEAD;
        }
        self.flags &= !PERMITTED;
        Gate::Pass
    }

    /// The rate limiter refused a permit for `wait`: the call waits for capacity.
    fn rate_limited(&mut self, wait: Duration) -> Gate<T, E> {
        self.state.counters.rate(false);
        let Some((name, _)) = &self.state.limiter else {
            return Gate::Wait(wait);
        };
        let r = Rejected::RateLimited {
            limiter: name.clone(),
            retry_in: wait,
        };
        self.release_ticket();
        self.wait_for_capacity(r, Some(wait))
    }

    /// A store answered the gate's round trip: the gate goes on past the limiter, or waits for
    /// capacity.
    fn answered(&mut self, answer: Result<(), Duration>) -> Gate<T, E> {
        match answer {
            Ok(()) => {
                self.state.counters.rate(true);
                self.flags |= PERMITTED;
                self.gate()
            }
            Err(wait) => self.rate_limited(wait),
        }
    }

    /// Starts awaiting a store's round trip, bounded by the call's deadline.
    fn start_ask(&mut self, ask: StoreFuture<Result<(), Duration>>) {
        let deadline_at = self.deadline_at();
        if deadline_at != 0 {
            let left = deadline_at.saturating_sub(clock::now_nanos());
            self.start_wait(Duration::from_nanos(left));
        }
        self.cold().ask = Some(ask);
    }

    /// The round trip is over (answered, or abandoned at the deadline).
    fn end_ask(&mut self) {
        if let Some(c) = self.cold.as_mut() {
            c.ask = None;
            c.wait = None;
        }
    }

    /// The breaker refused the call. An open circuit is not retried, unless the site lists the
    /// rejection in `retry_on`: then it is retried like a failure (a retry spent, the budget
    /// asked), after at least the breaker's remaining cooldown.
    fn circuit_open(&mut self, r: Rejected, retry_in: Duration) -> Gate<T, E> {
        let Some(e) = self.retried_rejection(&r) else {
            return self.reject(r);
        };
        // The error in hand is no attempt's timeout (see `Call::end_with`).
        self.timed_out = None;
        match self.decide_failure(e, retry_in) {
            Step::Wait(d) => Gate::Wait(d),
            Step::Retry | Step::Refresh => Gate::Wait(Duration::ZERO),
            Step::Ok(v) => Gate::End(Ok(v)),
            Step::Err(e) => Gate::End(Err(e)),
        }
    }

    /// A rate limit or a bulkhead refused the call: nothing was sent, so it is no attempt. The
    /// call waits for capacity (the limiter's `hint`, else the backoff schedule) within its
    /// deadline, or without one within the site's worst-case retry schedule, then passes the
    /// gate again; when capacity cannot come in time it ends with the rejection. A wait spends
    /// no retry and no budget, records nothing on the breaker and needs no `idempotent`.
    fn wait_for_capacity(&mut self, r: Rejected, hint: Option<Duration>) -> Gate<T, E> {
        let p = self.policy_ref();
        let deadline_at = self.deadline_at();
        let wait = match hint {
            Some(w) => w,
            None => {
                let n = self.cold().capacity_waits;
                let prev = self.retry.prev_wait();
                p.backoff.delay(n, prev, self.rng())
            }
        };
        let cold = self.cold();
        let fits = if deadline_at != 0 {
            clock::now_nanos().saturating_add(clock::nanos(wait)) < deadline_at
        } else {
            cold.capacity_waited.saturating_add(wait) <= p.backoff.worst_case_total(p.retries)
        };
        if !fits {
            return self.reject(r);
        }
        cold.capacity_waits = cold.capacity_waits.saturating_add(1);
        cold.capacity_waited = cold.capacity_waited.saturating_add(wait);
        self.state.counters.capacity_wait();
        if let Rejected::RateLimited { .. } = r {
            self.state.counters.rate_limit_wait(wait);
        }
        tracing::debug!(
            parent: self.span_id(),
            operation = p.operation,
            rejected = r.kind(),
            wait_ms = wait.as_millis() as u64,
            "waiting for capacity before the attempt"
        );
        Gate::Wait(wait)
    }

    fn reject(&mut self, r: Rejected) -> Gate<T, E> {
        self.state.counters.rejected(r.index());
        tracing::warn!(
            parent: self.span_id(),
            operation = self.site().policy.operation,
            rejected = r.kind(),
            correlation_id = %self.correlation_or_default(),
            "{r}"
        );
        match self.hooks.rejected(r) {
            Some(e) => {
                self.emit_gave_up(&e, GiveUpReason::Rejected);
                Gate::End(self.finish_err(e))
            }
            // Only a site that takes rejections is rejected (`Call::gate`).
            None => Gate::Pass,
        }
    }

    fn release_ticket(&mut self) {
        if let Some(t) = self.ticket.take()
            && let Some(b) = self.breaker()
        {
            b.release(t);
        }
    }

    /// An attempt starts. (The attempt's number is a field of each event that concerns it, not
    /// of the call's span: a span field recorded again is printed again by `tracing`'s `fmt`, as
    /// `attempt=1 attempt=2`.)
    #[inline(always)]
    fn start_attempt(&mut self) {}

    #[inline]
    fn attempt_limit(&self) -> Option<(Instant, TimeoutKind)> {
        if !self.hooks.rejects() {
            return None;
        }
        let by_timeout = self
            .policy()
            .timeout
            .and_then(|t| Instant::now().checked_add(t));
        if self.clock & CLOCK_DEADLINE == 0 {
            return by_timeout.map(|t| (t, TimeoutKind::Attempt));
        }
        let d = clock::instant_at(self.deadline_at());
        match by_timeout {
            Some(t) if t <= d => Some((t, TimeoutKind::Attempt)),
            _ => Some((d, TimeoutKind::Deadline)),
        }
    }

    /// Runs the credential refresh that [`Step::Refresh`] asked for, under the call's deadline:
    /// the deadline bounds everything inside the call, a hook that hangs included.
    ///
    /// # Errors
    ///
    /// The call's final result, when the refresh failed (see [`Call::fail`]) or the deadline
    /// passed during it (the deadline's rejection, through the fallback if there is one).
    pub(crate) async fn refresh<F: Future<Output = Result<(), E>>>(
        &mut self,
        refresh: F,
    ) -> Result<(), Result<T, E>> {
        let deadline_at = self.deadline_at();
        let refreshed = if deadline_at == 0 {
            refresh.await
        } else {
            match tokio::time::timeout_at(clock::instant_at(deadline_at), refresh).await {
                Ok(r) => r,
                Err(_) => {
                    // Cut short: no fresh credentials came of it.
                    self.state.counters.refresh(false);
                    return self.deadline_passed();
                }
            }
        };
        self.refreshed(refreshed)
    }

    /// [`Call::refresh`] for a blocking call: the hook has returned `refreshed` (a blocking hook
    /// cannot be stopped; a deadline it overran ends the call at the next gate).
    ///
    /// # Errors
    ///
    /// As [`Call::refresh`].
    pub(crate) fn refreshed(&mut self, refreshed: Result<(), E>) -> Result<(), Result<T, E>> {
        self.state.counters.refresh(refreshed.is_ok());
        refreshed.map_err(|e| self.fail(e))
    }

    /// The deadline passed outside an attempt: the call ends with its rejection.
    #[cold]
    fn deadline_passed(&mut self) -> Result<(), Result<T, E>> {
        let deadline = self.policy().deadline.unwrap_or_default();
        match self.hooks.rejected(Rejected::DeadlineExceeded { deadline }) {
            Some(e) => {
                // The error in hand is the deadline's rejection (see `Call::end_with`).
                self.timed_out = Some(TimeoutKind::Deadline);
                Err(self.end_with(e, ErrorClass::Transient, GiveUpReason::Deadline))
            }
            // A call has a deadline only when its site takes rejections (`CLOCK_DEADLINE`).
            None => Ok(()),
        }
    }

    /// Ends the call with an error that came from outside an attempt (a failed refresh).
    pub(crate) fn fail(&mut self, error: E) -> Result<T, E> {
        self.emit_gave_up(&error, GiveUpReason::RefreshFailed);
        self.state.counters.error(error.class());
        self.finish_err(error)
    }

    fn sleep_blocking(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        match &self.state.sleep {
            Some(s) => s(d),
            None => std::thread::sleep(d),
        }
    }

    #[inline(always)]
    fn decide(&mut self, result: Result<T, E>) -> Step<T, E> {
        if self.flags & IN_BULKHEAD != 0 {
            self.leave_bulkhead();
        }
        match result {
            Ok(v) => {
                // `RetryOk::Accept`, inline, for hooks without `retry_if_ok`.
                let verdict = self.hooks.ok_verdict(&v);
                self.decide_ok(v, verdict)
            }
            Err(e) => self.decide_err(e),
        }
    }

    /// The decision after an `Ok` judged `verdict`; see [`Call::decide_ok_retry`].
    #[inline(always)]
    fn decide_ok(&mut self, v: T, verdict: RetryOk) -> Step<T, E> {
        // Compiled out for hooks without `retry_if_ok`.
        if !matches!(verdict, RetryOk::Accept)
            && let Some(wait) = self.decide_ok_retry(verdict)
        {
            return Step::Wait(wait);
        }
        let admitted = self
            .ticket
            .take()
            .and_then(|t| self.breaker().map(|b| (b, t)));
        slot::succeeded_with(&self.state, self.budget(), admitted, self.retries > 0);
        self.flags |= ENDED;
        if self.clock & CLOCK_LATENCY != 0 {
            self.record_latency();
        }
        Step::Ok(v)
    }

    #[cold]
    #[inline(never)]
    fn leave_bulkhead(&mut self) {
        self.flags &= !IN_BULKHEAD;
        if let Some((_, b)) = &self.state.bulkhead {
            b.with(|b| b.leave());
        }
    }

    #[cold]
    #[inline(never)]
    fn decide_err(&mut self, e: E) -> Step<T, E> {
        // Kept until the next attempt starts: a call that ends with this error ends with the
        // timeout's rejection, and is counted as one (`Call::end_with`).
        let timed_out = self.timed_out;
        let class = if timed_out.is_some() {
            ErrorClass::Transient
        } else {
            e.class()
        };
        if let Some(t) = self.ticket.take()
            && let Some(b) = self.breaker()
        {
            // A timeout is the dependency's silence: a failure, whatever the error says.
            let outcome = match timed_out {
                Some(_) => Outcome::Failure,
                None => e.breaker_outcome().unwrap_or(class.breaker_outcome()),
            };
            b.record(t, outcome);
        }
        if class == ErrorClass::Throttled {
            self.pause_limiter(e.retry_after());
        }
        let deadline = timed_out == Some(TimeoutKind::Deadline);
        self.decide_failure_as(e, class, deadline, Duration::ZERO)
    }

    /// A throttled attempt's hint pauses the site's whole named limiter (the server throttles
    /// the app or tenant, not the operation), capped at the longest hint the site honours: a
    /// longer one ends this call, and must not stall its siblings for longer than that.
    fn pause_limiter(&self, hint: Option<Duration>) {
        let (Some(hint), Some((name, limiter))) = (hint, &self.state.limiter) else {
            return;
        };
        let p = self.site().policy;
        let for_ = hint.min(p.retry_after.max);
        // The same key the gate draws permits for.
        let key = self.keyed.as_ref().and_then(|b| b.raw_key());
        limiter.with(|l| l.pause(key, for_));
        tracing::debug!(
            parent: self.span_id(),
            operation = p.operation,
            rate_limit = %name,
            pause_ms = for_.as_millis() as u64,
            "throttled: pausing the rate limiter for the server's hint"
        );
    }

    /// What follows a failure that is not an attempt's (an open circuit the site retries): as
    /// after a failed attempt, waiting at least `floor`.
    fn decide_failure(&mut self, e: E, floor: Duration) -> Step<T, E> {
        let class = e.class();
        self.decide_failure_as(e, class, false, floor)
    }

    /// The decision after a failure of class `class`; `deadline` when the deadline stopped it.
    fn decide_failure_as(
        &mut self,
        e: E,
        class: ErrorClass,
        deadline: bool,
        floor: Duration,
    ) -> Step<T, E> {
        let over = self.hooks.override_class(&e);
        let p = self.policy_ref();
        self.attempt = self.attempt.saturating_add(1);

        if over == Some(Override::Abort) {
            return self.give_up(e, class, GiveUpReason::Aborted);
        }
        // A refused credential is refreshed, and the attempt made again, without spending a
        // retry: the request was refused, not applied, so it needs no `idempotent`. The hook
        // itself decides whether the credentials the attempt used are already stale (a
        // single-flight refresher refreshes each generation once); the engine bounds the
        // refreshes of one call by its attempts, `retries + 1`.
        if class == ErrorClass::Auth
            && self.clock & HOOK_REFRESH != 0
            && u32::from(self.refreshes) <= p.retries
            && over.is_none()
        {
            self.refreshes = self.refreshes.saturating_add(1);
            tracing::info!(
                parent: self.span_id(),
                operation = p.operation,
                attempt = self.attempt,
                refresh = self.refreshes,
                correlation_id = %self.correlation_or_default(),
                "credentials refused; refreshing them and trying again"
            );
            return Step::Refresh;
        }
        if deadline {
            return self.give_up(e, class, GiveUpReason::Deadline);
        }
        let retryable = over == Some(Override::Retry) || class.is_retryable();
        if !retryable {
            return self.give_up(e, class, GiveUpReason::NotRetryable);
        }
        if u32::from(self.retries) >= p.retries.min(u32::from(u16::MAX)) {
            return self.give_up(e, class, GiveUpReason::RetriesExhausted);
        }
        let deadline_at = self.deadline_at();
        let prev = self.retry.prev_wait();
        let backoff = p.backoff.delay(u32::from(self.retries), prev, self.rng());
        let hint = e.retry_after();
        let Some(wait) = p.retry_after.wait(backoff, hint) else {
            return self.give_up(e, class, GiveUpReason::RetryAfterTooLong);
        };
        let wait = wait.max(floor);
        // A breaker open for longer than the wait (this failure may have opened it) would refuse
        // the retry at the gate: the call ends now, as it would then, with no retry spent.
        if let Some(step) = self.open_for(wait) {
            return step;
        }
        if deadline_at != 0 && clock::now_nanos().saturating_add(clock::nanos(wait)) >= deadline_at
        {
            return self.give_up(e, class, GiveUpReason::Deadline);
        }
        if !self.budget().try_spend() {
            self.state.counters.budget_exhausted();
            return self.give_up(e, class, GiveUpReason::BudgetExhausted);
        }
        self.retries = self.retries.saturating_add(1);
        self.retry.prev_wait = clock::nanos(wait);
        self.state.counters.retry();
        let correlation_id = self.correlation_or_default();
        let code = e.code();
        tracing::warn!(
            parent: self.span_id(),
            operation = p.operation,
            attempt = self.attempt,
            max_retries = p.retries,
            status = code,
            class = class.as_str(),
            wait_ms = wait.as_millis() as u64,
            retry_after = hint.is_some(),
            correlation_id = %correlation_id,
            "{} failed (attempt {}/{}); retrying in {}",
            p.operation,
            self.attempt,
            // Refreshed attempts come on top of the retries.
            p.retries
                .saturating_add(1)
                .saturating_add(u32::from(self.refreshes)),
            resilience_policy::format_rounded(wait)
        );
        events::emit(RuntimeEvent::Retry {
            operation: p.operation,
            attempt: u32::from(self.attempt),
            max_retries: p.retries,
            class,
            code,
            wait,
            retry_after: hint.is_some_and(|h| h >= backoff),
            correlation_id,
        });
        Step::Wait(wait)
    }

    /// The site's error for `r`, if the site retries it (lists it in `retry_on`).
    fn retried_rejection(&self, r: &Rejected) -> Option<E> {
        self.hooks
            .rejected(r.clone())
            .filter(|e| self.hooks.override_class(e) == Some(Override::Retry))
    }

    /// The end of a call whose next attempt, `wait` from now, the open breaker would refuse:
    /// the rejection the gate would give, now, unless the site retries open circuits (then the
    /// retry goes ahead, and the gate waits out the cooldown).
    fn open_for(&mut self, wait: Duration) -> Option<Step<T, E>> {
        let b = self.breaker()?;
        let retry_in = b.cooldown_left().filter(|left| *left > wait)?;
        let r = Rejected::CircuitOpen {
            breaker: b.name().clone(),
            retry_in,
        };
        if self.retried_rejection(&r).is_some() {
            return None;
        }
        // The error in hand is no attempt's timeout any more: the call ends with the rejection.
        self.timed_out = None;
        match self.reject(r) {
            Gate::End(r) => Some(Step::ret(r)),
            _ => None,
        }
    }

    fn give_up(&mut self, e: E, class: ErrorClass, reason: GiveUpReason) -> Step<T, E> {
        Step::ret(self.end_with(e, class, reason))
    }

    /// Ends the call with `e`: counted, logged, reported, and through the fallback.
    fn end_with(&mut self, e: E, class: ErrorClass, reason: GiveUpReason) -> Result<T, E> {
        match self.timed_out {
            // `e` is the rejection of the limit that stopped the last attempt (or the call).
            Some(kind) => {
                let r = kind.rejection(self.policy()).index();
                self.state.counters.rejected(r);
            }
            None => self.state.counters.error(class),
        }
        let p = self.site().policy;
        // WARN when the engine stopped a failing call, or when a policy refused it (to be
        // escalated); DEBUG when it merely passed a permanent error on to the caller.
        let level_warn = class == ErrorClass::PolicyViolation
            || matches!(
                reason,
                GiveUpReason::RetriesExhausted
                    | GiveUpReason::BudgetExhausted
                    | GiveUpReason::Deadline
                    | GiveUpReason::RetryAfterTooLong
            );
        if level_warn {
            tracing::warn!(
                parent: self.span_id(),
                operation = p.operation,
                attempts = self.attempt,
                retry_count = self.retries,
                status = e.code(),
                class = class.as_str(),
                reason = reason.as_str(),
                correlation_id = %self.correlation_or_default(),
                "{} gave up",
                p.operation
            );
        } else {
            tracing::debug!(
                parent: self.span_id(),
                operation = p.operation,
                status = e.code(),
                class = class.as_str(),
                reason = reason.as_str(),
                "{} failed without retry",
                p.operation
            );
        }
        self.emit_gave_up(&e, reason);
        self.finish_err(e)
    }

    fn emit_gave_up(&self, e: &E, reason: GiveUpReason) {
        events::emit(RuntimeEvent::GaveUp {
            operation: self.site().policy.operation,
            connector: &self.state.connector,
            attempts: u32::from(self.attempt),
            retry_count: u32::from(self.retries),
            class: e.class(),
            code: e.code(),
            reason,
            correlation_id: self.correlation_or_default(),
            idempotency_key: self.cold.as_ref().and_then(|c| c.key.as_deref()),
        });
    }

    fn finish_err(&mut self, e: E) -> Result<T, E> {
        self.flags |= ENDED;
        if self.clock & CLOCK_LATENCY != 0 {
            self.record_latency();
        }
        if self.hooks.has_fallback() && self.hooks.fallback_takes(&e) {
            self.state.counters.fallback();
        }
        self.hooks.fallback(e)
    }

    fn correlation_or_default(&self) -> CorrelationId {
        context::assigned(&self.correlation)
    }
}

/// The clock at a call's start, for its latency or its deadline.
#[cold]
#[inline(never)]
fn start_clock() -> u64 {
    clock::now_nanos()
}

/// The cold part of a call that a subscriber traces: `None` when no subscriber wants the span.
#[cold]
#[inline(never)]
fn traced(p: &Policy, correlation: &std::cell::Cell<CorrelationId>) -> Option<Box<Cold>> {
    let span = tracing::info_span!(
        "resilient",
        operation = p.operation,
        breaker = p.breaker,
        correlation_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return None;
    }
    let correlation = context::assigned(correlation);
    span.record("correlation_id", tracing::field::display(correlation));
    Some(Box::new(Cold {
        span: Some(span),
        ..Cold::default()
    }))
}

impl<T, E, H> Call<T, E, H> {
    /// The call's site.
    #[inline(always)]
    fn site(&self) -> &'static Site {
        self.state.site
    }

    /// The call's policy: the attribute's, unless a `[sites]` table or a per-call override
    /// changed it (then the one merged when the call started: a reconfiguration meanwhile
    /// reaches the next call).
    #[inline(always)]
    pub(crate) fn policy(&self) -> &Policy {
        match &*self.over {
            Some(e) if self.flags & OVER != 0 => &e.policy,
            _ => self.site().policy,
        }
    }

    /// [`Call::policy`], held apart from the call, for code that borrows the call mutably
    /// meanwhile.
    fn policy_ref(&self) -> PolicyRef {
        match &*self.over {
            Some(e) => PolicyRef::Shared(e.clone()),
            None => PolicyRef::Static(self.site().policy),
        }
    }

    /// The retry budget the call's retries spend.
    #[inline(always)]
    fn budget(&self) -> &RetryBudget {
        if self.flags & OVER != 0 {
            return self.budget_over();
        }
        &self.state.budget
    }

    /// [`Call::budget`] of a call under a policy other than its attribute's.
    #[cold]
    #[inline(never)]
    fn budget_over(&self) -> &RetryBudget {
        match &*self.over {
            Some(e) => &e.budget,
            None => &self.state.budget,
        }
    }

    /// Whether the call runs under a policy other than its attribute's.
    #[inline(always)]
    pub(crate) fn overridden(&self) -> bool {
        self.flags & OVER != 0
    }

    /// Arms the timer of an attempt whose future holds none, when the call's policy (a
    /// `[sites]` table, a per-call override) gives the site a `timeout` or `deadline` its
    /// attribute has not: in the call's cold state, so that the futures of sites no
    /// configuration times keep no room for one.
    #[cold]
    #[inline(never)]
    pub(crate) fn arm_spare_timer(&mut self, limit: Option<(Instant, TimeoutKind)>) {
        match limit {
            Some(_) => {
                let mut timer = Box::pin(slot::Timer::new());
                slot::AttemptTimer::arm(timer.as_mut(), || limit);
                self.cold().spare_timer = Some(timer);
            }
            None => self.disarm_spare_timer(),
        }
    }

    /// Whether the spare timer (see [`Call::arm_spare_timer`]) has fired.
    #[cold]
    #[inline(never)]
    pub(crate) fn poll_spare_timer(&mut self, cx: &mut TaskContext<'_>) -> Option<TimeoutKind> {
        let timer = self.cold.as_mut()?.spare_timer.as_mut()?;
        slot::AttemptTimer::poll_expired(timer.as_mut(), cx)
    }

    /// The attempt is over: its spare timer, if any, is dropped.
    #[cold]
    #[inline(never)]
    pub(crate) fn disarm_spare_timer(&mut self) {
        if let Some(c) = self.cold.as_mut() {
            c.spare_timer = None;
        }
    }

    /// The deadline, in the clock's nanoseconds; 0 for none.
    #[inline]
    fn deadline_at(&self) -> u64 {
        if self.clock & CLOCK_DEADLINE == 0 {
            return 0;
        }
        let d = self.policy().deadline.unwrap_or_default();
        self.started.saturating_add(clock::nanos(d)).max(1)
    }

    fn span_id(&self) -> Option<tracing::Id> {
        self.cold.as_ref()?.span.as_ref()?.id()
    }

    /// The call's jitter generator, seeded at its first use.
    fn rng(&mut self) -> &mut Rng {
        if self.flags & SEEDED == 0 {
            self.retry.rng = seed(&self.state);
            self.flags |= SEEDED;
        }
        &mut self.retry.rng
    }

    fn cold(&mut self) -> &mut Cold {
        self.flags |= OWNS;
        self.cold.get_or_insert_with(Box::default)
    }

    /// The wait in progress (for a rate-limit permit, or out a backoff), if any.
    fn wait(&mut self) -> Option<&mut Pin<Box<tokio::time::Sleep>>> {
        self.cold.as_mut()?.wait.as_mut()
    }

    /// Starts waiting `d`.
    fn start_wait(&mut self, d: Duration) {
        self.cold().wait = Some(Box::pin(tokio::time::sleep(d)));
    }

    /// The wait is over.
    fn end_wait(&mut self) {
        if let Some(c) = self.cold.as_mut() {
            c.wait = None;
        }
    }

    /// The breaker of this call: its key's, or the site's.
    #[inline(always)]
    fn breaker(&self) -> Option<&Breaker> {
        match &*self.keyed {
            Some(b) => Some(b),
            None => self.state.breaker.as_deref(),
        }
    }

    #[cold]
    #[inline(never)]
    fn record_latency(&self) {
        let elapsed = clock::now_nanos().saturating_sub(self.started);
        self.state.counters.latency(Duration::from_nanos(elapsed));
    }

    /// Runs `f` with the call's context installed (and its span entered, and its key
    /// installed, if it has them).
    #[inline(always)]
    fn entered<R>(&mut self, f: impl FnOnce() -> R) -> R {
        // A first attempt with no span and no key, not nested (a fast-path attempt resumed after
        // a pending first poll; the first poll of an `execute`, tower or blocking call): its
        // context differs from an empty one in two fields.
        if self.attempt == 0 && self.cold.is_none() && !context::in_call() {
            let _ctx = context::enter_first_again(self.state.site, &self.correlation);
            return f();
        }
        let active = context::Active {
            site: Some(self.state.site),
            correlation: self.correlation.get(),
            attempt: u32::from(self.attempt),
            has_key: 0,
        };
        match self.cold.as_deref_mut() {
            None => {
                let _ctx = context::install(active, &self.correlation);
                f()
            }
            Some(cold) => entered_cold(active, &self.correlation, cold, f),
        }
    }

    #[cold]
    #[inline(never)]
    fn drop_slow(&mut self) {
        // A call dropped mid-attempt (cancelled) or unwinding from a panic gives back what it
        // holds; a cancelled attempt is no health signal.
        if let Some(t) = self.ticket.take()
            && let Some(b) = self.breaker()
        {
            b.release(t);
        }
        if self.flags & IN_BULKHEAD != 0 {
            self.flags &= !IN_BULKHEAD;
            if let Some((_, b)) = &self.state.bulkhead {
                b.with(|b| b.leave());
            }
        }
        // A cancelled call did not end (its caller stopped waiting) and is not counted. A call
        // unwinding from a panic, in the attempt or in a hook, did end: it is counted once, as a
        // permanent error (never retried, and no signal about the dependency's health, so its
        // breaker ticket was released above rather than recorded as a failure).
        if self.flags & ENDED == 0 && std::thread::panicking() {
            self.flags |= ENDED;
            count_panic(&self.state, u32::from(self.attempt), self.span_id());
        }
        if self.flags & OWNS != 0 {
            self.flags &= !(OWNS | OVER);
            let keyed = std::mem::replace(&mut self.keyed, ManuallyDrop::new(None));
            drop(ManuallyDrop::into_inner(keyed));
            let cold = std::mem::replace(&mut self.cold, ManuallyDrop::new(None));
            drop(ManuallyDrop::into_inner(cold));
            let over = std::mem::replace(&mut self.over, ManuallyDrop::new(None));
            drop(ManuallyDrop::into_inner(over));
        }
    }
}

/// A call unwinding from a panic is counted once, as a permanent error. The log's parent is the
/// call's span when given, else the span current where it unwinds.
#[cold]
fn count_panic(state: &SiteState, attempt: u32, span: Option<tracing::Id>) {
    state.counters.error(ErrorClass::Permanent);
    let operation = state.site.policy().operation;
    match span {
        Some(span) => tracing::error!(
            parent: span,
            operation,
            attempt,
            "{operation} panicked; counted as a permanent error",
        ),
        None => tracing::error!(
            operation,
            attempt,
            "{operation} panicked; counted as a permanent error",
        ),
    }
}

/// [`Call::entered`] for a call with a span or a key; restores in reverse order: the context,
/// then the key, then the span.
#[cold]
#[inline(never)]
fn entered_cold<R>(
    mut active: context::Active,
    correlation: &std::cell::Cell<CorrelationId>,
    cold: &mut Cold,
    f: impl FnOnce() -> R,
) -> R {
    let _span = cold.span.as_ref().map(tracing::Span::enter);
    let _key = cold
        .key
        .is_some()
        .then(|| context::install_key(&mut cold.key));
    active.has_key = u32::from(_key.is_some());
    let _ctx = context::install(active, correlation);
    f()
}

impl<T, E, H> Call<T, E, H> {
    /// Whether dropping the call would do nothing: it ended, holds no ticket, owns nothing on
    /// the heap, and its state is the global registry's (no `Arc` to give back).
    #[inline(always)]
    pub(crate) fn drops_to_nothing(&self) -> bool {
        self.ticket.is_none() && self.flags == ENDED && matches!(self.state, StateRef::Static(_))
    }
}

impl<T, E, H> Drop for Call<T, E, H> {
    #[inline(always)]
    fn drop(&mut self) {
        // The happy path: nothing held, nothing owned, and the result counted.
        if self.ticket.is_some() || self.flags != ENDED {
            self.drop_slow();
        }
    }
}

impl<T, E> Step<T, E> {
    /// The step that returns `r`.
    #[inline(always)]
    pub fn ret(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Step::Ok(v),
            Err(e) => Step::Err(e),
        }
    }
}

/// Which limit ended an attempt.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The per-attempt timeout.
    Attempt,
    /// The whole call's deadline.
    Deadline,
}

impl TimeoutKind {
    /// The rejection for an attempt this limit stopped.
    fn rejection(self, p: &Policy) -> Rejected {
        match self {
            TimeoutKind::Attempt => Rejected::AttemptTimeout {
                timeout: p.timeout.unwrap_or_default(),
            },
            TimeoutKind::Deadline => Rejected::DeadlineExceeded {
                deadline: p.deadline.unwrap_or_default(),
            },
        }
    }
}

/// Runs `attempt` under `site`'s policy until it succeeds or the policy gives up.
///
/// `attempt` is called once per attempt; the future it returns is one attempt. This is what
/// `#[resilient]` does, on the same call machine, for code that cannot use the macro (see the
/// [module docs](self)). An `auth` error ends the call; [`Execution`] adds a credential refresh,
/// an idempotency key or a breaker key. The site's metrics are labelled with
/// [`Policy::with_connector`]'s name, else with its module path's first segment.
pub async fn execute<T, E, H, F, Fut>(site: &'static Site, hooks: H, attempt: F) -> Result<T, E>
where
    E: Classify,
    H: HookSet<T, E>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Execution::new(site, hooks).run(attempt).await
}

/// The blocking counterpart of [`execute`].
///
/// ```
/// use resilience_runtime::engine::{execute_blocking, Hooks, Policy, Site};
/// use resilience_runtime::{Classify, ErrorClass, Registry};
///
/// #[derive(Debug)]
/// struct Down;
/// impl Classify for Down {
///     fn class(&self) -> ErrorClass { ErrorClass::Transient }
/// }
/// static SITE: Site = Site::new(&Policy::new("fetch_ids", module_path!()).with_retries(2).idempotent());
///
/// let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
/// let w = waits.clone();
/// let registry = Registry::new().with_blocking_sleep(move |d| w.lock().unwrap().push(d));
/// let r: Result<(), Down> = registry.enter(|| execute_blocking(&SITE, Hooks::new(), || Err(Down)));
/// assert!(r.is_err());
/// assert_eq!(waits.lock().unwrap().len(), 2);
/// ```
pub fn execute_blocking<T, E, H, F>(site: &'static Site, hooks: H, attempt: F) -> Result<T, E>
where
    E: Classify,
    H: HookSet<T, E>,
    F: FnMut() -> Result<T, E>,
{
    Execution::new(site, hooks).run_blocking(attempt)
}

/// A hand-written call with what [`execute`] leaves out: a credential refresh, an idempotency
/// key, a breaker key. It runs on the call machine `#[resilient]` expands to.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use resilience_runtime::engine::{Execution, Hooks, Policy, Site};
/// use resilience_runtime::{CallContext, Classify, ErrorClass};
///
/// #[derive(Debug)]
/// struct Expired;
/// impl Classify for Expired {
///     fn class(&self) -> ErrorClass { ErrorClass::Auth }
/// }
///
/// static SITE: Site = Site::new(&Policy::new("create", module_path!()).with_idempotency_key());
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let token = AtomicU32::new(1);
/// let r: Result<String, Expired> = Execution::new(&SITE, Hooks::new())
///     .idempotency_key("intent-7-create")
///     .refresh(|| async {
///         token.store(2, Ordering::SeqCst);
///         Ok(())
///     })
///     .run(|| {
///         let t = token.load(Ordering::SeqCst);
///         let key = CallContext::current().and_then(|c| c.idempotency_key().map(str::to_owned));
///         async move { if t == 1 { Err(Expired) } else { Ok(key.unwrap_or_default()) } }
///     })
///     .await;
/// assert_eq!(r.unwrap(), "intent-7-create");
/// # }
/// ```
#[derive(Debug)]
#[must_use = "an execution does nothing until it runs"]
pub struct Execution<H, Rf = NoRefresh> {
    site: &'static Site,
    hooks: H,
    idempotency_key: Option<String>,
    breaker_key: Option<String>,
    refresh: Rf,
}

/// No credential refresh: an `auth` error ends the call.
#[derive(Debug, Clone, Copy)]
pub struct NoRefresh;

impl<H> Execution<H, NoRefresh> {
    /// A call at `site` with `hooks`.
    pub fn new(site: &'static Site, hooks: H) -> Self {
        Execution {
            site,
            hooks,
            idempotency_key: None,
            breaker_key: None,
            refresh: NoRefresh,
        }
    }
}

impl<H, Rf> Execution<H, Rf> {
    /// The call's idempotency key: the same on every attempt, read in an attempt with
    /// [`CallContext::idempotency_key`](crate::CallContext::idempotency_key).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The key of the site's per-key breaker (a tenant id) for this call; also the key of a
    /// per-key rate limit.
    pub fn breaker_key(mut self, key: impl Into<String>) -> Self {
        self.breaker_key = Some(key.into());
        self
    }

    /// Refreshes credentials when an attempt fails with an `auth` error, then tries again, as
    /// `#[resilient(refresh = ...)]` does: once per attempt, at most `retries + 1` times a call,
    /// under the deadline. For [`Execution::run`] a closure returning a future of
    /// `Result<(), E>`; for [`Execution::run_blocking`] one returning `Result<(), E>`.
    pub fn refresh<R2>(self, refresh: R2) -> Execution<H, R2> {
        Execution {
            site: self.site,
            hooks: self.hooks,
            idempotency_key: self.idempotency_key,
            breaker_key: self.breaker_key,
            refresh,
        }
    }

    /// The call with its keys set.
    fn slot<T, E, const ON: bool>(
        site: &'static Site,
        hooks: H,
        idempotency_key: Option<String>,
        breaker_key: Option<String>,
    ) -> Slot<T, E, &'static Site, Refreshing<H, ON>>
    where
        E: Classify,
        H: HookSet<T, E>,
    {
        site.check_hooks(hooks.rejects());
        let mut slot = Slot::new(site, Refreshing::<H, ON>(hooks));
        if let Some(k) = idempotency_key {
            slot.set_idempotency_key(k);
        }
        if let Some(k) = &breaker_key {
            slot.set_breaker_key(k);
        }
        slot
    }

    /// Runs `attempt` until it succeeds or the policy gives up (see [`execute`]).
    pub async fn run<T, E, F, Fut>(self, attempt: F) -> Result<T, E>
    where
        E: Classify,
        H: HookSet<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        Rf: RefreshHook<E>,
    {
        let Execution {
            site,
            hooks,
            idempotency_key,
            breaker_key,
            refresh,
        } = self;
        if Rf::PRESENT {
            let slot = Self::slot::<T, E, true>(site, hooks, idempotency_key, breaker_key);
            drive(slot, attempt, refresh).await
        } else {
            let slot = Self::slot::<T, E, false>(site, hooks, idempotency_key, breaker_key);
            drive(slot, attempt, refresh).await
        }
    }

    /// Runs a blocking `attempt` until it succeeds or the policy gives up (see
    /// [`execute_blocking`]).
    pub fn run_blocking<T, E, F>(self, attempt: F) -> Result<T, E>
    where
        E: Classify,
        H: HookSet<T, E>,
        F: FnMut() -> Result<T, E>,
        Rf: BlockingRefreshHook<E>,
    {
        let Execution {
            site,
            hooks,
            idempotency_key,
            breaker_key,
            refresh,
        } = self;
        if Rf::PRESENT {
            let slot = Self::slot::<T, E, true>(site, hooks, idempotency_key, breaker_key);
            drive_blocking(slot, attempt, refresh)
        } else {
            let slot = Self::slot::<T, E, false>(site, hooks, idempotency_key, breaker_key);
            drive_blocking(slot, attempt, refresh)
        }
    }
}

/// The loop of [`Execution::run`]: the one `#[resilient]` expands to.
async fn drive<T, E, H, F, Fut, Rf>(
    mut slot: Slot<T, E, &'static Site, H>,
    mut attempt: F,
    mut refresh: Rf,
) -> Result<T, E>
where
    E: Classify,
    H: HookSet<T, E>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    Rf: RefreshHook<E>,
{
    loop {
        // The attempt is made when the gate has passed: a refused call never calls `attempt`.
        match slot.attempt_timed(Lazy::new(&mut attempt)).await {
            Step::Ok(v) => return Ok(v),
            Step::Err(e) => return Err(e),
            Step::Refresh => {
                if let Err(r) = slot.refresh(refresh.refresh()).await {
                    return r;
                }
            }
            Step::Retry | Step::Wait(_) => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// An attempt made on its first poll, which comes after the gate has passed.
    struct Lazy<'a, F, Fut> {
        make: Option<&'a mut F>,
        #[pin]
        fut: Option<Fut>,
    }
}

impl<'a, F: FnMut() -> Fut, Fut: Future> Lazy<'a, F, Fut> {
    fn new(make: &'a mut F) -> Self {
        Lazy {
            make: Some(make),
            fut: None,
        }
    }
}

impl<F: FnMut() -> Fut, Fut: Future> Future for Lazy<'_, F, Fut> {
    type Output = Fut::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Fut::Output> {
        let mut this = self.project();
        if let Some(make) = this.make.take() {
            this.fut.set(Some(make()));
        }
        match this.fut.as_pin_mut() {
            Some(fut) => fut.poll(cx),
            // Made on the first poll, above.
            None => Poll::Pending,
        }
    }
}

/// The loop of [`Execution::run_blocking`].
fn drive_blocking<T, E, H, F, Rf>(
    mut slot: Slot<T, E, &'static Site, H>,
    mut attempt: F,
    mut refresh: Rf,
) -> Result<T, E>
where
    E: Classify,
    H: HookSet<T, E>,
    F: FnMut() -> Result<T, E>,
    Rf: BlockingRefreshHook<E>,
{
    loop {
        match slot.attempt_blocking(&mut attempt) {
            Step::Ok(v) => return Ok(v),
            Step::Err(e) => return Err(e),
            Step::Refresh => {
                if let Err(r) = slot.refreshed(refresh.refresh()) {
                    return r;
                }
            }
            Step::Retry | Step::Wait(_) => {}
        }
    }
}

/// A credential refresh for [`Execution::run`]: [`NoRefresh`], or a closure returning a future
/// of `Result<(), E>`.
pub trait RefreshHook<E> {
    /// Whether there is a refresh to run.
    const PRESENT: bool;
    /// Runs it.
    fn refresh(&mut self) -> impl Future<Output = Result<(), E>>;
}

impl<E> RefreshHook<E> for NoRefresh {
    const PRESENT: bool = false;
    async fn refresh(&mut self) -> Result<(), E> {
        Ok(())
    }
}

impl<E, R: FnMut() -> Fut, Fut: Future<Output = Result<(), E>>> RefreshHook<E> for R {
    const PRESENT: bool = true;
    fn refresh(&mut self) -> impl Future<Output = Result<(), E>> {
        self()
    }
}

/// A credential refresh for [`Execution::run_blocking`]: [`NoRefresh`], or a closure returning
/// `Result<(), E>`.
pub trait BlockingRefreshHook<E> {
    /// Whether there is a refresh to run.
    const PRESENT: bool;
    /// Runs it.
    fn refresh(&mut self) -> Result<(), E>;
}

impl<E> BlockingRefreshHook<E> for NoRefresh {
    const PRESENT: bool = false;
    fn refresh(&mut self) -> Result<(), E> {
        Ok(())
    }
}

impl<E, R: FnMut() -> Result<(), E>> BlockingRefreshHook<E> for R {
    const PRESENT: bool = true;
    fn refresh(&mut self) -> Result<(), E> {
        self()
    }
}

/// Hooks with the refresh set by the caller that runs it: [`execute_with_refresh`] has one to
/// run, [`execute`] none.
#[derive(Debug, Clone, Copy)]
struct Refreshing<H, const ON: bool>(H);

impl<T, E, H: HookSet<T, E>, const ON: bool> HookSet<T, E> for Refreshing<H, ON> {
    #[inline(always)]
    fn rejects(&self) -> bool {
        self.0.rejects()
    }
    #[inline(always)]
    fn rejected(&self, r: Rejected) -> Option<E> {
        self.0.rejected(r)
    }
    #[inline(always)]
    fn override_class(&self, e: &E) -> Option<Override> {
        self.0.override_class(e)
    }
    #[inline(always)]
    fn has_fallback(&self) -> bool {
        self.0.has_fallback()
    }
    #[inline(always)]
    fn fallback(&self, e: E) -> Result<T, E> {
        self.0.fallback(e)
    }
    #[inline(always)]
    fn refresh(&self) -> bool {
        ON
    }
    #[inline(always)]
    fn fallback_takes(&self, e: &E) -> bool {
        self.0.fallback_takes(e)
    }
    #[inline(always)]
    fn ok_verdict(&self, v: &T) -> RetryOk {
        self.0.ok_verdict(v)
    }
}

#[cfg(test)]
mod tests {
    /// A call lives in its caller's future, which is moved (into a task, into `ready`): every
    /// word it grows by is copied on every move. 88 bytes: the state (two words), the per-key
    /// breaker, the merged policy of an overridden call, the ticket with the counters, the
    /// correlation id, the start, the jitter's state (two words) and the cold box.
    #[test]
    fn a_call_takes_eleven_words() {
        assert_eq!(
            std::mem::size_of::<super::Call<u64, (), super::Hooks>>(),
            88
        );
    }
}
