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
    HeldKey, HookSet, Hooks, KeySlot, NoHook, NoKey, Override, Policy, RetryOk, Site, SiteDef,
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

/// The field of the variant marked `#[connector(rejected)]`: the runtime's [`Rejected`].
#[diagnostic::on_unimplemented(
    message = "`#[connector(rejected)]` is on a field of type `{Self}`, which is not the runtime's `Rejected`",
    label = "the `rejected` variant carries a `resilience_runtime::Rejected`",
    note = "write the variant as `Rejected(#[from] resilience_runtime::Rejected)`, and keep other errors in variants of their own"
)]
pub trait RejectedField: Sized {
    /// The field, from a rejection.
    fn from_rejected(rejected: Rejected) -> Self;
    /// The rejection in the field.
    fn as_rejected(&self) -> &Rejected;
}

#[diagnostic::do_not_recommend]
impl RejectedField for Rejected {
    #[inline(always)]
    fn from_rejected(rejected: Rejected) -> Self {
        rejected
    }
    #[inline(always)]
    fn as_rejected(&self) -> &Rejected {
        self
    }
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

#[diagnostic::do_not_recommend]
impl HttpStatus for u16 {
    #[inline]
    fn http_status(&self) -> u16 {
        *self
    }
}

#[diagnostic::do_not_recommend]
#[cfg(feature = "http")]
impl HttpStatus for ::http::StatusCode {
    #[inline]
    fn http_status(&self) -> u16 {
        self.as_u16()
    }
}

#[diagnostic::do_not_recommend]
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

#[diagnostic::do_not_recommend]
impl RetryAfterField for Duration {
    #[inline]
    fn retry_after_hint(&self) -> Option<Duration> {
        Some(*self)
    }
}

#[diagnostic::do_not_recommend]
impl RetryAfterField for Option<Duration> {
    #[inline]
    fn retry_after_hint(&self) -> Option<Duration> {
        *self
    }
}

#[diagnostic::do_not_recommend]
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

#[diagnostic::do_not_recommend]
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

#[diagnostic::do_not_recommend]
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

/// The value of `breaker_key = <expr>`: text that picks one breaker of a named breaker.
/// Generated code calls `BreakerKey::breaker_key(&key)`, spanned on the expression, so that a
/// key of the wrong type is reported there, with this message.
#[diagnostic::on_unimplemented(
    message = "`breaker_key` is a `{Self}`, which cannot key a breaker",
    label = "a breaker key is text: this expression must give a `&str`, a `String` or another `AsRef<str>`",
    note = "key by the tenant's text, e.g. `breaker_key = self.tenant.as_str()`, or format a number: `breaker_key = tenant_id.to_string()`"
)]
pub trait BreakerKey {
    /// The key's text.
    fn breaker_key(&self) -> &str;
}

#[diagnostic::do_not_recommend]
impl<T: AsRef<str> + ?Sized> BreakerKey for T {
    #[inline(always)]
    fn breaker_key(&self) -> &str {
        self.as_ref()
    }
}

/// The value of `idempotency_key = <expr>`: anything that formats as the key. Called as
/// `IdempotencyKey::idempotency_key(&key)`, spanned on the expression.
#[diagnostic::on_unimplemented(
    message = "`idempotency_key` is a `{Self}`, which does not format as a key",
    label = "the key is sent as text: this expression must be `Display` (a string, a number, a UUID)",
    note = "give the request's own id, e.g. `idempotency_key = request.id`, or build one: `idempotency_key = format!(\"create-{{}}\", intent.id)`"
)]
pub trait IdempotencyKey {
    /// The key's text.
    fn idempotency_key(&self) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: core::fmt::Display + ?Sized> IdempotencyKey for T {
    #[inline]
    fn idempotency_key(&self) -> String {
        ToString::to_string(self)
    }
}

/// The result of a blocking site's `refresh` hook. Called as
/// `RefreshResult::<E>::into_refresh_result(hook(..))`, spanned on the hook's path.
#[diagnostic::on_unimplemented(
    message = "the `refresh` hook of a blocking fn returns `{Self}`, not `Result<(), {E}>`",
    label = "this hook must be a plain fn returning `Result<(), {E}>`",
    note = "write the hook as `fn refresh(&self) -> Result<(), {E}>`, with the site's error type (an async hook needs an async site)"
)]
pub trait RefreshResult<E> {
    /// The result, as the engine reads it.
    fn into_refresh_result(self) -> Result<(), E>;
}

#[diagnostic::do_not_recommend]
impl<E, T: Into<Result<(), E>>> RefreshResult<E> for T {
    #[inline(always)]
    fn into_refresh_result(self) -> Result<(), E> {
        self.into()
    }
}

/// What `#[resilient]` can know of a variant of a derived error type at compile time: how its
/// class treats it. `#[derive(ConnectorError)]` implements [`VariantKind`] once per variant,
/// keyed by a hash of its name (FNV-1a, as both macros compute it); a type that classifies by hand has none, and its
/// variants are [`kind::Unknown`].
pub mod kind {
    /// `transient` or `throttled`: retried by its class.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Retried;
    /// `permanent`: never retried.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Permanent;
    /// `policy`: never retried, escalated.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Policy;
    /// `terminal = "..."`: never retried, cannot succeed without a change at the target.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Terminal;
    /// `auth`: refreshed, then tried again.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Auth;
    /// `rejected`: the runtime's own rejections.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Rejected;
    /// Decided at run time (`status`, `delegate`, `verdict`), or not known (a hand-written
    /// `Classify`).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Unknown;
    /// The error type has a variant that may be `auth` (for `refresh`).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct MayAuth;
    /// The error type has no variant that may be `auth`.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NeverAuth;
}

/// The kind of the variant whose name has the key `K`; implemented by the derive.
pub trait VariantKind<const K: u64> {
    /// One of the types of [`kind`].
    type Kind: Default;
}

/// Whether the error type has a variant that may be `auth`; implemented by the derive.
pub trait AuthKind {
    /// [`kind::MayAuth`] or [`kind::NeverAuth`].
    type Kind: Default;
}

/// A probe of what the derive says of a type (or of one of its variants, keyed `K`): the kind
/// when the derive says it ([`KnownKind`]), else [`kind::Unknown`] ([`UnknownKind`]), chosen
/// by method resolution (`(&Probe::of(e)).kind()`), so that a hand-written `Classify` passes.
#[derive(Debug)]
pub struct Probe<E, const K: u64>(core::marker::PhantomData<fn(&E)>);

impl<E, const K: u64> Probe<E, K> {
    /// The probe of `E`, named from a value of it.
    #[inline(always)]
    pub fn of(_: &E) -> Self {
        Probe(core::marker::PhantomData)
    }
}

/// See [`Probe`]: the derive's answer.
pub trait KnownKind {
    /// The kind.
    type Kind;
    /// The kind.
    fn kind(&self) -> Self::Kind;
}

impl<E: VariantKind<K>, const K: u64> KnownKind for Probe<E, K> {
    type Kind = E::Kind;
    #[inline(always)]
    fn kind(&self) -> E::Kind {
        Default::default()
    }
}

/// See [`Probe`]: the derive's answer for the whole type.
pub trait KnownAuthKind {
    /// The kind.
    type Kind;
    /// The kind.
    fn auth_kind(&self) -> Self::Kind;
}

impl<E: AuthKind> KnownAuthKind for Probe<E, 0> {
    type Kind = E::Kind;
    #[inline(always)]
    fn auth_kind(&self) -> E::Kind {
        Default::default()
    }
}

/// See [`Probe`]: nothing known.
pub trait UnknownKind {
    /// [`kind::Unknown`].
    #[inline(always)]
    fn kind(&self) -> kind::Unknown {
        kind::Unknown
    }
    /// [`kind::Unknown`].
    #[inline(always)]
    fn auth_kind(&self) -> kind::Unknown {
        kind::Unknown
    }
}

impl<E, const K: u64> UnknownKind for &Probe<E, K> {}

/// `retry_on` names a variant that is not `policy`.
#[diagnostic::on_unimplemented(
    message = "`retry_on` names a `policy` variant of `{Self}`: a policy violation is never retried",
    label = "a policy forbids this operation: retrying it breaks the policy again; remove it from `retry_on`",
    note = "if the operation can succeed when tried again, the variant is not a policy violation: classify it `#[connector(transient)]` or `#[connector(permanent)]`"
)]
pub trait RetryOnNotPolicy<K> {
    /// Passes.
    #[inline(always)]
    fn check(&self, _: K) {}
}

/// `retry_on` names a variant that is not `terminal`.
#[diagnostic::on_unimplemented(
    message = "`retry_on` names a `terminal` variant of `{Self}`: it cannot succeed until the target changes",
    label = "a terminal reason says no retry can succeed; remove it from `retry_on`",
    note = "if it can succeed when tried again, it is not terminal: classify it `#[connector(transient)]`"
)]
pub trait RetryOnNotTerminal<K> {
    /// Passes.
    #[inline(always)]
    fn check(&self, _: K) {}
}

/// `retry_on` names a variant that its class does not retry already.
#[diagnostic::on_unimplemented(
    message = "`retry_on` names a variant of `{Self}` that its class retries already (`transient` or `throttled`)",
    label = "this has no effect: remove it from `retry_on`",
    note = "`retry_on` is for variants whose class is not retried, e.g. a `permanent` `Conflict` that a retry resolves"
)]
pub trait RetryOnNotRetried<K> {
    /// Passes.
    #[inline(always)]
    fn check(&self, _: K) {}
}

/// `abort_on` names a variant that could be retried.
#[diagnostic::on_unimplemented(
    message = "`abort_on` names a variant of `{Self}` that its class never retries (`permanent`, `policy` or `terminal`)",
    label = "this has no effect: remove it from `abort_on`",
    note = "`abort_on` is for variants whose class is retried (`transient`, `throttled`) or refreshed (`auth`)"
)]
pub trait AbortOnRetried<K> {
    /// Passes.
    #[inline(always)]
    fn check(&self, _: K) {}
}

/// `refresh` at a site whose error type may be `auth`.
#[diagnostic::on_unimplemented(
    message = "`refresh` runs after an `auth` error, and `{Self}` has no `auth` variant",
    label = "this hook would never be called",
    note = "mark the variant for refused credentials `#[connector(auth)]` (a 401), or remove `refresh`"
)]
pub trait RefreshNeedsAuth<K> {
    /// Passes.
    #[inline(always)]
    fn check(&self, _: K) {}
}

macro_rules! passes {
    ($rule:ident: $($kind:ident),*) => {
        $(
            #[diagnostic::do_not_recommend]
            impl<E: ?Sized> $rule<kind::$kind> for E {}
        )*
    };
}

passes!(RetryOnNotPolicy: Retried, Permanent, Terminal, Auth, Rejected, Unknown);
passes!(RetryOnNotTerminal: Retried, Permanent, Policy, Auth, Rejected, Unknown);
passes!(RetryOnNotRetried: Permanent, Policy, Terminal, Auth, Rejected, Unknown);
passes!(AbortOnRetried: Retried, Auth, Rejected, Unknown);
passes!(RefreshNeedsAuth: MayAuth, Unknown);
