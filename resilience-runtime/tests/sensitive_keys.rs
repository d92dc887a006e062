//! A per-key breaker keyed by a secret (`sensitive_key`): every output shows `key#` and 16 hex
//! digits, none the secret (feature `prometheus`). Event sinks are process-wide, so this file
//! holds one test.
#![cfg(feature = "prometheus")]

mod common;
use common::Capture;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::limit::RateLimit;
use resilience_runtime::prometheus::Collector;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

const SECRET: &str = "sk_live_51HqTenantSecret";
/// `printf 'okta\0sk_live_51HqTenantSecret' | sha256sum`, its first 16 hex digits.
const SHOWN: &str = "key#c862676542879867";

#[derive(Debug, thiserror::Error, ConnectorError)]
enum OktaError {
    #[error("okta is unavailable")]
    #[connector(transient)]
    Unavailable,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(breaker = "okta", breaker_key = api_key, sensitive_key, rate_limit = "okta")]
async fn users(api_key: &str, fail: bool) -> Result<u32, OktaError> {
    if fail {
        Err(OktaError::Unavailable)
    } else {
        Ok(3)
    }
}

/// Every event, as a sink could print or ship it, and each transition's breaker name.
#[derive(Debug, Default)]
struct Recorder {
    printed: Mutex<Vec<String>>,
    transitions: Mutex<Vec<String>>,
}
impl EventSink for Recorder {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        self.printed.lock().unwrap().push(format!("{event:?}"));
        if let RuntimeEvent::BreakerTransition { breaker, .. } = event {
            self.transitions.lock().unwrap().push((*breaker).to_owned());
        }
    }
}

/// A per-key limiter that admits every call and keeps the keys it was asked for.
#[derive(Debug, Default)]
struct KeysSeen(Mutex<Vec<Option<String>>>);
impl RateLimit for KeysSeen {
    fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_keyed(None)
    }
    fn try_acquire_keyed(&self, key: Option<&str>) -> Result<(), Duration> {
        self.0.lock().unwrap().push(key.map(str::to_owned));
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sensitive_key_reaches_no_output_and_its_redacted_form_reaches_each() {
    let log = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn EventSink> = recorder.clone();
    events::add_sink(sink.clone());

    let registry = Registry::new();
    let limiter = Arc::new(KeysSeen::default());
    registry.set_rate_limit("okta", limiter.clone());
    let circuit_open = registry
        .scope(async {
            // The default breaker opens at the fifth failure in a row.
            for _ in 0..5 {
                assert!(matches!(
                    users(SECRET, true).await,
                    Err(OktaError::Unavailable)
                ));
            }
            let open = users(SECRET, false).await.unwrap_err();
            assert!(matches!(
                open,
                OktaError::Rejected(Rejected::CircuitOpen { .. })
            ));
            open.to_string()
        })
        .await;
    let health = serde_json::to_string(&registry.health()).unwrap();
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(
        Collector::new(registry.clone()).with_per_key_breakers(true),
    ));
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &prom).unwrap();
    // After the cooldown a probe succeeds: half-open, then closed, logged and reported too.
    tokio::time::advance(Duration::from_secs(60)).await;
    registry
        .scope(async { assert_eq!(users(SECRET, false).await.unwrap(), 3) })
        .await;
    events::remove_sink(&sink);

    let log = log.text();
    let printed = recorder.printed.lock().unwrap().join("\n");
    let transitions = recorder.transitions.lock().unwrap().clone();
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{log}\n{printed}\n{health}\n{metrics}\n{circuit_open}");
    }
    let channels = [
        ("tracing", &log),
        ("events", &printed),
        ("health", &health),
        ("prometheus", &metrics),
        ("CircuitOpen", &circuit_open),
    ];
    for (channel, text) in channels {
        for leak in [SECRET, "TenantSecret", "sk_live"] {
            assert!(!text.contains(leak), "{channel} shows `{leak}`:\n{text}");
        }
        assert!(text.contains(SHOWN), "{channel} lacks `{SHOWN}`:\n{text}");
    }

    // Where each channel shows it.
    let full = format!("okta/{SHOWN}");
    assert!(
        circuit_open.starts_with(&format!("circuit `{full}` is open; next probe in ")),
        "{circuit_open}"
    );
    let opened = log
        .lines()
        .find(|l| l.contains("circuit breaker opened"))
        .unwrap_or_else(|| panic!("no WARN for the opening:\n{log}"));
    assert!(opened.contains(" WARN "), "{opened}");
    assert!(opened.contains(&format!("breaker={full}")), "{opened}");
    assert_eq!(transitions, [full.as_str(); 3], "open, half-open, closed");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let worst = &health["keyed"][0]["worst"][0];
    assert_eq!(worst["name"], full.as_str());
    assert_eq!(worst["key"], SHOWN);
    assert_eq!(worst["state"], "open");
    assert!(
        metrics.contains(&format!(
            "circuit_breaker_state{{connector=\"okta\",key=\"{SHOWN}\"}} 1"
        )),
        "{metrics}"
    );

    // The per-key rate limit still draws on the key itself: a map key, not an output.
    let seen = limiter.0.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|k| k.as_deref() == Some(SECRET)),
        "{seen:?}"
    );
}
