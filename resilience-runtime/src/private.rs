//! What generated code reaches. Not a public API: names here change without notice.

pub use core::clone::Clone;
pub use core::convert::AsRef;
pub use core::env;
pub use core::future::Future;
pub use core::marker::PhantomData;
pub use core::matches;
pub use core::module_path;
pub use core::ops::FnOnce;
pub use core::option::Option::{self, None, Some};
pub use core::primitive::bool;
pub use core::result::Result::{self, Err, Ok};
pub use core::time::Duration;
pub use std::string::{String, ToString};

pub use crate::backoff::{Backoff, Jitter, RetryAfter};
pub use crate::breaker::Outcome;
pub use crate::classify::{CarriesRejected, Classify, ErrorClass, Rejected, TerminalReason};
pub use crate::engine::{
    BreakerKey, HookSet, Hooks, KeySlot, NoHook, NoKey, Override, Policy, RetryOk, Site, SiteDef,
    SiteRef, Slot, Step, Typed,
};
pub use crate::redact::Redacted;

/// The `Ok` and `Err` types of a fn's declared return type, through any alias.
#[diagnostic::on_unimplemented(
    message = "`#[resilient]` needs a fn that returns `Result<T, E>`, not `{Self}`",
    label = "this return type is not a `Result`",
    note = "return `Result<T, E>` where `E` derives `ConnectorError`"
)]
pub trait ReturnType {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
}

impl<T, E> ReturnType for core::result::Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// The future of an async site's `refresh` hook.
#[diagnostic::on_unimplemented(
    message = "the `refresh` hook returns `{Self}`, not a future of `Result<(), {E}>`",
    label = "this hook must be an async fn returning `Result<(), {E}>`",
    note = "write the hook as `async fn refresh(&self) -> Result<(), {E}>`, with the site's error type"
)]
pub trait RefreshFuture<E> {
    /// The future.
    type Fut: Future<Output = Result<(), E>>;
    /// The future, as the engine awaits it.
    fn into_refresh(self) -> Self::Fut;
}

#[diagnostic::do_not_recommend]
impl<E, F: Future<Output = Result<(), E>>> RefreshFuture<E> for F {
    type Fut = F;
    #[inline(always)]
    fn into_refresh(self) -> F {
        self
    }
}

/// `Call::refresh`: the `refresh` hook's future under the call's deadline. A free fn with one
/// bound on the hook, so that a hook of the wrong shape is reported once, at its path.
#[inline(always)]
pub fn refresh<
    T,
    E: Classify,
    S: SiteRef,
    H: HookSet<T, E>,
    K: KeySlot,
    F: Future<Output = Result<(), E>>,
>(
    call: &mut Slot<T, E, S, H, K>,
    hook: F,
) -> impl Future<Output = Result<(), Result<T, E>>> {
    call.refresh(hook)
}

/// `Call::refreshed`: a blocking `refresh` hook's result.
#[inline(always)]
pub fn refreshed<T, E: Classify, S: SiteRef, H: HookSet<T, E>, K: KeySlot>(
    call: &mut Slot<T, E, S, H, K>,
    hook: Result<(), E>,
) -> Result<(), Result<T, E>> {
    call.refreshed(hook)
}

/// Wraps a rejection in the site's error type.
#[inline]
pub fn from_rejected<E: CarriesRejected>(r: Rejected) -> E {
    E::from_rejected(r)
}

/// The HTTP status in a field named by `#[connector(status = field)]`.
#[diagnostic::on_unimplemented(
    message = "`#[connector(status = ...)]` names a field of type `{Self}`, which is not an HTTP status",
    label = "`status` needs this field to be a `u16`, or an `http::StatusCode` with the feature `http`",
    note = "store the status as `u16` (e.g. `response.status().as_u16()`), or enable the feature `http` of `resilience-runtime` for an `http::StatusCode`"
)]
pub trait HttpStatus {
    /// The status code.
    fn http_status(&self) -> u16;
}

impl HttpStatus for u16 {
    #[inline]
    fn http_status(&self) -> u16 {
        *self
    }
}

#[cfg(feature = "http")]
impl HttpStatus for ::http::StatusCode {
    #[inline]
    fn http_status(&self) -> u16 {
        self.as_u16()
    }
}

impl<T: HttpStatus + ?Sized> HttpStatus for &T {
    #[inline]
    fn http_status(&self) -> u16 {
        (**self).http_status()
    }
}

/// The server's wait hint in a field marked `#[connector(retry_after)]`.
#[diagnostic::on_unimplemented(
    message = "`#[connector(retry_after)]` is on a field of type `{Self}`, which is not a wait hint",
    label = "`retry_after` needs this field to be a `Duration` or an `Option<Duration>`",
    note = "parse the `Retry-After` header into a `std::time::Duration` when building the error"
)]
pub trait RetryAfterField {
    /// The hint.
    fn retry_after_hint(&self) -> Option<Duration>;
}

impl RetryAfterField for Duration {
    #[inline]
    fn retry_after_hint(&self) -> Option<Duration> {
        Some(*self)
    }
}

impl RetryAfterField for Option<Duration> {
    #[inline]
    fn retry_after_hint(&self) -> Option<Duration> {
        *self
    }
}

impl<T: RetryAfterField + ?Sized> RetryAfterField for &T {
    #[inline]
    fn retry_after_hint(&self) -> Option<Duration> {
        (**self).retry_after_hint()
    }
}

/// The verdict in a field marked `#[connector(verdict)]`: the class, wait hint and code of its
/// variant.
#[diagnostic::on_unimplemented(
    message = "`#[connector(verdict)]` is on a field of type `{Self}`, which is not a verdict",
    label = "`verdict` needs this field to be a `resilience_runtime::http::Verdict`",
    note = "store what `http::Classifier::classify` returned (feature `http` of `resilience-runtime`), or classify the variant with `#[connector(status = field)]` instead"
)]
pub trait VerdictField {
    /// The class.
    fn verdict_class(&self) -> ErrorClass;
    /// The wait hint.
    fn verdict_retry_after(&self) -> Option<Duration>;
    /// The code (the status).
    fn verdict_code(&self) -> Option<&'static str>;
}

#[cfg(feature = "http")]
impl VerdictField for crate::http::Verdict {
    #[inline]
    fn verdict_class(&self) -> ErrorClass {
        self.class()
    }
    #[inline]
    fn verdict_retry_after(&self) -> Option<Duration> {
        self.retry_after()
    }
    #[inline]
    fn verdict_code(&self) -> Option<&'static str> {
        status_code_str(self.status().as_u16())
    }
}

impl<T: VerdictField + ?Sized> VerdictField for &T {
    #[inline]
    fn verdict_class(&self) -> ErrorClass {
        (**self).verdict_class()
    }
    #[inline]
    fn verdict_retry_after(&self) -> Option<Duration> {
        (**self).verdict_retry_after()
    }
    #[inline]
    fn verdict_code(&self) -> Option<&'static str> {
        (**self).verdict_code()
    }
}

/// `"100"` to `"599"` as static strings: the default `Classify::code` of a status variant.
pub fn status_code_str(status: u16) -> Option<&'static str> {
    static CODES: [[u8; 3]; 500] = {
        let mut out = [[0u8; 3]; 500];
        let mut i = 0;
        while i < 500 {
            let n = i + 100;
            out[i] = [
                b'0' + (n / 100) as u8,
                b'0' + (n / 10 % 10) as u8,
                b'0' + (n % 10) as u8,
            ];
            i += 1;
        }
        out
    };
    let digits = CODES.get(usize::from(status).checked_sub(100)?)?;
    core::str::from_utf8(digits).ok()
}

/// Clones an owned argument for the next attempt of a site that may run its body again.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is moved into every attempt, but it is not `Clone`: take `&{Self}` instead, or implement `Clone`",
    label = "this owned argument is cloned per attempt, because the body may run more than once",
    note = "borrow it instead (take `&{Self}`), or implement `Clone` for it, or set `retries = 0`"
)]
pub trait CloneArg: Sized {
    /// A fresh copy for one attempt.
    fn clone_arg(&self) -> Self;
}

#[diagnostic::do_not_recommend]
impl<T: Clone> CloneArg for T {
    #[inline]
    fn clone_arg(&self) -> Self {
        self.clone()
    }
}

/// Clones an owned argument for the only attempt of a site with a fallback, which gets the
/// argument after the attempt.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is kept for the fallback while the attempt gets its own, but it is not `Clone`: take `&{Self}` instead, or implement `Clone`",
    label = "this owned argument is cloned for the attempt, because the fallback gets it by reference after the attempt",
    note = "borrow it instead (take `&{Self}`), or implement `Clone` for it"
)]
pub trait CloneForFallback: Sized {
    /// A copy for the attempt.
    fn clone_for_fallback(&self) -> Self;
}

#[diagnostic::do_not_recommend]
impl<T: Clone> CloneForFallback for T {
    #[inline]
    fn clone_for_fallback(&self) -> Self {
        self.clone()
    }
}

/// A copy of an owned argument for the attempt of a site that runs its body once but keeps its
/// arguments for a fallback; see [`CloneForFallback`].
#[inline]
pub fn clone_for_fallback<T: CloneForFallback>(arg: &T) -> T {
    arg.clone_for_fallback()
}

/// The engine, reached through the site's error type: [`Slot`] and its methods when
/// `E: Classify`.
///
/// Generated code calls every engine method as `<E as Engine<T>>::method(..)`, spanned on the
/// fn's return type, rather than `call.method(..)`: an error type that does not classify is then
/// reported once, at the return type, instead of once per method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not classify its errors",
    label = "this error type has no classification",
    note = "derive it: `#[derive(ConnectorError)]` with `#[connector(transient)]`, `#[connector(permanent)]`, ... on each variant",
    note = "or implement `resilience_runtime::Classify` by hand"
)]
pub trait Engine<T>: Sized {
    /// The call in progress at the site `S` with the hooks `H`.
    type Call<S: SiteDef, H: HookSet<T, Self>>;
    /// [`Slot::new`].
    fn start<S: SiteDef, H: HookSet<T, Self>>(hooks: H) -> Self::Call<S, H>;
    /// [`Slot::set_idempotency_key`].
    fn set_idempotency_key<S: SiteDef, H: HookSet<T, Self>>(
        call: &mut Self::Call<S, H>,
        key: String,
    );
    /// [`Slot::set_breaker_key`].
    fn set_breaker_key<S: SiteDef, H: HookSet<T, Self>>(call: &mut Self::Call<S, H>, key: &str);
    /// [`Slot::attempt`], for sites without `timeout` or `deadline`.
    fn attempt<S: SiteDef, H: HookSet<T, Self>, F: Future<Output = Result<T, Self>>>(
        call: &mut Self::Call<S, H>,
        attempt: F,
    ) -> impl Future<Output = Step<T, Self>>;
    /// [`Slot::attempt_timed`].
    fn attempt_timed<S: SiteDef, H: HookSet<T, Self>, F: Future<Output = Result<T, Self>>>(
        call: &mut Self::Call<S, H>,
        attempt: F,
    ) -> impl Future<Output = Step<T, Self>>;
    /// The result of the only attempt of a site that never repeats (no retries, no `refresh`),
    /// so that the body may move its arguments: such a site always gets [`Step::Ok`] or [`Step::Err`].
    fn once(step: Step<T, Self>) -> Result<T, Self>;
    /// [`Slot::attempt_blocking`].
    fn attempt_blocking<S: SiteDef, H: HookSet<T, Self>>(
        call: &mut Self::Call<S, H>,
        attempt: impl FnOnce() -> Result<T, Self>,
    ) -> Step<T, Self>;
    /// [`Slot::fail`].
    fn fail<S: SiteDef, H: HookSet<T, Self>>(
        call: &mut Self::Call<S, H>,
        error: Self,
    ) -> Result<T, Self>;
}

#[diagnostic::do_not_recommend]
impl<T, E: Classify> Engine<T> for E {
    type Call<S: SiteDef, H: HookSet<T, E>> = Slot<T, E, Typed<S>, H, S::Key>;

    #[inline(always)]
    fn start<S: SiteDef, H: HookSet<T, E>>(hooks: H) -> Slot<T, E, Typed<S>, H, S::Key> {
        Slot::new(Typed::new(), hooks)
    }
    #[inline(always)]
    fn set_idempotency_key<S: SiteDef, H: HookSet<T, E>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        key: String,
    ) {
        call.set_idempotency_key(key);
    }
    #[inline(always)]
    fn set_breaker_key<S: SiteDef, H: HookSet<T, E>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        key: &str,
    ) {
        call.set_breaker_key(key);
    }
    #[inline(always)]
    fn attempt<S: SiteDef, H: HookSet<T, E>, F: Future<Output = Result<T, E>>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        attempt: F,
    ) -> impl Future<Output = Step<T, E>> {
        call.attempt(attempt)
    }
    #[inline(always)]
    fn attempt_timed<S: SiteDef, H: HookSet<T, E>, F: Future<Output = Result<T, E>>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        attempt: F,
    ) -> impl Future<Output = Step<T, E>> {
        call.attempt_timed(attempt)
    }
    #[inline(always)]
    fn once(step: Step<T, E>) -> Result<T, E> {
        only_return(step)
    }
    #[inline(always)]
    fn attempt_blocking<S: SiteDef, H: HookSet<T, E>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        attempt: impl FnOnce() -> Result<T, E>,
    ) -> Step<T, E> {
        call.attempt_blocking(attempt)
    }
    #[inline(always)]
    fn fail<S: SiteDef, H: HookSet<T, E>>(
        call: &mut Slot<T, E, Typed<S>, H, S::Key>,
        error: E,
    ) -> Result<T, E> {
        call.fail(error)
    }
}

#[inline(always)]
fn only_return<T, E>(step: Step<T, E>) -> Result<T, E> {
    match step {
        Step::Ok(v) => Ok(v),
        Step::Err(e) => Err(e),
        // `Call::decide` retries only while the policy's `retries` allow it, and refreshes only
        // when the site has the refresh hook: a site expanded with `once` has neither.
        Step::Wait(_) | Step::Refresh | Step::Retry => {
            unreachable!("a site without retries or refresh was asked to make another attempt")
        }
    }
}

/// Starts a call at the site `S`; named with the fn's return type so that "not a `Result`" and
/// "does not classify" are reported once, at the return type.
#[inline(always)]
pub fn start<R: ReturnType, S: SiteDef, H: HookSet<R::Ok, R::Err>>(
    hooks: H,
) -> <R::Err as Engine<R::Ok>>::Call<S, H>
where
    R::Err: Engine<R::Ok>,
{
    <R::Err as Engine<R::Ok>>::start::<S, H>(hooks)
}

/// A `retry_if_ok` hook: a fn from a reference to the call's `Ok` value to a [`RetryOk`]. The
/// marker `M` is `()`; the impl for [`Unreachable`] never applies, and is there so that a hook
/// of the wrong shape is reported as this trait not implemented, with its message, rather than
/// as a mismatch of its `Fn` bound.
#[diagnostic::on_unimplemented(
    message = "`retry_if_ok` needs a fn that takes `&{T}` and returns `RetryOk`",
    label = "this is not a `fn(&{T}) -> RetryOk`",
    note = "write it as `fn still_working(value: &{T}) -> resilience_runtime::RetryOk`, returning `RetryOk::Accept` for a value to keep"
)]
pub trait RetryIfOk<T, M>: Copy {
    /// The hook's verdict on `v`.
    fn verdict(&self, v: &T) -> RetryOk;
}

#[diagnostic::do_not_recommend]
impl<T, C: Fn(&T) -> RetryOk + Copy> RetryIfOk<T, ()> for C {
    #[inline(always)]
    fn verdict(&self, v: &T) -> RetryOk {
        self(v)
    }
}

#[diagnostic::do_not_recommend]
impl<T, C: NeverApplies + Copy> RetryIfOk<T, Unreachable> for C {
    #[inline(always)]
    fn verdict(&self, _: &T) -> RetryOk {
        RetryOk::Accept
    }
}

/// The marker of an impl that never applies.
#[derive(Debug)]
pub enum Unreachable {}

/// What a fallback returned, for an async site: the `Result` of a plain fn ([`Now`]) or the
/// future of an async fn ([`Later`]). The marker is inferred: only one of the two applies.
pub trait FallbackOutput<T, E, M> {
    /// The future the site awaits.
    type Fut: Future<Output = Result<T, E>>;
    /// The fallback's result as a future.
    fn into_fallback(self) -> Self::Fut;
}

/// A fallback that is a plain fn: its result is ready.
#[derive(Debug)]
pub struct Now;

/// A fallback that is an async fn: its result is a future.
#[derive(Debug)]
pub struct Later;

/// A fallback that takes the site's receiver and arguments, then the error.
#[derive(Debug)]
pub struct AllArgs;

/// A fallback that takes the error alone.
#[derive(Debug)]
pub struct ErrorOnly;

/// A bound no type meets: an impl that must exist but never apply.
pub trait NeverApplies {
    /// A value of any type, from a type that has no value.
    fn never<T>() -> T;
}

impl<T, E> FallbackOutput<T, E, Now> for Result<T, E> {
    type Fut = core::future::Ready<Result<T, E>>;
    #[inline(always)]
    fn into_fallback(self) -> Self::Fut {
        core::future::ready(self)
    }
}

impl<T, E, F: Future<Output = Result<T, E>>> FallbackOutput<T, E, Later> for F {
    type Fut = F;
    #[inline(always)]
    fn into_fallback(self) -> F {
        self
    }
}

/// The hooks of a site; see [`Hooks`].
#[inline(always)]
pub const fn hooks() -> Hooks {
    Hooks::new()
}

/// A fresh copy of an owned argument for one attempt; see [`CloneArg`].
#[inline]
pub fn clone_arg<T: CloneArg>(arg: &T) -> T {
    arg.clone_arg()
}

/// An attempt's own argument, moved into the attempt: a use of an argument of a `Copy` type
/// would be captured by reference, and `Owned::into_inner` takes the whole wrapper by value, so
/// the attempt owns it whatever its type (and is `Send` when it is, without asking `Sync`).
#[derive(Debug)]
pub struct Owned<T>(pub T);

impl<T> Owned<T> {
    /// The argument.
    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.0
    }
}

#[cfg(feature = "sites")]
pub use linkme;

/// Every site `#[resilient]` generated in the program, registered at link time by
/// [`register_site!`]. Read it through [`crate::sites`].
#[cfg(feature = "sites")]
#[linkme::distributed_slice]
pub static SITES: [&'static Site];

/// Registers a `static` [`Site`] in [`SITES`] (a no-op without the `sites` feature). The
/// expansion of `#[resilient]` calls it right after the site's `static`, in the same block.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "sites")]
macro_rules! __resilience_register_site {
    ($site:ident) => {
        #[$crate::__private::linkme::distributed_slice($crate::__private::SITES)]
        #[linkme(crate = $crate::__private::linkme)]
        static __RESILIENT_SITE_ENTRY: &'static $crate::__private::Site = &$site;
    };
}

/// Registers a `static` [`Site`] (a no-op without the `sites` feature).
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "sites"))]
macro_rules! __resilience_register_site {
    ($site:ident) => {};
}

pub use crate::__resilience_register_site as register_site;
