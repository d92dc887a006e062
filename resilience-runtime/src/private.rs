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
pub use crate::engine::{Call, Hooks, Next, Override, Policy, Site};

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

/// Starts a call; named with the fn's return type so errors point at it.
#[inline]
pub fn call<R: ReturnType>(site: &'static Site, hooks: Hooks<R::Ok, R::Err>) -> Call<R::Ok, R::Err>
where
    R::Err: Classify,
{
    Call::new(site, hooks)
}

/// Wraps a rejection in the site's error type.
#[inline]
pub fn from_rejected<E: CarriesRejected>(r: Rejected) -> E {
    E::from_rejected(r)
}

/// Checks that a `refresh` hook returns a future of `Result<(), E>`.
#[inline]
pub fn check_refresh<E, F: Future<Output = Result<(), E>>>(f: F) -> F {
    f
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
