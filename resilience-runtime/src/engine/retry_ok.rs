//! Another attempt after an `Ok`: `#[resilient(retry_if_ok = path)]` and
//! [`Hooks::with_retry_if_ok`](super::Hooks::with_retry_if_ok).
//!
//! A success the caller cannot use yet (an HTTP `202 Accepted` for a report still being built, a
//! job still `running`) is retried as a failure is: under the same `retries`, retry budget and
//! deadline, after the backoff (or at least the wait the verdict asks for). When they run out,
//! the last `Ok` is the call's result: the attempt succeeded, and the caller decides what an
//! unfinished answer means.

use std::time::Duration;

use crate::classify::Classify;
use crate::clock;
use crate::events::{self, RuntimeEvent};

use super::{Call, Hook, HookSet, NoHook};

/// What to do with an attempt's `Ok`: the verdict of a `retry_if_ok` hook.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::RetryOk;
///
/// struct Report { status: u16, retry_after: Option<Duration> }
///
/// fn still_computing(r: &Report) -> RetryOk {
///     match (r.status, r.retry_after) {
///         (202, Some(d)) => RetryOk::RetryAfter(d),
///         (202, None) => RetryOk::Retry,
///         _ => RetryOk::Accept,
///     }
/// }
/// assert_eq!(still_computing(&Report { status: 200, retry_after: None }), RetryOk::Accept);
/// assert_eq!(
///     still_computing(&Report { status: 202, retry_after: Some(Duration::from_secs(2)) }),
///     RetryOk::RetryAfter(Duration::from_secs(2)),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryOk {
    /// The value is the call's result.
    Accept,
    /// Make another attempt after the backoff, as after a retryable failure.
    Retry,
    /// Make another attempt after at least this long (and at least the backoff), as a server's
    /// `Retry-After` hint asks; a wait longer than the policy's `retry_after.max` ends the call
    /// with this `Ok`.
    RetryAfter(Duration),
}

/// A `retry_if_ok` hook, or none.
#[doc(hidden)]
pub trait OkHook<T>: Copy {
    /// Whether there is one.
    const PRESENT: bool;
    /// Its verdict on `v` ([`RetryOk::Accept`] without one).
    fn call(&self, v: &T) -> RetryOk;
}

impl<T> OkHook<T> for NoHook {
    const PRESENT: bool = false;
    #[inline(always)]
    fn call(&self, _: &T) -> RetryOk {
        RetryOk::Accept
    }
}

impl<T, C: Fn(&T) -> RetryOk + Copy> OkHook<T> for Hook<C> {
    const PRESENT: bool = true;
    #[inline(always)]
    fn call(&self, v: &T) -> RetryOk {
        (self.0)(v)
    }
}

impl<T, E: Classify, H: HookSet<T, E>> Call<T, E, H> {
    /// After an `Ok` its hook asks to retry: the wait before another attempt, having spent a
    /// retry and the budget's token and recorded the attempt's success on the breaker; `None`
    /// when retries, budget or deadline have run out (or the wait asked for is longer than the
    /// policy honours), and the `Ok` is the call's result.
    #[cold]
    #[inline(never)]
    pub(super) fn decide_ok_retry(&mut self, verdict: RetryOk) -> Option<Duration> {
        let hint = match verdict {
            RetryOk::Retry => None,
            RetryOk::RetryAfter(d) => Some(d),
            // `Accept` and whatever later verdicts mean: the value is the call's.
            _ => return None,
        };
        let p = self.policy_ref();
        let operation = p.operation;
        if u32::from(self.retries) >= p.retries.min(u32::from(u16::MAX)) {
            tracing::debug!(
                parent: self.span_id(),
                operation,
                attempts = self.attempt.saturating_add(1),
                "{operation} still asks for another attempt, but its retries are spent; returning the last Ok"
            );
            return None;
        }
        let prev = self.retry.prev_wait();
        let backoff = p.backoff.delay(u32::from(self.retries), prev, self.rng());
        let wait = p.retry_after.wait(backoff, hint)?;
        let deadline_at = self.deadline_at();
        if deadline_at != 0 && clock::now_nanos().saturating_add(clock::nanos(wait)) >= deadline_at
        {
            return None;
        }
        if !self.budget().try_spend() {
            self.state.counters.budget_exhausted();
            return None;
        }
        // The attempt itself succeeded: the dependency is healthy.
        if let Some(t) = self.ticket.take()
            && let Some(b) = self.breaker()
        {
            b.record(t, crate::breaker::Outcome::Success);
        }
        self.attempt = self.attempt.saturating_add(1);
        self.retries = self.retries.saturating_add(1);
        self.retry.prev_wait = clock::nanos(wait);
        self.state.counters.retry();
        let correlation_id = self.correlation_or_default();
        tracing::info!(
            parent: self.span_id(),
            operation,
            attempt = self.attempt,
            max_retries = p.retries,
            wait_ms = wait.as_millis() as u64,
            retry_after = hint.is_some(),
            correlation_id = %correlation_id,
            "{operation} succeeded but asked for another attempt (attempt {}/{}); retrying in {}",
            self.attempt,
            p.retries.saturating_add(1),
            resilience_policy::format_rounded(wait)
        );
        events::emit(RuntimeEvent::Retry {
            operation,
            attempt: u32::from(self.attempt),
            max_retries: p.retries,
            class: crate::classify::ErrorClass::Transient,
            // Not a failure: the code says which hook asked for the retry.
            code: Some("retry_if_ok"),
            wait,
            retry_after: hint.is_some_and(|h| h >= backoff),
            correlation_id,
        });
        Some(wait)
    }
}
