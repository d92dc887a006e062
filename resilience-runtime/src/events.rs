//! Runtime events for observers: retries, calls that gave up, breaker transitions.
//!
//! Events are delivered synchronously to every registered [`EventSink`], off the happy path: a
//! successful first attempt emits nothing. With no sink registered an event costs one relaxed load.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use resilience_runtime::events::{self, EventSink, RuntimeEvent};
//!
//! #[derive(Debug, Default)]
//! struct Recorder(Mutex<Vec<String>>);
//! impl EventSink for Recorder {
//!     fn on_event(&self, event: &RuntimeEvent<'_>) {
//!         self.0.lock().unwrap().push(format!("{event:?}"));
//!     }
//! }
//! let rec = Arc::new(Recorder::default());
//! events::add_sink(rec.clone());
//! # events::remove_sink(&(rec.clone() as Arc<dyn EventSink>));
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::ErrorClass;
use crate::breaker::BreakerState;
use crate::context::CorrelationId;

/// Something the runtime did.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RuntimeEvent<'a> {
    /// A retry is scheduled after `wait`.
    Retry {
        /// The operation.
        operation: &'static str,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The retries allowed.
        max_retries: u32,
        /// The failure's class.
        class: ErrorClass,
        /// The failure's code.
        code: Option<&'a str>,
        /// The wait before the next attempt.
        wait: Duration,
        /// Whether the wait was set by the server's Retry-After hint.
        retry_after: bool,
        /// The call's correlation id.
        correlation_id: CorrelationId,
    },
    /// A call ended in an error.
    GaveUp {
        /// The operation.
        operation: &'static str,
        /// The connector label ([`Policy::connector_name`](crate::engine::Policy::connector_name)).
        connector: &'a str,
        /// Attempts made.
        attempts: u32,
        /// Retries made.
        retry_count: u32,
        /// The error's class.
        class: ErrorClass,
        /// The error's code.
        code: Option<&'a str>,
        /// Why the engine stopped.
        reason: GiveUpReason,
        /// The call's correlation id.
        correlation_id: CorrelationId,
        /// The call's idempotency key.
        idempotency_key: Option<&'a str>,
    },
    /// A breaker changed state.
    BreakerTransition {
        /// The breaker's name.
        breaker: &'a str,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
        /// The generation this transition started. Sinks may see concurrent transitions out of
        /// order; ordering by generation restores the breaker's own order.
        generation: u32,
        /// When it happened, on the runtime's clock (time since a fixed point in the past;
        /// compare these values with each other, not with wall-clock time).
        at: Duration,
    },
}

/// Why a call ended in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The class is not retried (permanent, policy, auth after refresh).
    NotRetryable,
    /// `abort_on` matched.
    Aborted,
    /// Every retry was used.
    RetriesExhausted,
    /// The retry budget refused a retry.
    BudgetExhausted,
    /// The next wait would overrun the deadline.
    Deadline,
    /// The server's Retry-After is longer than the longest wait honoured.
    RetryAfterTooLong,
    /// The runtime rejected the call (open circuit, rate limit, bulkhead).
    Rejected,
    /// The credential refresh failed.
    RefreshFailed,
}

impl GiveUpReason {
    /// Every reason, in declaration order.
    pub const ALL: [GiveUpReason; 8] = [
        GiveUpReason::NotRetryable,
        GiveUpReason::Aborted,
        GiveUpReason::RetriesExhausted,
        GiveUpReason::BudgetExhausted,
        GiveUpReason::Deadline,
        GiveUpReason::RetryAfterTooLong,
        GiveUpReason::Rejected,
        GiveUpReason::RefreshFailed,
    ];

    /// The reason's name, as in logs and serialised events (`"retries_exhausted"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::Aborted => "aborted",
            GiveUpReason::RetriesExhausted => "retries_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::RetryAfterTooLong => "retry_after_too_long",
            GiveUpReason::Rejected => "rejected",
            GiveUpReason::RefreshFailed => "refresh_failed",
        }
    }
}

/// Receives [`RuntimeEvent`]s.
///
/// A sink only observes: the runtime has finished the state change an event reports (a breaker's
/// transition, a call's counting) before any sink sees it. A sink that panics is caught, logged
/// at ERROR and skipped for that event; the call, the breaker and the other sinks go on as if
/// it had returned.
pub trait EventSink: std::fmt::Debug + Send + Sync {
    /// Called for every event, on the thread that caused it. Keep it quick.
    fn on_event(&self, event: &RuntimeEvent<'_>);
}

static ANY: AtomicBool = AtomicBool::new(false);
static SINKS: RwLock<Vec<Arc<dyn EventSink>>> = RwLock::new(Vec::new());

/// Registers a sink for every later event of the process.
pub fn add_sink(sink: Arc<dyn EventSink>) {
    if let Ok(mut s) = SINKS.write() {
        s.push(sink);
        ANY.store(true, Ordering::Release);
    }
}

/// Removes a sink registered with [`add_sink`] (compared by address).
pub fn remove_sink(sink: &Arc<dyn EventSink>) {
    if let Ok(mut s) = SINKS.write() {
        s.retain(|x| !Arc::ptr_eq(x, sink));
        ANY.store(!s.is_empty(), Ordering::Release);
    }
}

pub(crate) fn emit(event: RuntimeEvent<'_>) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let sinks = match SINKS.read() {
        Ok(s) => s.clone(),
        Err(_) => return,
    };
    for s in sinks {
        let delivered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.on_event(&event)));
        if delivered.is_err() {
            sink_panicked(&s, &event);
        }
    }
}

/// A sink panicked on `event`: logged, and nothing else changes.
#[cold]
#[inline(never)]
fn sink_panicked(sink: &Arc<dyn EventSink>, event: &RuntimeEvent<'_>) {
    let kind = match event {
        RuntimeEvent::Retry { .. } => "retry",
        RuntimeEvent::GaveUp { .. } => "gave_up",
        RuntimeEvent::BreakerTransition { .. } => "breaker_transition",
    };
    tracing::error!(
        sink = ?sink,
        event = kind,
        "an event sink panicked; the event was skipped for it"
    );
}

pub(crate) fn breaker_transition(
    name: &str,
    from: BreakerState,
    to: BreakerState,
    generation: u32,
    at: Duration,
) {
    emit(RuntimeEvent::BreakerTransition {
        breaker: name,
        from,
        to,
        generation,
        at,
    });
}

#[cfg(test)]
mod tests {
    use super::GiveUpReason;

    #[test]
    fn reason_names_match_their_serialised_form() {
        for r in GiveUpReason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }
}
