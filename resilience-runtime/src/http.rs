//! HTTP helpers (feature `http`; `reqwest` adds [`Classify`] for `reqwest::Error`).
//!
//! - [`class_of`]: the class of an [`http::StatusCode`], from the seeds' table.
//! - [`retry_after`]: the server's `Retry-After` from a [`HeaderMap`], in both forms:
//!   delta-seconds (fractional values such as Graph's `"1.5"` included) and an HTTP-date (parsed by
//!   [`httpdate`](https://docs.rs/httpdate)).
//! - [`Classifier`]: a response's status and headers to a [`Verdict`] (a class and a wait hint),
//!   with presets for the platforms that say more than the status: [`Classifier::github`]'s
//!   rate-limited 403s and `x-ratelimit-reset`, [`Classifier::graph`], [`Classifier::slack`],
//!   and [`Rule`]s of your own.
//! - [`StatusError`]: a ready error for a failed response that keeps its status and verdict.
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
//! use resilience_runtime::{http::{class_of, retry_after, Classifier, StatusError}, Classify, ErrorClass};
//!
//! assert_eq!(class_of(StatusCode::TOO_MANY_REQUESTS), ErrorClass::Throttled);
//! let mut headers = HeaderMap::new();
//! headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
//! assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
//!
//! let e = StatusError::from_parts(StatusCode::SERVICE_UNAVAILABLE, &headers).unwrap();
//! assert_eq!((e.class(), e.code(), e.retry_after()), (ErrorClass::Transient, Some("503"), Some(Duration::from_millis(1500))));
//! assert!(StatusError::from_parts(StatusCode::OK, &headers).is_none());
//!
//! // GitHub's secondary rate limit: a 403 with `retry-after` is throttling, not a policy.
//! headers.insert(RETRY_AFTER, HeaderValue::from_static("60"));
//! let verdict = Classifier::github().classify(StatusCode::FORBIDDEN, &headers);
//! assert_eq!((verdict.class(), verdict.retry_after()), (ErrorClass::Throttled, Some(Duration::from_secs(60))));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::http::header::RETRY_AFTER;
use ::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

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

/// What a [`Classifier`] says about a failed response: its class and the wait the server asked
/// for, with the status it was made from.
///
/// It classifies as it says ([`Classify`]), and a `#[derive(ConnectorError)]` variant takes both
/// its class and its hint from a field of this type marked `#[connector(verdict)]`:
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use resilience_runtime::http::{Classifier, Verdict};
/// use resilience_runtime::{Classify, ConnectorError, ErrorClass};
///
/// #[derive(Debug, ConnectorError)]
/// enum GitHubError {
///     Http(#[connector(verdict)] Verdict),
/// }
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", HeaderValue::from_static("30"));
/// let e = GitHubError::Http(Classifier::github().classify(StatusCode::FORBIDDEN, &headers));
/// assert_eq!(e.class(), ErrorClass::Throttled);
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(e.code(), Some("403"));
///
/// let hand_made = Verdict::new(StatusCode::CONFLICT, ErrorClass::Permanent);
/// assert_eq!((hand_made.class(), hand_made.retry_after()), (ErrorClass::Permanent, None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    status: StatusCode,
    class: ErrorClass,
    retry_after: Option<Duration>,
}

impl Verdict {
    /// A verdict of `class` for `status`, without a wait hint.
    pub const fn new(status: StatusCode, class: ErrorClass) -> Verdict {
        Verdict {
            status,
            class,
            retry_after: None,
        }
    }

    /// Sets the wait hint.
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Verdict {
        self.retry_after = retry_after;
        self
    }

    /// The class.
    pub const fn class(&self) -> ErrorClass {
        self.class
    }

    /// How long the server asked the client to wait, if it did.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The status the verdict was made from.
    pub const fn status(&self) -> StatusCode {
        self.status
    }
}

impl Classify for Verdict {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn code(&self) -> Option<&str> {
        crate::__private::status_code_str(self.status.as_u16())
    }
}

/// Where a [`Rule`] reads the wait the server asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// No hint: the site's backoff decides the wait.
    None,
    /// `Retry-After`, delta-seconds or an HTTP-date ([`parse_retry_after`]).
    RetryAfter,
    /// A header holding the Unix time, in seconds, at which the limit resets (GitHub's
    /// `x-ratelimit-reset`): the wait is that time minus now, zero when it is past. Digits only; a
    /// time beyond the system clock's range is the longest wait there is ([`Duration::MAX`]), so
    /// the call ends as `retry_after_too_long` rather than ignoring it.
    ResetAt(HeaderName),
    /// A fixed wait, for a platform that documents one where it sends no header.
    Fixed(Duration),
}

impl Hint {
    fn read(&self, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        match self {
            Hint::None => None,
            Hint::RetryAfter => retry_after_at(headers, now),
            Hint::ResetAt(name) => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| parse_reset_at(v, now)),
            Hint::Fixed(d) => Some(*d),
        }
    }
}

/// Parses an epoch-seconds reset time (`"1700000000"`) into the wait from `now`.
fn parse_reset_at(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits only, so a parse failure is an overflow: the longest wait.
    let Ok(secs) = v.parse::<u64>() else {
        return Some(Duration::MAX);
    };
    let Some(at) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) else {
        return Some(Duration::MAX);
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A condition a [`Rule`] puts on a header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderCondition {
    Present(HeaderName),
    Equals(HeaderName, HeaderValue),
}

impl HeaderCondition {
    fn holds(&self, headers: &HeaderMap) -> bool {
        match self {
            HeaderCondition::Present(name) => headers.contains_key(name),
            HeaderCondition::Equals(name, value) => headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes().trim_ascii() == value.as_bytes()),
        }
    }
}

/// One rule of a [`Classifier`]: for these statuses, when these headers say so, this class, with
/// the wait read from this [`Hint`] (`Retry-After` unless set).
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
/// use resilience_runtime::http::{Classifier, Hint, Rule};
/// use resilience_runtime::ErrorClass;
///
/// // An API that answers 503 with `x-throttled: true` when it sheds load per client.
/// let c = Classifier::new().with_rule(
///     Rule::new([StatusCode::SERVICE_UNAVAILABLE], ErrorClass::Throttled)
///         .with_header_eq(HeaderName::from_static("x-throttled"), HeaderValue::from_static("true"))
///         .with_hint(Hint::Fixed(Duration::from_secs(5))),
/// );
/// let mut headers = HeaderMap::new();
/// assert_eq!(c.classify(StatusCode::SERVICE_UNAVAILABLE, &headers).class(), ErrorClass::Transient);
/// headers.insert("x-throttled", HeaderValue::from_static("true"));
/// let v = c.classify(StatusCode::SERVICE_UNAVAILABLE, &headers);
/// assert_eq!((v.class(), v.retry_after()), (ErrorClass::Throttled, Some(Duration::from_secs(5))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    statuses: Vec<StatusCode>,
    headers: Vec<HeaderCondition>,
    class: ErrorClass,
    hint: Hint,
}

impl Rule {
    /// A rule giving `class` to a response with one of `statuses`, its hint read from
    /// `Retry-After`.
    pub fn new(statuses: impl IntoIterator<Item = StatusCode>, class: ErrorClass) -> Rule {
        Rule {
            statuses: statuses.into_iter().collect(),
            headers: Vec::new(),
            class,
            hint: Hint::RetryAfter,
        }
    }

    /// Applies only when the response has the header `name`.
    pub fn with_header(mut self, name: HeaderName) -> Rule {
        self.headers.push(HeaderCondition::Present(name));
        self
    }

    /// Applies only when one of the response's `name` headers is `value` (surrounding spaces
    /// aside).
    pub fn with_header_eq(mut self, name: HeaderName, value: HeaderValue) -> Rule {
        self.headers.push(HeaderCondition::Equals(name, value));
        self
    }

    /// Reads the wait from `hint`.
    pub fn with_hint(mut self, hint: Hint) -> Rule {
        self.hint = hint;
        self
    }

    fn verdict(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Verdict> {
        let applies =
            self.statuses.contains(&status) && self.headers.iter().all(|h| h.holds(headers));
        applies.then(|| {
            Verdict::new(status, self.class).with_retry_after(self.hint.read(headers, now))
        })
    }
}

/// A response's status and headers to a [`Verdict`]: the first of its [`Rule`]s that applies,
/// else the status table ([`class_of`]) with the `Retry-After` hint.
///
/// Some platforms say more than the status: GitHub answers a rate-limited request with 403 (or
/// 429) and says so in its headers, where a plain 403 is a refused permission. The presets know
/// them:
///
/// | preset | rules, before the status table |
/// |---|---|
/// | [`Classifier::github`] | 403 or 429 with `retry-after` (secondary limit): throttled, wait `retry-after`; 403 or 429 with `x-ratelimit-remaining: 0` (primary limit): throttled, wait until `x-ratelimit-reset`; any other 429: throttled, wait 60 s (GitHub's documented minimum) |
/// | [`Classifier::graph`] | none: Graph throttles with 429 and `Retry-After` in seconds, the table's form |
/// | [`Classifier::slack`] | none: Slack throttles with 429 and `Retry-After` in seconds, the table's form |
///
/// A verdict is meaningful for a failure (check [`is_failure`], or use [`Classifier::error`]).
/// The classifier is cheap to clone (its rules are shared).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use resilience_runtime::http::Classifier;
/// use resilience_runtime::ErrorClass;
///
/// let github = Classifier::github();
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let mut headers = HeaderMap::new();
/// // A plain 403 is a refused permission.
/// assert_eq!(github.classify(StatusCode::FORBIDDEN, &headers).class(), ErrorClass::PolicyViolation);
/// // The primary rate limit: no request left until the reset.
/// headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
/// headers.insert("x-ratelimit-reset", HeaderValue::from_static("1700000042"));
/// let v = github.classify_at(StatusCode::FORBIDDEN, &headers, now);
/// assert_eq!((v.class(), v.retry_after()), (ErrorClass::Throttled, Some(Duration::from_secs(42))));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classifier {
    rules: Arc<Vec<Rule>>,
}

impl Classifier {
    /// No rules: the status table with the `Retry-After` hint.
    pub fn new() -> Classifier {
        Classifier::default()
    }

    /// Adds `rule`, consulted after the rules added before it.
    pub fn with_rule(mut self, rule: Rule) -> Classifier {
        Arc::make_mut(&mut self.rules).push(rule);
        self
    }

    /// Microsoft Graph: the status table, 429 throttled, with `Retry-After` (Graph sends delta
    /// seconds; both forms are read).
    pub fn graph() -> Classifier {
        Classifier::new()
    }

    /// GitHub's REST API: its primary rate limit (403 or 429 with `x-ratelimit-remaining: 0`,
    /// wait until `x-ratelimit-reset`, in Unix seconds) and its secondary limits (403 or 429 with
    /// `retry-after`; a 429 without either waits 60 s) are throttled; a 403 without those headers
    /// stays a policy violation. Where both are sent, `retry-after` wins, as GitHub's
    /// documentation orders them.
    pub fn github() -> Classifier {
        let limited = [StatusCode::FORBIDDEN, StatusCode::TOO_MANY_REQUESTS];
        Classifier::new()
            .with_rule(Rule::new(limited, ErrorClass::Throttled).with_header(RETRY_AFTER))
            .with_rule(
                Rule::new(limited, ErrorClass::Throttled)
                    .with_header_eq(
                        HeaderName::from_static("x-ratelimit-remaining"),
                        HeaderValue::from_static("0"),
                    )
                    .with_hint(Hint::ResetAt(HeaderName::from_static("x-ratelimit-reset"))),
            )
            .with_rule(
                Rule::new([StatusCode::TOO_MANY_REQUESTS], ErrorClass::Throttled)
                    .with_hint(Hint::Fixed(Duration::from_secs(60))),
            )
    }

    /// Slack's Web API: the status table, 429 throttled, with `Retry-After` in seconds.
    pub fn slack() -> Classifier {
        Classifier::new()
    }

    /// The verdict on a response, with waits measured from the system clock's now (see
    /// [`classify_at`](Classifier::classify_at)).
    pub fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        self.classify_at(status, headers, SystemTime::now())
    }

    /// The verdict on a response, with waits measured from `now` (an HTTP-date or a reset time
    /// in the past is a wait of zero).
    pub fn classify_at(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
        self.rules
            .iter()
            .find_map(|r| r.verdict(status, headers, now))
            .unwrap_or_else(|| {
                Verdict::new(status, class_of(status))
                    .with_retry_after(retry_after_at(headers, now))
            })
    }

    /// The error of a failed response (4xx, 5xx) with this classifier's verdict; `None` for any
    /// other status.
    pub fn error(&self, status: StatusCode, headers: &HeaderMap) -> Option<StatusError> {
        is_failure(status).then(|| StatusError::from(self.classify(status, headers)))
    }
}

/// A failed HTTP response as an error: its status and the [`Verdict`] on it (by the status table
/// and `Retry-After` with [`StatusError::from_parts`], by any [`Classifier`] with
/// [`Classifier::error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    verdict: Verdict,
}

impl StatusError {
    /// The error of a failed response (4xx, 5xx), classified by the status table with its
    /// `Retry-After`; `None` for any other status.
    pub fn from_parts(status: StatusCode, headers: &HeaderMap) -> Option<StatusError> {
        is_failure(status).then(|| StatusError {
            verdict: Verdict::new(status, class_of(status)).with_retry_after(retry_after(headers)),
        })
    }

    /// The error of a failed [`http::Response`]; `None` for success.
    pub fn from_response<B>(response: &::http::Response<B>) -> Option<StatusError> {
        Self::from_parts(response.status(), response.headers())
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.verdict.status
    }

    /// The verdict: the class and the wait hint.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

/// The error of a verdict (made by a [`Classifier`] or by hand).
impl From<Verdict> for StatusError {
    fn from(verdict: Verdict) -> StatusError {
        StatusError { verdict }
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http status {}", self.verdict.status)
    }
}

impl std::error::Error for StatusError {}

impl Classify for StatusError {
    fn class(&self) -> ErrorClass {
        self.verdict.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.verdict.retry_after
    }
    fn code(&self) -> Option<&str> {
        self.verdict.code()
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
