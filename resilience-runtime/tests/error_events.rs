//! Seed 000's CONNECTOR_ERROR events from real calls, in the seed's JSON shape, routed by class
//! (feature `error-events`).
#![cfg(feature = "error-events")]

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use resilience_runtime::engine::{Execution, Hooks, Policy, Site};
use resilience_runtime::error_events::{ConnectorErrorEvent, ErrorEvents, JsonLinesSink, sink_fn};
use resilience_runtime::events::{self, EventSink};
use resilience_runtime::{Classify, ErrorClass, Registry};
use serde_json::Value;

#[derive(Debug)]
enum E {
    Throttled,
    NotFound,
    Forbidden,
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        match self {
            E::Throttled => ErrorClass::Transient,
            E::NotFound => ErrorClass::Permanent,
            E::Forbidden => ErrorClass::PolicyViolation,
        }
    }
    fn code(&self) -> Option<&str> {
        Some(match self {
            E::Throttled => "429",
            E::NotFound => "404",
            E::Forbidden => "403",
        })
    }
}

static CREATE: Site = Site::new(
    &Policy::new("create_assignment", "intune::client")
        .with_retries(3)
        .idempotent()
        .with_idempotency_key()
        .with_breaker("intune"),
);
static GET: Site = Site::new(&Policy::new("get_device", "intune::client").with_breaker("intune"));

/// Drives a call the way `#[resilient]` does, with an idempotency key.
async fn call(site: &'static Site, key: Option<&str>, err: fn() -> E) -> Result<(), E> {
    let mut call = Execution::new(site, Hooks::new());
    if let Some(k) = key {
        call = call.idempotency_key(k);
    }
    call.run(|| async { Err::<(), E>(err()) }).await
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test(start_paused = true)]
async fn failed_calls_become_seed_000_events_routed_by_class() {
    let lines = Buf::default();
    let owner = Arc::new(Mutex::new(Vec::<ConnectorErrorEvent>::new()));
    let security = Arc::new(Mutex::new(Vec::<ConnectorErrorEvent>::new()));
    let (o, s) = (owner.clone(), security.clone());
    let sink: Arc<dyn EventSink> = Arc::new(
        ErrorEvents::new()
            .with_sink(Arc::new(JsonLinesSink::new(lines.clone())))
            .on_permanent(sink_fn(move |e| o.lock().unwrap().push(e.clone())))
            .on_policy_violation(sink_fn(move |e| s.lock().unwrap().push(e.clone())))
            // Seed 000 keys: `{deployment_intent_id}-{operation}-{timestamp}`.
            .with_intent_id(|op, key| {
                let key = key?;
                let (intent, _) = key.split_once(&format!("-{op}-"))?;
                Some(intent.to_owned())
            }),
    );
    events::add_sink(sink.clone());

    Registry::new()
        .scope(async {
            let key = "0b9f-intent-create_assignment-1767693600";
            assert!(call(&CREATE, Some(key), || E::Throttled).await.is_err());
            assert!(call(&GET, None, || E::NotFound).await.is_err());
            assert!(call(&GET, None, || E::Forbidden).await.is_err());
        })
        .await;
    events::remove_sink(&sink);

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");

    // Exactly the seed's shape, field for field.
    for e in &events {
        assert_eq!(
            keys(e),
            BTreeSet::from([
                "correlation_id",
                "event_type",
                "event_data",
                "actor",
                "created_at"
            ])
        );
        assert_eq!(
            keys(&e["event_data"]),
            BTreeSet::from([
                "connector_type",
                "operation",
                "error_classification",
                "error_code",
                "error_message",
                "retry_count",
                "deployment_intent_id",
            ])
        );
        assert_eq!(e["event_type"], "CONNECTOR_ERROR");
        assert_eq!(e["actor"], "system:intune_connector");
        assert_eq!(e["event_data"]["connector_type"], "intune");
        let at = e["created_at"].as_str().unwrap();
        assert!(
            at.ends_with('Z') && humantime::parse_rfc3339(at).is_ok(),
            "{at}"
        );
        assert_eq!(e["correlation_id"].as_str().unwrap().len(), 16);
    }

    let throttled = &events[0]["event_data"];
    assert_eq!(throttled["operation"], "create_assignment");
    assert_eq!(throttled["error_classification"], "transient");
    assert_eq!(throttled["error_code"], "429");
    assert_eq!(throttled["retry_count"], 3);
    assert_eq!(throttled["deployment_intent_id"], "0b9f-intent");
    assert_eq!(
        throttled["error_message"],
        "create_assignment gave up after 3 retries: transient error 429 (retries_exhausted)"
    );

    let not_found = &events[1]["event_data"];
    assert_eq!(not_found["error_classification"], "permanent");
    assert_eq!(not_found["retry_count"], 0);
    assert_eq!(not_found["deployment_intent_id"], Value::Null);
    assert_eq!(
        events[2]["event_data"]["error_classification"],
        "policy_violation"
    );

    // Routing: permanent -> owner, policy violation -> security, transient -> neither.
    let owner = owner.lock().unwrap();
    let security = security.lock().unwrap();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].event_data.error_code.as_deref(), Some("404"));
    assert_eq!(security.len(), 1);
    assert_eq!(security[0].event_data.error_code.as_deref(), Some("403"));

    // The JSON reads back into the type.
    let back: ConnectorErrorEvent = serde_json::from_value(events[0].clone()).unwrap();
    assert_eq!(back.event_data.retry_count, 3);
}

#[test]
fn an_event_can_be_built_by_hand_with_the_seed_example() {
    let e = ConnectorErrorEvent::new(
        "intune",
        "create_assignment",
        ErrorClass::Transient,
        "Rate limit exceeded",
    )
    .with_code(Some("429"))
    .with_retry_count(3)
    .with_intent_id(Some("uuid".into()))
    .with_correlation_id("uuid");
    let v = serde_json::to_value(&e).unwrap();
    let mut want: Value = serde_json::from_str(
        r#"{
          "correlation_id": "uuid",
          "event_type": "CONNECTOR_ERROR",
          "event_data": {
            "connector_type": "intune",
            "operation": "create_assignment",
            "error_classification": "transient",
            "error_code": "429",
            "error_message": "Rate limit exceeded",
            "retry_count": 3,
            "deployment_intent_id": "uuid"
          },
          "actor": "system:intune_connector",
          "created_at": "2026-01-06T10:00:00Z"
        }"#,
    )
    .unwrap();
    want["created_at"] = v["created_at"].clone();
    assert_eq!(v, want);
}
