//! Error events in seed 000's `CONNECTOR_ERROR` shape, sent to pluggable sinks (feature
//! `error-events`).
//!
//! [`ErrorEvents`] is an [`EventSink`]: register it once with [`events::add_sink`](crate::events::add_sink) and every call
//! that ends in an error becomes a [`ConnectorErrorEvent`], sent to every sink, and routed by
//! class: permanent errors also to the owner hooks (seed 000: "notification sent to deployment
//! owner"), policy violations to the security hooks ("CAB/Security team notification").
//!
//! ```
//! use std::sync::Arc;
//! use resilience_runtime::error_events::{ErrorEvents, JsonLinesSink, TracingSink, sink_fn};
//! use resilience_runtime::events;
//!
//! let errors = ErrorEvents::new()
//!     .with_sink(Arc::new(TracingSink))
//!     .with_sink(Arc::new(JsonLinesSink::new(std::io::stderr())))
//!     .on_permanent(sink_fn(|e| eprintln!("notify the owner of {}", e.event_data.operation)))
//!     .on_policy_violation(sink_fn(|e| eprintln!("notify security: {}", e.correlation_id)));
//! events::add_sink(Arc::new(errors));
//! ```
//!
//! The JSON of one event, field for field the seed's:
//!
//! ```json
//! {
//!   "correlation_id": "0000010000000001",
//!   "event_type": "CONNECTOR_ERROR",
//!   "event_data": {
//!     "connector_type": "intune",
//!     "operation": "create_assignment",
//!     "error_classification": "transient",
//!     "error_code": "429",
//!     "error_message": "create_assignment gave up after 3 retries: transient error 429 (retries_exhausted)",
//!     "retry_count": 3,
//!     "deployment_intent_id": "intent-1"
//!   },
//!   "actor": "system:intune_connector",
//!   "created_at": "2026-01-06T10:00:00Z"
//! }
//! ```
//!
//! The message is made from what the runtime knows (class, code, why it stopped), never from the
//! error's `Display`, which may carry request data: build an event by hand with
//! [`ConnectorErrorEvent::new`] to say more.
//!
//! `error_classification` takes the seed's categories: a [`Throttled`](ErrorClass::Throttled)
//! error is `transient` there, as seed 000 files rate limiting (429) under transient errors; the
//! message still says `throttled`.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::ErrorClass;
use crate::events::{EventSink, GiveUpReason, RuntimeEvent};

/// The `event_type` of every [`ConnectorErrorEvent`].
pub const CONNECTOR_ERROR: &str = "CONNECTOR_ERROR";

/// A connector error, as seed 000's event store records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ConnectorErrorEvent {
    /// The call's correlation id.
    pub correlation_id: String,
    /// Always [`CONNECTOR_ERROR`].
    pub event_type: String,
    /// What failed.
    pub event_data: ErrorEventData,
    /// Who acted (`system:<connector>_connector`).
    pub actor: String,
    /// When, in RFC 3339 UTC (`2026-01-06T10:00:00Z`).
    pub created_at: String,
}

/// The `event_data` of a [`ConnectorErrorEvent`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ErrorEventData {
    /// The connector: the site's `connector` label
    /// ([`Policy::connector_name`](crate::engine::Policy::connector_name)).
    pub connector_type: String,
    /// The operation (the fn's name).
    pub operation: String,
    /// `transient`, `permanent`, `policy_violation` or `auth`: the seed's categories, where a
    /// throttled error is `transient` (see [`seed_category`]).
    pub error_classification: ErrorClass,
    /// The error's code (`"429"`), if it has one.
    pub error_code: Option<String>,
    /// What happened, without request data.
    pub error_message: String,
    /// Retries made.
    pub retry_count: u32,
    /// The deployment intent the call served, if known.
    pub deployment_intent_id: Option<String>,
}

impl ConnectorErrorEvent {
    /// An event stamped now, with actor `system:<connector_type>_connector`. Its
    /// `error_classification` is the seed's category of `class` ([`seed_category`]).
    pub fn new(
        connector_type: impl Into<String>,
        operation: impl Into<String>,
        class: ErrorClass,
        message: impl Into<String>,
    ) -> ConnectorErrorEvent {
        let connector_type = connector_type.into();
        ConnectorErrorEvent {
            correlation_id: String::new(),
            event_type: CONNECTOR_ERROR.to_owned(),
            actor: format!("system:{connector_type}_connector"),
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            event_data: ErrorEventData {
                connector_type,
                operation: operation.into(),
                error_classification: seed_category(class),
                error_code: None,
                error_message: message.into(),
                retry_count: 0,
                deployment_intent_id: None,
            },
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl fmt::Display) -> Self {
        self.correlation_id = id.to_string();
        self
    }

    /// Sets the error code.
    pub fn with_code(mut self, code: Option<&str>) -> Self {
        self.event_data.error_code = code.map(str::to_owned);
        self
    }

    /// Sets the retry count.
    pub fn with_retry_count(mut self, n: u32) -> Self {
        self.event_data.retry_count = n;
        self
    }

    /// Sets the deployment intent id.
    pub fn with_intent_id(mut self, id: Option<String>) -> Self {
        self.event_data.deployment_intent_id = id;
        self
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// The event of a [`RuntimeEvent::GaveUp`]; `None` for any other event.
    pub fn from_gave_up(event: &RuntimeEvent<'_>) -> Option<ConnectorErrorEvent> {
        let RuntimeEvent::GaveUp {
            operation,
            connector,
            retry_count,
            class,
            code,
            reason,
            correlation_id,
            ..
        } = *event
        else {
            return None;
        };
        Some(
            ConnectorErrorEvent::new(
                connector,
                operation,
                class,
                message(operation, retry_count, class, code, reason),
            )
            .with_correlation_id(correlation_id)
            .with_code(code)
            .with_retry_count(retry_count),
        )
    }

    /// One line of JSON.
    ///
    /// # Errors
    ///
    /// Never in practice: every field serialises.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// The category seed 000's events give an error of `class`: the class itself, except that a
/// throttled error is `transient` (the seed files rate limiting, 429, under transient errors).
///
/// ```
/// use resilience_runtime::error_events::seed_category;
/// use resilience_runtime::ErrorClass;
///
/// assert_eq!(seed_category(ErrorClass::Throttled), ErrorClass::Transient);
/// assert_eq!(seed_category(ErrorClass::PolicyViolation), ErrorClass::PolicyViolation);
/// ```
pub const fn seed_category(class: ErrorClass) -> ErrorClass {
    match class {
        ErrorClass::Throttled => ErrorClass::Transient,
        other => other,
    }
}

fn message(
    operation: &str,
    retries: u32,
    class: ErrorClass,
    code: Option<&str>,
    reason: GiveUpReason,
) -> String {
    let reason = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let code = code.map(|c| format!(" {c}")).unwrap_or_default();
    match retries {
        0 => format!("{operation} failed: {class} error{code} ({reason})"),
        1 => format!("{operation} gave up after 1 retry: {class} error{code} ({reason})"),
        n => format!("{operation} gave up after {n} retries: {class} error{code} ({reason})"),
    }
}

/// Receives [`ConnectorErrorEvent`]s.
pub trait ErrorEventSink: fmt::Debug + Send + Sync {
    /// Called once per event, on the thread of the failed call. Keep it quick: hand slow work to
    /// a queue.
    fn send(&self, event: &ConnectorErrorEvent);
}

/// Logs each event with `tracing` at WARN (target `resilience::error_event`): a handled failure,
/// as seed 004 sets levels.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl ErrorEventSink for TracingSink {
    fn send(&self, e: &ConnectorErrorEvent) {
        let d = &e.event_data;
        tracing::warn!(
            target: "resilience::error_event",
            event_type = %e.event_type,
            correlation_id = %e.correlation_id,
            connector_type = %d.connector_type,
            operation = %d.operation,
            error_classification = d.error_classification.as_str(),
            error_code = d.error_code.as_deref(),
            retry_count = d.retry_count,
            deployment_intent_id = d.deployment_intent_id.as_deref(),
            actor = %e.actor,
            "{}",
            d.error_message
        );
    }
}

/// Writes each event as one line of JSON (JSON Lines) and flushes.
pub struct JsonLinesSink<W> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// A sink writing to `out` (a file, a pipe, stderr).
    pub fn new(out: W) -> JsonLinesSink<W> {
        JsonLinesSink {
            out: Mutex::new(out),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        }
    }
}

impl<W> fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send> ErrorEventSink for JsonLinesSink<W> {
    fn send(&self, event: &ConnectorErrorEvent) {
        let Ok(line) = event.to_json() else { return };
        let mut out = match self.out.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        // A sink never fails the call it reports on.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

/// A sink from a closure.
pub fn sink_fn(
    f: impl Fn(&ConnectorErrorEvent) + Send + Sync + 'static,
) -> Arc<dyn ErrorEventSink> {
    struct FnSink<F>(F);
    impl<F> fmt::Debug for FnSink<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("FnSink")
        }
    }
    impl<F: Fn(&ConnectorErrorEvent) + Send + Sync> ErrorEventSink for FnSink<F> {
        fn send(&self, event: &ConnectorErrorEvent) {
            (self.0)(event)
        }
    }
    Arc::new(FnSink(f))
}

type IntentFn = dyn Fn(&str, Option<&str>) -> Option<String> + Send + Sync;

/// Turns the runtime's [`RuntimeEvent::GaveUp`] into [`ConnectorErrorEvent`]s and routes them.
#[derive(Default)]
pub struct ErrorEvents {
    actor: Option<String>,
    intent: Option<Arc<IntentFn>>,
    sinks: Vec<Arc<dyn ErrorEventSink>>,
    owner: Vec<Arc<dyn ErrorEventSink>>,
    security: Vec<Arc<dyn ErrorEventSink>>,
}

impl fmt::Debug for ErrorEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorEvents")
            .field("actor", &self.actor)
            .field("sinks", &self.sinks)
            .field("owner", &self.owner)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl ErrorEvents {
    /// No sinks yet.
    pub fn new() -> ErrorEvents {
        ErrorEvents::default()
    }

    /// Sends every event to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn ErrorEventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Also sends permanent errors to `hook` (the deployment owner's notification).
    pub fn on_permanent(mut self, hook: Arc<dyn ErrorEventSink>) -> Self {
        self.owner.push(hook);
        self
    }

    /// Also sends policy violations to `hook` (the security team's notification).
    pub fn on_policy_violation(mut self, hook: Arc<dyn ErrorEventSink>) -> Self {
        self.security.push(hook);
        self
    }

    /// Sets the actor of every event (default `system:<connector>_connector`).
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Derives `deployment_intent_id` from the operation and the call's idempotency key (seed
    /// 000 builds keys as `{deployment_intent_id}-{operation}-{timestamp}`).
    pub fn with_intent_id(
        mut self,
        f: impl Fn(&str, Option<&str>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.intent = Some(Arc::new(f));
        self
    }

    /// Sends one event to the sinks and the hooks its class routes to. A sink that panics is
    /// logged and skipped: the others still get the event.
    pub fn dispatch(&self, event: &ConnectorErrorEvent) {
        let hooks: &[Arc<dyn ErrorEventSink>] = match event.event_data.error_classification {
            ErrorClass::Permanent => &self.owner,
            ErrorClass::PolicyViolation => &self.security,
            _ => &[],
        };
        for s in self.sinks.iter().chain(hooks) {
            let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.send(event)));
            if sent.is_err() {
                tracing::error!(
                    sink = ?s,
                    operation = %event.event_data.operation,
                    "an error event sink panicked; the event was skipped for it"
                );
            }
        }
    }
}

impl EventSink for ErrorEvents {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        let Some(mut e) = ConnectorErrorEvent::from_gave_up(event) else {
            return;
        };
        if let (
            Some(f),
            RuntimeEvent::GaveUp {
                operation,
                idempotency_key,
                ..
            },
        ) = (&self.intent, event)
        {
            e.event_data.deployment_intent_id = f(operation, *idempotency_key);
        }
        if let Some(a) = &self.actor {
            e.actor.clone_from(a);
        }
        self.dispatch(&e);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_panicking_sink_does_not_stop_the_others() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (seen.clone(), seen.clone());
        let errors = ErrorEvents::new()
            .with_sink(sink_fn(|_| panic!("sink down")))
            .with_sink(sink_fn(move |e| {
                a.lock()
                    .unwrap()
                    .push(("sink", e.event_data.operation.clone()))
            }))
            .on_permanent(sink_fn(|_| panic!("owner hook down")))
            .on_permanent(sink_fn(move |e| {
                b.lock()
                    .unwrap()
                    .push(("owner", e.event_data.operation.clone()))
            }));
        errors.dispatch(&ConnectorErrorEvent::new(
            "graph",
            "list",
            ErrorClass::Permanent,
            "gone",
        ));
        assert_eq!(
            *seen.lock().unwrap(),
            [("sink", "list".to_owned()), ("owner", "list".to_owned())]
        );
    }
}
