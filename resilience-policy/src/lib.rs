//! The rules, bounds, defaults and schedule arithmetic of a resilience policy, in one place.
//!
//! `#[resilient(...)]` checks a policy at compile time; `resilience-runtime` checks the same
//! settings when a configuration is built or loaded, and computes the same worst-case schedule at
//! run time. Both call this crate, so a value the macro refuses is refused by the configuration
//! file too, with the same words. Users reach it as `resilience_runtime::policy`.
//!
//! Every rule is a `check_*` function returning `Result<(), Violation>`: the [`Violation`] names
//! the key, the offending value and what to write instead. The macro turns it into a compile
//! error on the offending token; the runtime into an `InvalidConfig` naming the field's path
//! (`breakers.graph.cooldown`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_policy::{check_duration, check_retries, Jitter, Schedule};
//!
//! assert!(check_retries(5).is_ok());
//! let err = check_retries(50).unwrap_err();
//! assert_eq!(err.key(), "retries");
//! assert_eq!(
//!     err.to_string(),
//!     "`retries = 50` is above the limit of 20; lower it (a `deadline` bounds a long outage better than more retries)"
//! );
//!
//! let err = check_duration("cooldown", Duration::ZERO).unwrap_err();
//! assert_eq!(err.to_string(), "`cooldown` must be longer than zero; write e.g. `cooldown = \"1s\"` or remove it");
//!
//! // 1s, 2s, 4s, 8s, 16s with jitter off.
//! let schedule = Schedule::new().with_max(Duration::from_secs(16)).with_jitter(Jitter::None);
//! assert_eq!(schedule.worst_case_total(5), Duration::from_secs(31));
//! ```
//!
//! # Bounds
//!
//! | setting | accepted | rule |
//! |---|---|---|
//! | `retries` | 0 to 20 | [`check_retries`]; more than 0 needs `idempotent` or `idempotency_key` ([`check_retries_are_safe`]) |
//! | durations: `timeout`, `deadline`, `cooldown`, `idle_ttl`, a limiter's `per`, backoff `base` and `max` | 1 ms to 30 days | [`check_duration`] (0 has a message of its own) |
//! | backoff `base`, `max` | `base <= max` | [`check_backoff_order`] |
//! | backoff `factor` | at least 1, finite | [`check_backoff_factor`] |
//! | `jitter` | `none`, `full`, `equal`, `decorrelated`, `proportional` | [`Jitter::from_name`] |
//! | proportional jitter's fraction | 0 to 1 | [`check_jitter_fraction`] |
//! | a limiter's `rate` | 1 to 10⁹ per `per` | [`check_rate`] |
//! | `failure_ratio` | above 0, at most 1 | [`check_failure_ratio`] |
//! | `window` (ratio breaker) | 1 to 10,000 calls | [`check_window`] |
//! | `failure_threshold` (consecutive breaker) | 1 to 10,000, the longest window | [`check_failure_threshold`] |
//! | `half_open_probes` | 1 to the window, at most 255 | [`check_half_open_probes`] |
//! | `success_threshold` | 1 to 255 | [`check_success_threshold`] |
//! | `max_keys` (per-key breakers and limiters) | 1 to 10⁸ | [`check_max_keys`] |
//! | budget `capacity` | at least 1 | [`check_budget_capacity`] |
//! | budget `retry_cost` | 1 to `capacity` | [`check_retry_cost`] |
//! | budget `refund` | 0 to 1,000 tokens | [`check_refund`] |
//! | bulkhead `max_concurrent` | at least 1 | [`check_max_concurrent`] |
//! | `timeout` and `deadline` | `timeout <= deadline` | [`check_timeout_within_deadline`] |
//! | `timeout` and `deadline` | an async fn only | [`check_needs_async`] |
//! | names: `breaker`, `budget`, `rate_limit`, `bulkhead` | not empty | [`check_name`] |
//! | `backoff`, `jitter`, `budget`, `retry_on`, `abort_on` | a site that retries or is safe to repeat | [`check_used_by_retries`] |
//! | `deadline` and the schedule | the deadline holds the worst-case schedule | [`check_deadline_fits`] |
//!
//! The 255 of probes and successes is the breaker's state word, which counts each in 8 bits; the
//! other bounds keep every value far from overflow in the runtime's arithmetic (nanoseconds in a
//! `u64`, per-key tables in memory) and catch a typo such as `per = "600years"` before it runs.
//!
//! # Defaults
//!
//! See [`defaults`]: backoff base 1s, max 30s, factor 2, proportional jitter of 10%; 3 retries
//! when a site is safe to repeat and says no number; breakers open after 5 consecutive failures,
//! cool down for 60s, then let 1 probe through and close after 1 success; a `Retry-After` up to
//! 5 minutes is honoured.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use std::time::Duration;

mod duration;
mod jitter;
mod rules;
mod schedule;
mod violation;

pub use duration::{format_duration, format_rounded};
pub use jitter::Jitter;
pub use rules::{
    check_backoff_factor, check_backoff_order, check_budget_capacity, check_deadline_fits,
    check_duration, check_failure_ratio, check_failure_threshold, check_half_open_probes,
    check_jitter_fraction, check_max_concurrent, check_max_keys, check_name, check_needs_async,
    check_rate, check_refund, check_retries, check_retries_are_safe, check_retry_cost,
    check_success_threshold, check_timeout_within_deadline, check_used_by_retries, check_window,
};
pub use schedule::Schedule;
pub use violation::Violation;

/// The defaults of a policy: what a site or a configuration gets when it does not say.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::defaults;
///
/// assert_eq!(defaults::BACKOFF_BASE, Duration::from_secs(1));
/// assert_eq!(defaults::RETRIES, 3);
/// assert_eq!(defaults::COOLDOWN, Duration::from_secs(60));
/// ```
pub mod defaults {
    use super::{Duration, Jitter};

    /// The first backoff delay: 1s.
    pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
    /// The longest backoff delay before jitter: 30s.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// The backoff's growth per retry: 2 (each delay doubles).
    pub const BACKOFF_FACTOR: f64 = 2.0;
    /// The fraction of a delay that proportional jitter adds at most: 10%.
    pub const JITTER_FRACTION: f64 = 0.1;
    /// The jitter kind: proportional, 10% (the connector platforms' default).
    pub const JITTER: Jitter = Jitter::Proportional(JITTER_FRACTION);
    /// `retries` of a site marked `idempotent` (or given an `idempotency_key`) that does not say
    /// how many; a site that is not safe to repeat gets 0.
    pub const RETRIES: u32 = 3;
    /// Consecutive failures that open a breaker: 5.
    pub const FAILURE_THRESHOLD: u32 = 5;
    /// How long an open breaker waits before it lets a probe through: 60s.
    pub const COOLDOWN: Duration = Duration::from_secs(60);
    /// Probes a half-open breaker lets through at once: 1.
    pub const HALF_OPEN_PROBES: u32 = 1;
    /// Successful probes that close a half-open breaker: 1.
    pub const SUCCESS_THRESHOLD: u32 = 1;
    /// The longest `Retry-After` honoured: 5 minutes. A longer hint ends the call at once.
    pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
}

/// The bounds of a policy's values (the table in the crate docs).
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::bounds;
///
/// assert_eq!(bounds::MAX_RETRIES, 20);
/// assert_eq!(bounds::MAX_DURATION, Duration::from_secs(30 * 24 * 60 * 60));
/// assert_eq!(bounds::MAX_WINDOW, 10_000);
/// ```
pub mod bounds {
    use super::Duration;

    /// The largest `retries`: a `deadline` bounds a long outage better than more retries.
    pub const MAX_RETRIES: u32 = 20;
    /// The shortest duration a policy accepts: 1 ms. Shorter is below the timers' resolution.
    pub const MIN_DURATION: Duration = Duration::from_millis(1);
    /// The longest duration a policy accepts: 30 days. Longer is a typo.
    pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// The largest `rate` of a limiter, per period: 10⁹.
    pub const MAX_RATE: u64 = 1_000_000_000;
    /// The longest ratio window, and the largest consecutive `failure_threshold`: 10,000 calls.
    pub const MAX_WINDOW: u32 = 10_000;
    /// The largest `max_keys` of per-key breakers and limiters: 10⁸.
    pub const MAX_KEYS: u64 = 100_000_000;
    /// The most half-open probes: the breaker's state word counts them in 8 bits.
    pub const MAX_HALF_OPEN_PROBES: u32 = 255;
    /// The largest `success_threshold`: the breaker's state word counts successes in 8 bits.
    pub const MAX_SUCCESS_THRESHOLD: u32 = 255;
    /// The largest `refund` of a retry budget, in tokens per success.
    pub const MAX_REFUND: f64 = 1_000.0;
}
