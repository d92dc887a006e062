//! What the runtime logs, captured by a real tracing subscriber: the documented fields and
//! levels, and no secret anywhere (feature `http`; `error-events` adds its tracing sink).
#![cfg(feature = "http")]

mod common;
use common::Capture;

use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use resilience_runtime::engine::{Execution, Hooks, Policy, Site};
use resilience_runtime::redact::{Secret, mark_sensitive, redacted_headers};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig";
const PASSWORD: &str = "hunter2-client-secret";

/// An error that holds the credential it was refused with, as connectors' errors often do.
#[derive(Debug)]
enum GraphError {
    Throttled { token: Secret<String> },
    Unauthorized { token: Secret<String> },
    Rejected(Rejected),
}
impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphError::Throttled { token } => write!(f, "throttled (token {token})"),
            GraphError::Unauthorized { token } => write!(f, "token {token} refused"),
            GraphError::Rejected(r) => r.fmt(f),
        }
    }
}
impl Classify for GraphError {
    fn class(&self) -> ErrorClass {
        match self {
            GraphError::Throttled { .. } => ErrorClass::Transient,
            GraphError::Unauthorized { .. } => ErrorClass::Auth,
            GraphError::Rejected(r) => r.class(),
        }
    }
    fn code(&self) -> Option<&str> {
        match self {
            GraphError::Throttled { .. } => Some("429"),
            GraphError::Unauthorized { .. } => Some("401"),
            GraphError::Rejected(r) => r.code(),
        }
    }
}
impl CarriesRejected for GraphError {
    fn from_rejected(r: Rejected) -> Self {
        GraphError::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            GraphError::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

static LIST: Site = Site::new(
    &Policy::new("list_devices", "graph::client")
        .with_retries(2)
        .idempotent()
        .with_breaker("graph")
        .with_timeout(Duration::from_secs(10)),
);

/// Drives a call like `#[resilient(refresh = ...)]` does.
async fn call(fail: impl Fn(u32) -> Option<GraphError>) -> Result<(), GraphError> {
    let n = std::cell::Cell::new(0);
    Execution::new(&LIST, Hooks::new().with_from_rejected(GraphError::Rejected))
        .idempotency_key(format!("intent-1-{}", "list_devices"))
        .refresh(|| async {
            tracing::info!("refreshing the token");
            Ok(())
        })
        .run(|| {
            let outcome = fail(n.get());
            n.set(n.get() + 1);
            async { outcome.map_or(Ok(()), Err) }
        })
        .await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_secret_reaches_the_log_and_fields_follow_the_conventions() {
    let out = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    #[cfg(feature = "error-events")]
    let sink: std::sync::Arc<dyn resilience_runtime::events::EventSink> = std::sync::Arc::new(
        resilience_runtime::error_events::ErrorEvents::new().with_sink(std::sync::Arc::new(
            resilience_runtime::error_events::TracingSink,
        )),
    );
    #[cfg(feature = "error-events")]
    resilience_runtime::events::add_sink(sink.clone());

    let token = || Secret::new(TOKEN.to_owned());
    Registry::new()
        .scope(async {
            // Retried, then succeeds.
            call(|n| (n == 0).then(|| GraphError::Throttled { token: token() }))
                .await
                .unwrap();
            // Refused credentials: refresh and retry once, then give up.
            assert!(
                call(|_| Some(GraphError::Unauthorized { token: token() }))
                    .await
                    .is_err()
            );
            // Retries exhausted.
            let e = call(|_| Some(GraphError::Throttled { token: token() }))
                .await
                .unwrap_err();
            // What a connector author logs themselves: the error, its Debug, the request headers.
            tracing::error!(error = %e, debug = ?e, "list_devices failed");
            let mut headers = HeaderMap::new();
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
            );
            headers.insert("x-api-key", HeaderValue::from_static(PASSWORD));
            tracing::debug!(headers = ?redacted_headers(&headers), "request");
            mark_sensitive(&mut headers);
            tracing::debug!(headers = ?headers, "request (http's own Debug)");
            tracing::info!(client_secret = %Secret::new(PASSWORD), "token request");
        })
        .await;

    #[cfg(feature = "error-events")]
    resilience_runtime::events::remove_sink(&sink);

    let text = out.text();
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{text}");
    }
    for secret in [TOKEN, PASSWORD, "c2VjcmV0LXRva2Vu", "Bearer ey"] {
        assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
    }
    assert!(text.contains("[redacted]"), "{text}");

    // The conventions the README table documents: the span and its fields, a WARN per retry with
    // attempt/max/status/class/wait/correlation id, INFO for the refresh, WARN when giving up.
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with `{needle}`:\n{text}"))
            .to_owned()
    };
    let retry = line("retrying in");
    assert!(retry.contains(" WARN "), "{retry}");
    for field in [
        "resilient{operation=\"list_devices\" breaker=\"graph\"",
        "attempt=1",
        "max_retries=2",
        "status=\"429\"",
        "class=\"transient\"",
        "wait_ms=",
        "retry_after=false",
        "correlation_id=",
    ] {
        assert!(retry.contains(field), "`{field}` missing: {retry}");
    }
    // Each line names a field once: the span's fields are not recorded again per attempt.
    for l in text.lines() {
        assert!(l.matches(" attempt=").count() <= 1, "a field repeated: {l}");
    }
    let refresh = line("credentials refused");
    assert!(refresh.contains(" INFO "), "{refresh}");
    let gave_up = line("list_devices gave up");
    assert!(gave_up.contains(" WARN "), "{gave_up}");
    for field in [
        "attempts=3",
        "retry_count=2",
        "reason=\"retries_exhausted\"",
    ] {
        assert!(gave_up.contains(field), "`{field}` missing: {gave_up}");
    }
    #[cfg(feature = "error-events")]
    assert!(line("resilience::error_event").contains("CONNECTOR_ERROR"));
}
