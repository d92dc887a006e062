//! Resilient connectors by annotation.
//!
//! Write one attempt of an operation, annotate it, and classify its errors:
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::{resilient, ConnectorError, Rejected};
//!
//! #[derive(Debug, ConnectorError)]
//! pub enum GraphError {
//!     #[connector(throttled, code = "429")]
//!     Throttled {
//!         #[connector(retry_after)]
//!         retry_after: Option<Duration>,
//!     },
//!     #[connector(status = status)]
//!     Http { status: u16 },
//!     #[connector(policy)]
//!     Forbidden(String),
//!     #[connector(rejected)]
//!     Rejected(Rejected),
//! }
//!
//! #[resilient(retries = 3, breaker = "graph", idempotent, timeout = "10s")]
//! async fn list_devices(tenant: &str) -> Result<Vec<String>, GraphError> {
//!     Ok(vec![format!("{tenant}-device-1")])
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(list_devices("contoso").await.unwrap(), ["contoso-device-1"]);
//! # }
//! ```
//!
//! The body of the fn is one attempt; the signature does not change. Around it the runtime
//! applies, in this order (outermost first; see [`engine`]):
//! fallback, deadline, retries (backoff, jitter, Retry-After, retry budget, auth refresh),
//! circuit breaker, rate limit, per-attempt timeout, bulkhead.
//!
//! # Modules
//!
//! - [`classify`]: [`ErrorClass`], [`Classify`], terminal reasons, [`Rejected`].
//! - [`backoff`]: exponential schedules, jitter kinds, Retry-After.
//! - [`policy`]: the rules, bounds and defaults that `#[resilient]` checks at compile time and
//!   configurations are checked against when they are built or loaded (the crate
//!   `resilience-policy`).
//! - [`breaker`]: lock-free circuit breakers.
//! - [`budget`]: retry budgets.
//! - [`limit`]: rate limiters and bulkheads.
//! - [`registry`]: named instances, configuration (the `[sites]` tables of site policies
//!   included), health, per-call policy overrides ([`with_policy`]), isolated registries for
//!   tests.
//! - [`engine`]: the execution engine, async and blocking.
//! - [`context`]: the per-call context (attempt, idempotency key, correlation id).
//! - [`metrics`], [`events`]: per-site counters and runtime events.
//! - [`redact`]: [`Secret`](redact::Secret) and header redaction, so secrets never reach a log.
//! - [`store`]: the seam where shared backends (`redis`, feature `redis`) hold named instances'
//!   state for a fleet of replicas.
//!
//! # Features
//!
//! Every integration is an optional feature; none is needed for `#[resilient]` itself. The two
//! defaults, `sites` and `config`, serve the startup check of a configuration file;
//! `default-features = false` turns them off.
//!
//! | feature | module | brings in | what |
//! |---|---|---|---|
//! | `sites` (default) | `sites` | `linkme` | every annotated site listed at run time; the startup check of a configuration |
//! | `config` (default) | `registry` | `toml`, `serde_path_to_error` | configuration files: `RegistryConfig::from_toml_str`, `from_toml_file`, `from_value`; without it a `RegistryConfig` is still read through its serde `Deserialize` impl |
//! | `prometheus` | `prometheus` | `prometheus-client` | the seed's metric families in the OpenMetrics text format |
//! | `http` | `http` | `http`, `httpdate` | `StatusCode` classification, `Retry-After` in both forms, `http::Classifier` (rate limits read from the headers: GitHub, Graph, Slack), header redaction |
//! | `reqwest` | `http` | `reqwest` (+ `http`) | `Classify` for `reqwest::Error` |
//! | `tonic` | `tonic` | `tonic`, `tonic-types` | terminal reasons to and from `tonic::Status` with an `ErrorInfo` |
//! | `error-events` | `error_events` | `serde_json` | seed 000's `CONNECTOR_ERROR` events; tracing and JSON-lines sinks; routing by class |
//! | `axum` | `axum` | `axum` | a health handler: JSON, 503 when a critical breaker is open |
//! | `tower` | `tower` | `tower-layer`, `tower-service` | a `Layer` sharing breakers, budgets and metrics with annotated sites |
//! | `governor` | `governor` | `governor` | rate limiters on governor's GCRA, keyed per tenant |
//! | `redis` | `redis` | `redis` (tokio connection manager) | rate limits, retry budgets and breaker state shared by a fleet of replicas |

//!
//! # Order of the layers
//!
//! ```text
//! deadline                     the whole call, retries and waits included
//!   fallback                   called with the last error
//!     retries                  backoff, jitter, Retry-After, retry budget, auth refresh
//!       circuit breaker        one per name (or per key); records every attempt
//!         rate limit           a permit per attempt
//!           per-attempt timeout
//!             bulkhead         a concurrency slot per attempt
//!               the attempt    the body of the annotated fn
//! ```
//!
//! An open breaker ends the call at once with `Rejected::CircuitOpen` (it is not retried: failing
//! fast is the point); a timed-out attempt counts as a transient failure and is retried; a
//! Retry-After hint longer than the remaining deadline ends the call with the server's error.
#![doc = include_str!("../docs/attributes.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod classify;
mod clock;
pub mod context;
pub mod engine;
pub mod events;
pub mod limit;
mod lru;
pub mod metrics;
pub mod refresh;
pub mod registry;
pub mod store;

pub mod redact;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "error-events")]
pub mod error_events;
#[cfg(feature = "governor")]
pub mod governor;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sites")]
pub mod sites;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tower")]
pub mod tower;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use classify::{
    CarriesRejected, Classify, ErrorClass, GrpcCode, Rejected, TerminalError, TerminalReason,
    find_in_chain, find_terminal_reason, register_terminal_lookup,
};
pub use context::{CallContext, CorrelationId, attempt, idempotency_key};
pub use engine::RetryOk;
pub use registry::{PolicyOverride, Registry, with_policy};

#[doc(inline)]
pub use resilience_macros::{ConnectorError, resilient};

/// The rules, bounds, defaults and worst-case schedule shared by `#[resilient]` (at compile time)
/// and this crate (when a configuration is built or loaded, and at run time): one implementation,
/// so the attribute and the configuration file accept the same values.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::policy::{self, bounds};
///
/// assert_eq!(bounds::MAX_RETRIES, 20);
/// assert!(policy::check_duration("cooldown", Duration::from_secs(31 * 86_400)).is_err());
/// ```
pub use resilience_policy as policy;

use std::fmt;

/// A configuration value that cannot work, with the field it came from.
///
/// ```
/// use resilience_runtime::breaker::BreakerConfig;
/// let err = BreakerConfig::new().with_failure_threshold(0).validate().unwrap_err();
/// assert_eq!(err.field(), "failure_threshold");
/// assert_eq!(
///     err.to_string(),
///     "`failure_threshold`: `failure_threshold = 0` is outside 1..=10000; write the consecutive failures that open the breaker, e.g. `failure_threshold = 5`"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    file: Option<String>,
    field: String,
    reason: String,
}

impl InvalidConfig {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidConfig {
            file: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field, as a dotted path (`breakers.graph.cooldown`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The file the value came from, if known.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    pub(crate) fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }

    #[cfg(feature = "config")]
    pub(crate) fn in_file(mut self, file: String) -> Self {
        self.file = Some(file);
        self
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "`{}`: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for InvalidConfig {}

/// A broken [`policy`] rule, as an error for the rule's key; the configuration's loader prefixes
/// the path of the table it came from (`breakers.graph`).
///
/// ```
/// use resilience_runtime::{policy, InvalidConfig};
///
/// let err = InvalidConfig::from(policy::check_window(0).unwrap_err());
/// assert_eq!(err.field(), "window");
/// assert!(err.reason().starts_with("`window = 0` is outside 1..=10000"));
/// ```
impl From<policy::Violation> for InvalidConfig {
    fn from(v: policy::Violation) -> Self {
        InvalidConfig::new(v.key(), v.to_string())
    }
}
