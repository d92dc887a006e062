//! gRPC terminal errors (seed 003) with [`tonic`](https://docs.rs/tonic) (feature `tonic`).
//!
//! A [`TerminalError`] becomes a [`tonic::Status`] whose code a remote caller already treats as
//! not retryable (`PERMISSION_DENIED` for `operation_not_permitted`, `FAILED_PRECONDITION`
//! otherwise), with the detail as the message and a structured
//! [`ErrorInfo`](tonic_types::ErrorInfo) (`reason` = `LICENSE_EXHAUSTED`, ..., `domain` =
//! [`DOMAIN`]) in the status details. On the other side, [`find_terminal`] finds the reason again
//! in a status, or anywhere in an error's `source()` chain.
//!
//! A rate limit travels as `RESOURCE_EXHAUSTED` with a [`RetryInfo`](tonic_types::RetryInfo)
//! detail ([`rate_limited`]); such a status classifies as
//! [`Throttled`](crate::ErrorClass::Throttled) with the `RetryInfo`'s delay as its wait hint, so a
//! site waits for it and its `rate_limit` pauses for it. [`find_status`] finds the status in an
//! error's `source()` chain, for an error type that wraps one.
//!
//! ```
//! use resilience_runtime::tonic::{find_terminal, to_status};
//! use resilience_runtime::{TerminalError, TerminalReason};
//!
//! let e = TerminalError::new(TerminalReason::UserNotProvisionable, "user is suspended");
//! let status = to_status(&e);
//! assert_eq!(status.code(), tonic::Code::FailedPrecondition);
//! assert_eq!(status.message(), "user is suspended");
//!
//! // Through the wire: the status travels in HTTP/2 headers (trailers).
//! let http = status.into_http::<()>();
//! let back = tonic::Status::from_header_map(http.headers()).unwrap();
//! assert_eq!(find_terminal(&back), Some(e));
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use ::tonic::{Code, Status};
use ::tonic_types::{ErrorDetails, StatusExt};

use crate::{Classify, ErrorClass, GrpcCode, TerminalError, TerminalReason};

/// The `ErrorInfo` domain of the statuses [`to_status`] makes.
pub const DOMAIN: &str = "resilience.connector";

/// The tonic code of a [`GrpcCode`].
pub fn code(code: GrpcCode) -> Code {
    match code {
        GrpcCode::PermissionDenied => Code::PermissionDenied,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
    }
}

/// The `ErrorInfo` reason of a terminal reason: its name in upper case (`LICENSE_EXHAUSTED`), as
/// `ErrorInfo` asks (`[A-Z0-9_]+`).
pub fn error_info_reason(reason: TerminalReason) -> String {
    reason.as_str().to_ascii_uppercase()
}

/// A terminal error as a status in the [`DOMAIN`] domain.
pub fn to_status(err: &TerminalError) -> Status {
    to_status_in(err, DOMAIN)
}

/// A terminal error as a status whose `ErrorInfo` names `domain` (your service's name).
pub fn to_status_in(err: &TerminalError, domain: &str) -> Status {
    let reason = err.reason();
    Status::with_error_details(
        code(reason.grpc_code()),
        err.detail(),
        ErrorDetails::with_error_info(error_info_reason(reason), domain, HashMap::new()),
    )
}

impl From<TerminalError> for Status {
    fn from(err: TerminalError) -> Status {
        to_status(&err)
    }
}

/// The terminal error a status carries in its `ErrorInfo`, whatever the domain, if its reason
/// names a [`TerminalReason`].
pub fn from_status(status: &Status) -> Option<TerminalError> {
    let info = status.get_details_error_info()?;
    let reason: TerminalReason = info.reason.to_ascii_lowercase().parse().ok()?;
    Some(TerminalError::new(reason, status.message()))
}

/// Finds a terminal error anywhere in an error's `source()` chain, the error itself included: a
/// [`TerminalError`] link, a [`tonic::Status`] link with an `ErrorInfo`, or (without its detail)
/// any link [`find_terminal_reason`](crate::find_terminal_reason) recognises.
pub fn find_terminal(err: &(dyn Error + 'static)) -> Option<TerminalError> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<TerminalError>() {
            return Some(t.clone());
        }
        if let Some(t) = e.downcast_ref::<Status>().and_then(from_status) {
            return Some(t);
        }
        cur = e.source();
    }
    crate::find_terminal_reason(err).map(|r| TerminalError::new(r, err.to_string()))
}

/// A rate limit: `RESOURCE_EXHAUSTED` with a `RetryInfo` asking the caller to wait
/// `retry_after`. It classifies as [`Throttled`](ErrorClass::Throttled), with that wait as its
/// hint ([`retry_delay`]).
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::tonic::{rate_limited, retry_delay};
/// use resilience_runtime::{Classify, ErrorClass};
///
/// let status = rate_limited("too many grants", Duration::from_millis(250));
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// let back = tonic::Status::from_header_map(status.into_http::<()>().headers()).unwrap();
/// assert_eq!(retry_delay(&back), Some(Duration::from_millis(250)));
/// assert_eq!((back.class(), back.retry_after()), (ErrorClass::Throttled, Some(Duration::from_millis(250))));
/// ```
pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// The wait a status's `RetryInfo` detail asks for, if it has one.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// The first [`tonic::Status`] in an error's `source()` chain, the error itself included: how an
/// error type that wraps a status (with the call's context) classifies by it.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::tonic::{find_status, rate_limited};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("grant failed")]
/// struct GrantError(#[source] tonic::Status);
///
/// let e = GrantError(rate_limited("slow down", Duration::from_secs(1)));
/// assert_eq!(find_status(&e).map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
/// ```
pub fn find_status<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a Status> {
    let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<Status>() {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

/// The class of a gRPC code: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED` and
/// `ABORTED` are transient, `UNAUTHENTICATED` is auth, `PERMISSION_DENIED` a policy violation,
/// and everything else permanent.
pub fn class_of(code: Code) -> ErrorClass {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted => {
            ErrorClass::Transient
        }
        Code::Unauthenticated => ErrorClass::Auth,
        Code::PermissionDenied => ErrorClass::PolicyViolation,
        _ => ErrorClass::Permanent,
    }
}

/// The canonical name of a gRPC code (`"UNAVAILABLE"`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status classified: a terminal reason in its details decides (never retried); else a
/// `RESOURCE_EXHAUSTED` with a `RetryInfo` is [`Throttled`](ErrorClass::Throttled); else its code
/// decides ([`class_of`]). A `RetryInfo`'s delay is the wait hint, whatever the code.
impl Classify for Status {
    fn class(&self) -> ErrorClass {
        match from_status(self) {
            Some(t) => t.reason().class(),
            None if self.code() == Code::ResourceExhausted && retry_delay(self).is_some() => {
                ErrorClass::Throttled
            }
            None => class_of(self.code()),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        retry_delay(self)
    }
    fn code(&self) -> Option<&str> {
        Some(code_name(Status::code(self)))
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        from_status(self).map(|t| t.reason())
    }
}
