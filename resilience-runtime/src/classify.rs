//! Error classification: what a failure means for the next attempt.
//!
//! Every error an annotated fn returns is classified into one [`ErrorClass`]. The class decides
//! what the engine does next:
//!
//! | class | retried | counts for the breaker | typical source |
//! |---|---|---|---|
//! | [`ErrorClass::Transient`] | yes, with backoff | yes (a failure) | 408, 500, 502, 503, 504, timeouts, resets |
//! | [`ErrorClass::Throttled`] | yes, after the server's hint (else the backoff); pauses the site's rate limiter | no | 429, GitHub's rate-limited 403 |
//! | [`ErrorClass::Permanent`] | no | no | 400, 404, 409, 422, decode errors |
//! | [`ErrorClass::PolicyViolation`] | no, escalated | no | 403, RBAC or scope violations |
//! | [`ErrorClass::Auth`] | once, after a credential refresh | no | 401 |
//!
//! How the breaker counts an error can be set apart from its class, per error, with
//! [`Classify::breaker_outcome`] (`#[connector(breaker = "...")]` on a derived variant).
//!
//! Errors that must never be retried because the target's state forbids the operation carry a
//! [`TerminalReason`] (user not provisionable, license exhausted, ...), each with the gRPC code a
//! remote caller sees.

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::Outcome;

/// What a failure means for the next attempt.
///
/// # Example
///
/// ```
/// use resilience_runtime::ErrorClass;
///
/// assert_eq!(ErrorClass::from_http_status(503), ErrorClass::Transient);
/// assert_eq!(ErrorClass::from_http_status(429), ErrorClass::Throttled);
/// assert_eq!(ErrorClass::from_http_status(403), ErrorClass::PolicyViolation);
/// assert!(ErrorClass::Throttled.is_retryable());
/// assert!(!ErrorClass::Throttled.counts_for_breaker());
/// assert_eq!(ErrorClass::PolicyViolation.as_str(), "policy_violation");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// Temporary: retry with backoff. Counts as a failure for the circuit breaker.
    Transient,
    /// The server asked the client to slow down (429): retried after the server's hint
    /// ([`Classify::retry_after`], `Retry-After`), or the backoff without one. Never a failure for
    /// the circuit breaker (the dependency is healthy, merely throttling), and when the site has a
    /// `rate_limit` the hint pauses that whole named limiter, so that every call through it waits
    /// until the hint has passed (see [`RateLimit::pause`](crate::limit::RateLimit::pause)).
    Throttled,
    /// Will not succeed on retry: fail at once and log.
    Permanent,
    /// A policy forbids the operation: never retried, blocked and escalated.
    PolicyViolation,
    /// Credentials were refused: refresh them (with the site's `refresh` hook) and try again.
    Auth,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Transient,
        ErrorClass::Throttled,
        ErrorClass::Permanent,
        ErrorClass::PolicyViolation,
        ErrorClass::Auth,
    ];

    /// The class of an HTTP status code, from the connector platforms' common table.
    ///
    /// | status | class |
    /// |---|---|
    /// | 408, 500, 502, 503, 504 | `Transient` |
    /// | 429 | `Throttled` (retried after the hint, as the seeds require; no breaker failure) |
    /// | 401 | `Auth` |
    /// | 403 | `PolicyViolation` |
    /// | 400, 404, 409, 422 and every other status | `Permanent` |
    ///
    /// Other 5xx statuses (501 Not Implemented, 505, ...) describe a server that will answer the same
    /// way next time, so they are permanent too.
    ///
    /// ```
    /// use resilience_runtime::ErrorClass;
    ///
    /// for s in [408, 500, 502, 503, 504] {
    ///     assert_eq!(ErrorClass::from_http_status(s), ErrorClass::Transient);
    /// }
    /// assert_eq!(ErrorClass::from_http_status(429), ErrorClass::Throttled);
    /// for s in [400, 404, 409, 422] {
    ///     assert_eq!(ErrorClass::from_http_status(s), ErrorClass::Permanent);
    /// }
    /// assert_eq!(ErrorClass::from_http_status(401), ErrorClass::Auth);
    /// ```
    pub const fn from_http_status(status: u16) -> ErrorClass {
        match status {
            408 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
            429 => ErrorClass::Throttled,
            401 => ErrorClass::Auth,
            403 => ErrorClass::PolicyViolation,
            _ => ErrorClass::Permanent,
        }
    }

    /// The class's name as it appears in logs, metrics and error events.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
            ErrorClass::PolicyViolation => "policy_violation",
            ErrorClass::Auth => "auth",
        }
    }

    /// Whether the engine retries an error of this class: transient errors with backoff,
    /// throttled ones after the server's hint (or the backoff without one).
    pub const fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Throttled)
    }

    /// Whether an error of this class counts as a failure for a circuit breaker. Only transient
    /// failures do: a 4xx says nothing about the dependency's health, and a throttled answer says
    /// it is healthy but busy (a burst of 429s must not open the breaker). An error can say
    /// otherwise for itself with [`Classify::breaker_outcome`].
    pub const fn counts_for_breaker(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// What the circuit breaker records for an error of this class, unless the error says
    /// otherwise ([`Classify::breaker_outcome`]): a failure for a transient error, nothing for
    /// any other.
    ///
    /// ```
    /// use resilience_runtime::breaker::Outcome;
    /// use resilience_runtime::ErrorClass;
    ///
    /// assert_eq!(ErrorClass::Transient.breaker_outcome(), Outcome::Failure);
    /// assert_eq!(ErrorClass::Throttled.breaker_outcome(), Outcome::Ignored);
    /// ```
    pub const fn breaker_outcome(self) -> Outcome {
        if self.counts_for_breaker() {
            Outcome::Failure
        } else {
            Outcome::Ignored
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorClass`].
///
/// Derive it with `#[derive(ConnectorError)]`; implement it by hand only for errors the derive
/// cannot see. The trait is object-safe.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::{Classify, ErrorClass};
///
/// #[derive(Debug)]
/// struct HttpError { status: u16, retry_after: Option<Duration> }
///
/// impl Classify for HttpError {
///     fn class(&self) -> ErrorClass {
///         ErrorClass::from_http_status(self.status)
///     }
///     fn retry_after(&self) -> Option<Duration> {
///         self.retry_after
///     }
/// }
///
/// let e: &dyn Classify = &HttpError { status: 429, retry_after: Some(Duration::from_secs(2)) };
/// assert_eq!(e.class(), ErrorClass::Throttled);
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not classify its errors",
    label = "this error type has no classification",
    note = "derive it: `#[derive(ConnectorError)]` with `#[connector(transient)]`, `#[connector(permanent)]`, ... on each variant",
    note = "or implement `resilience_runtime::Classify` by hand"
)]
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;

    /// How long the server asked the client to wait before the next request, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// A short machine-readable code (`"429"`, `"Forbidden"`), for logs, metrics and events.
    fn code(&self) -> Option<&str> {
        None
    }

    /// Why the operation can never succeed without a change of state at the target, if it cannot.
    fn terminal_reason(&self) -> Option<TerminalReason> {
        None
    }

    /// How a circuit breaker counts this error, when it is not what its class says
    /// ([`ErrorClass::breaker_outcome`]: a failure for a transient error, nothing for any other).
    /// `None`, the default, keeps the class's outcome. A timed-out attempt is always a failure.
    ///
    /// This is apart from whether the error is retried: a transient error that says nothing
    /// about the dependency's health (a lock held by another writer) can be retried and
    /// [`Outcome::Ignored`]; a permanent one that does (a corrupt answer) can end the call and be
    /// an [`Outcome::Failure`]. The derive sets it with `#[connector(breaker = "failure" |
    /// "success" | "ignored")]` on a variant.
    ///
    /// ```
    /// use resilience_runtime::breaker::Outcome;
    /// use resilience_runtime::{Classify, ErrorClass};
    ///
    /// #[derive(Debug)]
    /// enum DbError { Locked, Corrupt }
    ///
    /// impl Classify for DbError {
    ///     fn class(&self) -> ErrorClass {
    ///         match self {
    ///             DbError::Locked => ErrorClass::Transient,
    ///             DbError::Corrupt => ErrorClass::Permanent,
    ///         }
    ///     }
    ///     fn breaker_outcome(&self) -> Option<Outcome> {
    ///         Some(match self {
    ///             DbError::Locked => Outcome::Ignored,
    ///             DbError::Corrupt => Outcome::Failure,
    ///         })
    ///     }
    /// }
    ///
    /// assert_eq!(DbError::Locked.breaker_outcome(), Some(Outcome::Ignored));
    /// ```
    fn breaker_outcome(&self) -> Option<Outcome> {
        None
    }
}

impl<T: Classify + ?Sized> Classify for &T {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
    fn code(&self) -> Option<&str> {
        (**self).code()
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        (**self).terminal_reason()
    }
    fn breaker_outcome(&self) -> Option<Outcome> {
        (**self).breaker_outcome()
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
    fn code(&self) -> Option<&str> {
        (**self).code()
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        (**self).terminal_reason()
    }
    fn breaker_outcome(&self) -> Option<Outcome> {
        (**self).breaker_outcome()
    }
}

impl<T: Classify + ?Sized> Classify for Arc<T> {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
    fn code(&self) -> Option<&str> {
        (**self).code()
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        (**self).terminal_reason()
    }
    fn breaker_outcome(&self) -> Option<Outcome> {
        (**self).breaker_outcome()
    }
}

/// The gRPC status code a terminal error maps to.
///
/// Both codes are ones gRPC callers already treat as not retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum GrpcCode {
    /// `PERMISSION_DENIED` (7).
    PermissionDenied,
    /// `FAILED_PRECONDITION` (9).
    FailedPrecondition,
}

impl GrpcCode {
    /// The numeric code on the wire.
    pub const fn as_i32(self) -> i32 {
        match self {
            GrpcCode::PermissionDenied => 7,
            GrpcCode::FailedPrecondition => 9,
        }
    }
}

/// Why an operation can never succeed until something changes at the target.
///
/// A terminal error is never retried, and a remote caller sees the matching [`GrpcCode`].
///
/// ```
/// use resilience_runtime::{GrpcCode, TerminalReason};
///
/// let r: TerminalReason = "license_exhausted".parse().unwrap();
/// assert_eq!(r, TerminalReason::LicenseExhausted);
/// assert_eq!(r.grpc_code(), GrpcCode::FailedPrecondition);
/// assert_eq!(TerminalReason::OperationNotPermitted.grpc_code(), GrpcCode::PermissionDenied);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TerminalReason {
    /// The target user cannot be provisioned (suspended, deprovisioned, ...).
    UserNotProvisionable,
    /// The target is governed by something else (a group rule, an external directory).
    TargetManagedExternally,
    /// A capacity limit such as a license cap is reached.
    LicenseExhausted,
    /// The request failed the target's validation.
    ValidationFailure,
    /// A policy at the target forbids the operation.
    OperationNotPermitted,
}

impl TerminalReason {
    /// Every reason, in declaration order.
    pub const ALL: [TerminalReason; 5] = [
        TerminalReason::UserNotProvisionable,
        TerminalReason::TargetManagedExternally,
        TerminalReason::LicenseExhausted,
        TerminalReason::ValidationFailure,
        TerminalReason::OperationNotPermitted,
    ];

    /// The reason's name (`"license_exhausted"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            TerminalReason::UserNotProvisionable => "user_not_provisionable",
            TerminalReason::TargetManagedExternally => "target_managed_externally",
            TerminalReason::LicenseExhausted => "license_exhausted",
            TerminalReason::ValidationFailure => "validation_failure",
            TerminalReason::OperationNotPermitted => "operation_not_permitted",
        }
    }

    /// The gRPC code: `PermissionDenied` for `operation_not_permitted`, `FailedPrecondition`
    /// otherwise.
    pub const fn grpc_code(self) -> GrpcCode {
        match self {
            TerminalReason::OperationNotPermitted => GrpcCode::PermissionDenied,
            _ => GrpcCode::FailedPrecondition,
        }
    }

    /// The class of an error with this reason: a policy violation for `operation_not_permitted`,
    /// permanent otherwise. Neither is retried.
    pub const fn class(self) -> ErrorClass {
        match self {
            TerminalReason::OperationNotPermitted => ErrorClass::PolicyViolation,
            _ => ErrorClass::Permanent,
        }
    }
}

impl fmt::Display for TerminalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no [`TerminalReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTerminalReason(pub String);

impl fmt::Display for UnknownTerminalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown terminal reason `{}`; expected one of ", self.0)?;
        for (i, r) in TerminalReason::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{r}`")?;
        }
        Ok(())
    }
}

impl Error for UnknownTerminalReason {}

impl FromStr for TerminalReason {
    type Err = UnknownTerminalReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TerminalReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownTerminalReason(s.to_owned()))
    }
}

/// A ready-made terminal error: a reason plus a free-form detail for logs and administrators.
///
/// Wrap it anywhere in an error chain; [`find_terminal_reason`] finds it again.
///
/// ```
/// use resilience_runtime::{find_terminal_reason, TerminalError, TerminalReason};
///
/// #[derive(Debug)]
/// struct Wrapper(TerminalError);
/// impl std::fmt::Display for Wrapper {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("grant failed") }
/// }
/// impl std::error::Error for Wrapper {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
/// }
///
/// let e = Wrapper(TerminalError::new(TerminalReason::UserNotProvisionable, "user is suspended"));
/// assert_eq!(find_terminal_reason(&e), Some(TerminalReason::UserNotProvisionable));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalError {
    reason: TerminalReason,
    detail: String,
}

impl TerminalError {
    /// A terminal error with its reason and an administrator-facing detail.
    pub fn new(reason: TerminalReason, detail: impl Into<String>) -> Self {
        TerminalError {
            reason,
            detail: detail.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> TerminalReason {
        self.reason
    }

    /// The detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for TerminalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl Error for TerminalError {}

impl Classify for TerminalError {
    fn class(&self) -> ErrorClass {
        self.reason.class()
    }
    fn code(&self) -> Option<&str> {
        Some(self.reason.as_str())
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        Some(self.reason)
    }
}

/// Finds a terminal reason anywhere in an error's `source()` chain, the error itself included.
///
/// A link carries a reason when it is a [`TerminalError`], or when it is a `Classify` type that
/// was registered with [`register_terminal_lookup`] (the `ConnectorError` derive does not need
/// this: classify the outer error and call [`Classify::terminal_reason`] directly).
///
/// See [`TerminalError`] for an example.
pub fn find_terminal_reason(err: &(dyn Error + 'static)) -> Option<TerminalReason> {
    let lookups = LOOKUPS.read().map(|g| g.clone()).unwrap_or_default();
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<TerminalError>() {
            return Some(t.reason);
        }
        for lookup in &lookups {
            if let Some(r) = lookup(e) {
                return Some(r);
            }
        }
        cur = e.source();
    }
    None
}

/// Finds the first link of type `E` in an error's `source()` chain, the error itself included.
///
/// ```
/// use resilience_runtime::{find_in_chain, Rejected};
/// let e = Rejected::BulkheadFull { bulkhead: "graph".into() };
/// assert!(find_in_chain::<Rejected>(&e).is_some());
/// ```
pub fn find_in_chain<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<E>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

type Lookup = fn(&(dyn Error + 'static)) -> Option<TerminalReason>;

static LOOKUPS: std::sync::RwLock<Vec<Lookup>> = std::sync::RwLock::new(Vec::new());

/// Teaches [`find_terminal_reason`] to see terminal reasons in links of type `E`.
///
/// ```
/// use resilience_runtime::{find_terminal_reason, register_terminal_lookup, Classify, ErrorClass, TerminalReason};
///
/// #[derive(Debug)]
/// struct Suspended;
/// impl std::fmt::Display for Suspended {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("suspended") }
/// }
/// impl std::error::Error for Suspended {}
/// impl Classify for Suspended {
///     fn class(&self) -> ErrorClass { ErrorClass::Permanent }
///     fn terminal_reason(&self) -> Option<TerminalReason> { Some(TerminalReason::UserNotProvisionable) }
/// }
///
/// register_terminal_lookup::<Suspended>();
/// assert_eq!(find_terminal_reason(&Suspended), Some(TerminalReason::UserNotProvisionable));
/// ```
pub fn register_terminal_lookup<E: Error + Classify + 'static>() {
    fn lookup<E: Error + Classify + 'static>(e: &(dyn Error + 'static)) -> Option<TerminalReason> {
        e.downcast_ref::<E>().and_then(Classify::terminal_reason)
    }
    if let Ok(mut g) = LOOKUPS.write() {
        let f: Lookup = lookup::<E>;
        if !g.iter().any(|x| std::ptr::fn_addr_eq(*x, f)) {
            g.push(f);
        }
    }
}

/// Why the runtime refused or stopped a call, without the dependency saying anything.
///
/// Rejections are made by the runtime: an open circuit, a timeout, a spent deadline or budget, a
/// client-side rate limit or a full bulkhead. An error type carries them in one variant marked
/// `#[connector(rejected)]`.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::{Classify, ErrorClass, Rejected};
///
/// let r = Rejected::CircuitOpen { breaker: "graph".into(), retry_in: Duration::from_secs(12) };
/// assert_eq!(r.to_string(), "circuit `graph` is open; next probe in 12s");
/// assert_eq!(r.class(), ErrorClass::Transient);
/// assert_eq!(r.retry_after(), Some(Duration::from_secs(12)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// The circuit breaker is open: the dependency is not called.
    CircuitOpen {
        /// The breaker's name (and key, as `name/key`, for a per-key breaker).
        breaker: Arc<str>,
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// One attempt ran longer than its `timeout`.
    AttemptTimeout {
        /// The per-attempt timeout.
        timeout: Duration,
    },
    /// The whole call, retries and waits included, ran out of its `deadline`.
    DeadlineExceeded {
        /// The deadline of the call.
        deadline: Duration,
    },
    /// The retry budget is spent: retries stop while first attempts go on.
    BudgetExhausted {
        /// The budget's name.
        budget: Arc<str>,
    },
    /// The client-side rate limit allows no request now.
    RateLimited {
        /// The limiter's name.
        limiter: Arc<str>,
        /// When the limiter will allow the next request.
        retry_in: Duration,
    },
    /// The bulkhead's concurrency cap is reached.
    BulkheadFull {
        /// The bulkhead's name.
        bulkhead: Arc<str>,
    },
}

impl Rejected {
    /// Every [`Rejected::kind`], in the order of the variants: the values of the `reason` label
    /// of `requests_total{status="rejected"}`.
    ///
    /// ```
    /// use resilience_runtime::Rejected;
    ///
    /// let r = Rejected::BulkheadFull { bulkhead: "graph".into() };
    /// assert!(Rejected::KINDS.contains(&r.kind()));
    /// ```
    pub const KINDS: [&'static str; 6] = [
        "circuit_open",
        "timeout",
        "deadline_exceeded",
        "budget_exhausted",
        "rate_limited",
        "bulkhead_full",
    ];

    /// The index of [`Rejected::kind`] in [`Rejected::KINDS`].
    pub(crate) const fn index(&self) -> usize {
        match self {
            Rejected::CircuitOpen { .. } => 0,
            Rejected::AttemptTimeout { .. } => 1,
            Rejected::DeadlineExceeded { .. } => 2,
            Rejected::BudgetExhausted { .. } => 3,
            Rejected::RateLimited { .. } => 4,
            Rejected::BulkheadFull { .. } => 5,
        }
    }

    /// A short code for logs and metrics (`"circuit_open"`, `"timeout"`, ...).
    pub const fn kind(&self) -> &'static str {
        match self {
            Rejected::CircuitOpen { .. } => "circuit_open",
            Rejected::AttemptTimeout { .. } => "timeout",
            Rejected::DeadlineExceeded { .. } => "deadline_exceeded",
            Rejected::BudgetExhausted { .. } => "budget_exhausted",
            Rejected::RateLimited { .. } => "rate_limited",
            Rejected::BulkheadFull { .. } => "bulkhead_full",
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| resilience_policy::format_rounded(*d);
        match self {
            Rejected::CircuitOpen { breaker, retry_in } => {
                write!(
                    f,
                    "circuit `{breaker}` is open; next probe in {}",
                    d(retry_in)
                )
            }
            Rejected::AttemptTimeout { timeout } => {
                write!(f, "attempt timed out after {}", d(timeout))
            }
            Rejected::DeadlineExceeded { deadline } => {
                write!(f, "deadline of {} exceeded", d(deadline))
            }
            Rejected::BudgetExhausted { budget } => {
                write!(f, "retry budget `{budget}` is exhausted")
            }
            Rejected::RateLimited { limiter, retry_in } => {
                write!(
                    f,
                    "rate limit `{limiter}` reached; next permit in {}",
                    d(retry_in)
                )
            }
            Rejected::BulkheadFull { bulkhead } => write!(f, "bulkhead `{bulkhead}` is full"),
        }
    }
}

impl Error for Rejected {}

impl Classify for Rejected {
    /// Every rejection is transient: the same call may succeed later.
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejected::CircuitOpen { retry_in, .. } | Rejected::RateLimited { retry_in, .. } => {
                Some(*retry_in)
            }
            _ => None,
        }
    }
    fn code(&self) -> Option<&str> {
        Some(self.kind())
    }
}

/// An error type that can carry a [`Rejected`], needed when a site uses a breaker, a timeout, a
/// deadline, a rate limit or a bulkhead.
///
/// `#[derive(ConnectorError)]` implements it for the variant marked `#[connector(rejected)]`.
///
/// ```
/// use resilience_runtime::{CarriesRejected, Rejected};
///
/// enum MyError { Rejected(Rejected), Other }
/// impl CarriesRejected for MyError {
///     fn from_rejected(r: Rejected) -> Self { MyError::Rejected(r) }
///     fn rejected(&self) -> Option<&Rejected> {
///         match self { MyError::Rejected(r) => Some(r), _ => None }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry a `Rejected` (circuit open, timeout, deadline, rate limit, bulkhead full)",
    label = "this error type has no variant for rejections made by the runtime",
    note = "add a variant `#[connector(rejected)] Rejected(#[from] resilience_runtime::Rejected)` to the error enum"
)]
pub trait CarriesRejected: Sized {
    /// Wraps a rejection.
    fn from_rejected(rejected: Rejected) -> Self;
    /// The rejection this error carries, if it is one.
    fn rejected(&self) -> Option<&Rejected>;
}

#[diagnostic::do_not_recommend]
impl CarriesRejected for Rejected {
    fn from_rejected(rejected: Rejected) -> Self {
        rejected
    }
    fn rejected(&self) -> Option<&Rejected> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_matches_the_seeds() {
        use ErrorClass::*;
        let table = [
            (429, Throttled),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (504, Transient),
            (408, Transient),
            (400, Permanent),
            (404, Permanent),
            (409, Permanent),
            (422, Permanent),
            (501, Permanent),
            (401, Auth),
            (403, PolicyViolation),
        ];
        for (status, class) in table {
            assert_eq!(
                ErrorClass::from_http_status(status),
                class,
                "status {status}"
            );
        }
    }

    #[test]
    fn terminal_reasons_round_trip_and_map_to_grpc_codes() {
        for r in TerminalReason::ALL {
            assert_eq!(r.as_str().parse::<TerminalReason>(), Ok(r));
            let expected = if r == TerminalReason::OperationNotPermitted {
                GrpcCode::PermissionDenied
            } else {
                GrpcCode::FailedPrecondition
            };
            assert_eq!(r.grpc_code(), expected);
        }
        let err = "licence_exhausted".parse::<TerminalReason>().unwrap_err();
        assert!(err.to_string().contains("`license_exhausted`"), "{err}");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + 'static>>);
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn terminal_reason_is_found_deep_in_a_chain() {
        let inner = TerminalError::new(TerminalReason::TargetManagedExternally, "group rule");
        let e = Layer("a", Some(Box::new(Layer("b", Some(Box::new(inner))))));
        assert_eq!(
            find_terminal_reason(&e),
            Some(TerminalReason::TargetManagedExternally)
        );
        assert_eq!(find_terminal_reason(&Layer("plain", None)), None);
    }

    #[test]
    fn rejections_classify_and_display_lowercase() {
        let all = [
            Rejected::CircuitOpen {
                breaker: "g".into(),
                retry_in: Duration::from_secs(1),
            },
            Rejected::AttemptTimeout {
                timeout: Duration::from_millis(250),
            },
            Rejected::DeadlineExceeded {
                deadline: Duration::from_secs(60),
            },
            Rejected::BudgetExhausted { budget: "g".into() },
            Rejected::RateLimited {
                limiter: "g".into(),
                retry_in: Duration::from_millis(10),
            },
            Rejected::BulkheadFull {
                bulkhead: "g".into(),
            },
        ];
        for r in &all {
            let s = r.to_string();
            assert!(s.starts_with(char::is_lowercase), "{s}");
            assert!(!s.ends_with('.'), "{s}");
            assert_eq!(r.class(), ErrorClass::Transient);
            assert_eq!(r.code(), Some(r.kind()));
            assert_eq!(Rejected::KINDS[r.index()], r.kind());
        }
        assert_eq!(all[1].to_string(), "attempt timed out after 250ms");
    }
}
