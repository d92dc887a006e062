//! HTTP helpers (feature `http`; `reqwest` adds [`Classify`] for `reqwest::Error`).
//!
//! - [`class_of`]: the class of an [`http::StatusCode`], from the seeds' table.
//! - [`retry_after`]: the server's `Retry-After` from a [`HeaderMap`], in both forms:
//!   delta-seconds (fractional values such as Graph's `"1.5"` included) and an HTTP-date (parsed by
//!   [`httpdate`](https://docs.rs/httpdate)).
//! - [`StatusError`]: a ready error for a failed response that keeps its status and wait hint.
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
//! use resilience_runtime::{http::{class_of, retry_after, StatusError}, Classify, ErrorClass};
//!
//! assert_eq!(class_of(StatusCode::TOO_MANY_REQUESTS), ErrorClass::Transient);
//! let mut headers = HeaderMap::new();
//! headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
//! assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
//!
//! let e = StatusError::from_parts(StatusCode::SERVICE_UNAVAILABLE, &headers).unwrap();
//! assert_eq!((e.class(), e.code(), e.retry_after()), (ErrorClass::Transient, Some("503"), Some(Duration::from_millis(1500))));
//! assert!(StatusError::from_parts(StatusCode::OK, &headers).is_none());
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use ::http::header::RETRY_AFTER;
use ::http::{HeaderMap, StatusCode};

use crate::{Classify, ErrorClass};

/// The class of a status (see [`ErrorClass::from_http_status`]). Only meaningful for a failure:
/// check [`is_failure`] first.
pub fn class_of(status: StatusCode) -> ErrorClass {
    ErrorClass::from_http_status(status.as_u16())
}

/// Whether a status is a failure (4xx or 5xx).
pub fn is_failure(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// The wait the server asked for in `Retry-After`, measured from now (see [`retry_after_at`]).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// The wait the server asked for in `Retry-After`, measured from `now`.
///
/// The first value that parses wins. A date in the past is a wait of zero; an unparsable,
/// negative or non-finite value is ignored.
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get_all(RETRY_AFTER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| parse_retry_after(v, now))
}

/// Parses one `Retry-After` value: delta-seconds (`"120"`, `"1.5"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the obsolete forms `httpdate` accepts).
///
/// Delta-seconds may have any number of digits (RFC 9110 sets no limit): a value too large for a
/// [`Duration`] is read as [`Duration::MAX`], so that it is longer than any wait honoured and
/// ends the call as `retry_after_too_long` rather than being ignored. What is neither form is
/// ignored, exponents (`"1e12"`) and signs (`"-1"`) included: they are not valid `Retry-After`
/// values.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use resilience_runtime::http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 07:27:50 GMT
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
/// assert_eq!(parse_retry_after("0.25", now), Some(Duration::from_millis(250)));
/// assert_eq!(parse_retry_after("18446744073709551616", now), Some(Duration::MAX));
/// assert_eq!(parse_retry_after("-1", now), None);
/// assert_eq!(parse_retry_after("1e12", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        // Digits only, so never negative or NaN: a failure is an overflow.
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failed HTTP response as an error: its status and its `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    status: StatusCode,
    retry_after: Option<Duration>,
}

impl StatusError {
    /// The error of a failed response (4xx, 5xx); `None` for any other status.
    pub fn from_parts(status: StatusCode, headers: &HeaderMap) -> Option<StatusError> {
        is_failure(status).then(|| StatusError {
            status,
            retry_after: retry_after(headers),
        })
    }

    /// The error of a failed [`http::Response`]; `None` for success.
    pub fn from_response<B>(response: &::http::Response<B>) -> Option<StatusError> {
        Self::from_parts(response.status(), response.headers())
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http status {}", self.status)
    }
}

impl std::error::Error for StatusError {}

impl Classify for StatusError {
    fn class(&self) -> ErrorClass {
        class_of(self.status)
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn code(&self) -> Option<&str> {
        crate::__private::status_code_str(self.status.as_u16())
    }
}

/// The error with the query string and fragment taken off its URL, which keeps the scheme, host
/// and path for the log. `reqwest::Error`'s `Display` prints the URL it failed on, and a query
/// often carries a credential (`?access_token=...`, `?code=...`, a signed URL's signature); an
/// error type that wraps it (`#[error(transparent)] Network(reqwest::Error)`) would print it on.
/// Strip it where the error enters the connector's type:
///
/// ```
/// use resilience_runtime::http::without_query;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let e = reqwest::Client::new()
///     .get("http://127.0.0.1:1/devices?access_token=hunter2")
///     .send()
///     .await
///     .unwrap_err();
/// assert!(e.to_string().contains("hunter2"));
/// let e = without_query(e);
/// assert!(!e.to_string().contains("hunter2"));
/// assert_eq!(e.url().map(|u| u.as_str()), Some("http://127.0.0.1:1/devices"));
/// # }
/// ```
#[cfg(feature = "reqwest")]
pub fn without_query(mut e: reqwest::Error) -> reqwest::Error {
    if let Some(u) = e.url_mut() {
        u.set_query(None);
        u.set_fragment(None);
    }
    e
}

#[cfg(feature = "reqwest")]
mod reqwest_impl {
    use std::error::Error;
    use std::io;

    use crate::{Classify, ErrorClass};

    fn io_kind_transient(e: &(dyn Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::NotConnected
                );
            }
            cur = e.source();
        }
        false
    }

    /// `reqwest::Error` classified: a status by the table; connect errors, timeouts, connection
    /// resets and other transport failures of a sent request are transient; decode, builder and
    /// redirect errors are permanent.
    ///
    /// ```
    /// use resilience_runtime::{Classify, ErrorClass};
    /// let e = reqwest::Client::new().get("not a url").build().unwrap_err();
    /// assert_eq!(e.class(), ErrorClass::Permanent);
    /// assert_eq!(e.code(), Some("builder"));
    /// ```
    impl Classify for reqwest::Error {
        fn class(&self) -> ErrorClass {
            if let Some(s) = self.status() {
                return super::class_of(s);
            }
            if self.is_timeout() || self.is_connect() {
                return ErrorClass::Transient;
            }
            if self.is_decode() || self.is_builder() || self.is_redirect() {
                return ErrorClass::Permanent;
            }
            if self.is_request() || self.is_body() || io_kind_transient(self) {
                return ErrorClass::Transient;
            }
            ErrorClass::Permanent
        }

        fn code(&self) -> Option<&str> {
            if let Some(s) = self.status() {
                return crate::__private::status_code_str(s.as_u16());
            }
            Some(if self.is_timeout() {
                "timeout"
            } else if self.is_connect() {
                "connect"
            } else if self.is_decode() {
                "decode"
            } else if self.is_builder() {
                "builder"
            } else if self.is_redirect() {
                "redirect"
            } else if self.is_body() {
                "body"
            } else {
                "request"
            })
        }
    }
}
