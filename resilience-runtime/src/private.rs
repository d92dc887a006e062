//! What generated code reaches. Not a public API: names here change without notice.

pub use core::clone::Clone;
pub use core::convert::AsRef;
pub use core::future::Future;
pub use core::matches;
pub use core::module_path;
pub use core::option::Option::{self, None, Some};
pub use core::result::Result::{self, Err, Ok};
pub use core::time::Duration;
pub use std::string::{String, ToString};

pub use crate::backoff::{Backoff, Jitter, RetryAfter};
pub use crate::classify::{CarriesRejected, Classify, ErrorClass, Rejected, TerminalReason};
pub use crate::engine::{Call, Gate, Hooks, Next, Override, Policy, Site, Step};
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

/// Wraps a rejection in the site's error type.
#[inline]
pub fn from_rejected<E: CarriesRejected>(r: Rejected) -> E {
    E::from_rejected(r)
}

/// The HTTP status in a field named by `#[connector(status = field)]`.
#[diagnostic::on_unimplemented(
    message = "`#[connector(status = ...)]` names a field of type `{Self}`, which is not an HTTP status",
    label = "`status` needs this field to be a `u16`",
    note = "store the status as `u16` (e.g. `response.status().as_u16()`)"
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

/// The engine, reached through the site's error type: [`Call`] and its methods when
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
    /// The call in progress.
    type Call;
    /// [`Call::new`].
    fn start(site: &'static Site, hooks: Hooks<T, Self>) -> Self::Call;
    /// [`Call::set_idempotency_key`].
    fn set_idempotency_key(call: &mut Self::Call, key: String);
    /// [`Call::set_breaker_key`].
    fn set_breaker_key(call: &mut Self::Call, key: &str);
    /// [`Call::begin`].
    fn begin(call: &mut Self::Call) -> impl Future<Output = Result<(), Result<T, Self>>>;
    /// [`Call::begin_now`]: the gate without a future.
    fn begin_now(call: &mut Self::Call) -> Gate<T, Self>;
    /// [`Call::begin_after`]: for [`Gate::Wait`].
    fn begin_after(
        call: &mut Self::Call,
        wait: Duration,
    ) -> impl Future<Output = Result<(), Result<T, Self>>>;
    /// [`Call::run`].
    fn run<F: Future<Output = Result<T, Self>>>(
        call: &mut Self::Call,
        attempt: F,
    ) -> impl Future<Output = Result<T, Self>>;
    /// [`Call::run_untimed`], for sites without `timeout` or `deadline`.
    fn run_untimed<F: Future<Output = Result<T, Self>>>(
        call: &mut Self::Call,
        attempt: F,
    ) -> impl Future<Output = Result<T, Self>>;
    /// [`Call::end`].
    fn end(call: &mut Self::Call, result: Result<T, Self>) -> impl Future<Output = Next<T, Self>>;
    /// [`Call::end_now`]: the decision without a future; the caller waits out
    /// [`Step::Wait`] with [`Engine::sleep`].
    fn end_now(call: &mut Self::Call, result: Result<T, Self>) -> Step<T, Self>;
    /// The wait of [`Step::Wait`].
    fn sleep(wait: Duration) -> impl Future<Output = ()>;
    /// [`Call::end_now`] for the only attempt of a site that never repeats (no retries, no
    /// `refresh`), so that the body may move its arguments: such a site always gets
    /// [`Step::Return`].
    fn end_once(call: &mut Self::Call, result: Result<T, Self>) -> Result<T, Self>;
    /// [`Call::begin_blocking`].
    fn begin_blocking(call: &mut Self::Call) -> Result<(), Result<T, Self>>;
    /// [`Call::run_blocking`].
    fn run_blocking(
        call: &mut Self::Call,
        attempt: impl FnOnce() -> Result<T, Self>,
    ) -> Result<T, Self>;
    /// [`Call::end_blocking`].
    fn end_blocking(call: &mut Self::Call, result: Result<T, Self>) -> Next<T, Self>;
    /// The wait of [`Step::Wait`] for a blocking call.
    fn sleep_blocking(call: &mut Self::Call, wait: Duration);
    /// [`Engine::end_once`] for a blocking call.
    fn end_once_blocking(call: &mut Self::Call, result: Result<T, Self>) -> Result<T, Self>;
    /// [`Call::fail`].
    fn fail(call: &mut Self::Call, error: Self) -> Result<T, Self>;
}

#[diagnostic::do_not_recommend]
impl<T, E: Classify> Engine<T> for E {
    type Call = Call<T, E>;

    #[inline(always)]
    fn start(site: &'static Site, hooks: Hooks<T, E>) -> Call<T, E> {
        Call::new(site, hooks)
    }
    #[inline(always)]
    fn set_idempotency_key(call: &mut Call<T, E>, key: String) {
        call.set_idempotency_key(key);
    }
    #[inline(always)]
    fn set_breaker_key(call: &mut Call<T, E>, key: &str) {
        call.set_breaker_key(key);
    }
    #[inline(always)]
    fn begin(call: &mut Call<T, E>) -> impl Future<Output = Result<(), Result<T, E>>> {
        call.begin()
    }
    #[inline(always)]
    fn begin_now(call: &mut Call<T, E>) -> Gate<T, E> {
        call.begin_now()
    }
    #[inline(always)]
    fn begin_after(
        call: &mut Call<T, E>,
        wait: Duration,
    ) -> impl Future<Output = Result<(), Result<T, E>>> {
        call.begin_after(wait)
    }
    #[inline(always)]
    fn run<F: Future<Output = Result<T, E>>>(
        call: &mut Call<T, E>,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> {
        call.run(attempt)
    }
    #[inline(always)]
    fn run_untimed<F: Future<Output = Result<T, E>>>(
        call: &mut Call<T, E>,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> {
        call.run_untimed(attempt)
    }
    #[inline(always)]
    fn end(call: &mut Call<T, E>, result: Result<T, E>) -> impl Future<Output = Next<T, E>> {
        call.end(result)
    }
    #[inline(always)]
    fn end_now(call: &mut Call<T, E>, result: Result<T, E>) -> Step<T, E> {
        call.end_now(result)
    }
    #[inline(always)]
    fn sleep(wait: Duration) -> impl Future<Output = ()> {
        Call::<T, E>::sleep(wait)
    }
    #[inline(always)]
    fn end_once(call: &mut Call<T, E>, result: Result<T, E>) -> Result<T, E> {
        only_return(call.end_now(result))
    }
    #[inline(always)]
    fn begin_blocking(call: &mut Call<T, E>) -> Result<(), Result<T, E>> {
        call.begin_blocking()
    }
    #[inline(always)]
    fn run_blocking(call: &mut Call<T, E>, attempt: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        call.run_blocking(attempt)
    }
    #[inline(always)]
    fn end_blocking(call: &mut Call<T, E>, result: Result<T, E>) -> Next<T, E> {
        call.end_blocking(result)
    }
    #[inline(always)]
    fn sleep_blocking(call: &mut Call<T, E>, wait: Duration) {
        call.wait_blocking(wait);
    }
    #[inline(always)]
    fn end_once_blocking(call: &mut Call<T, E>, result: Result<T, E>) -> Result<T, E> {
        only_return(call.end_now(result))
    }
    #[inline(always)]
    fn fail(call: &mut Call<T, E>, error: E) -> Result<T, E> {
        call.fail(error)
    }
}

#[inline(always)]
fn only_return<T, E>(step: Step<T, E>) -> Result<T, E> {
    match step {
        Step::Return(r) => r,
        // `Call::end` retries only while the policy's `retries` allow it, and refreshes only when
        // the site has the refresh hook: a site expanded with `end_once` has neither.
        Step::Wait(_) | Step::Refresh => {
            unreachable!("a site without retries or refresh was asked to make another attempt")
        }
    }
}

/// Starts a call; named with the fn's return type so that "not a `Result`" and "does not
/// classify" are reported once, at the return type.
#[inline(always)]
pub fn start<R: ReturnType>(
    site: &'static Site,
    hooks: Hooks<R::Ok, R::Err>,
) -> <R::Err as Engine<R::Ok>>::Call
where
    R::Err: Engine<R::Ok>,
{
    <R::Err as Engine<R::Ok>>::start(site, hooks)
}

/// A fresh copy of an owned argument for one attempt; see [`CloneArg`].
#[inline]
pub fn clone_arg<T: CloneArg>(arg: &T) -> T {
    arg.clone_arg()
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
