//! The idempotency key is evaluated once per call: the same on every attempt, different between
//! calls.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::{CallContext, ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
}

static KEYS_SEEN: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static KEY_EVALUATIONS: AtomicU32 = AtomicU32::new(0);

fn new_key(order: &str) -> String {
    let n = KEY_EVALUATIONS.fetch_add(1, Ordering::SeqCst);
    format!("{order}-{n}")
}

#[resilient(retries = 2, jitter = "none", idempotency_key = new_key(order))]
async fn create_order(order: &str, fail_first: usize) -> Result<String, ApiError> {
    let ctx = CallContext::current().expect("a resilient call has a context");
    let key = ctx.idempotency_key().unwrap_or_default().to_owned();
    let mut seen = KEYS_SEEN.lock().unwrap();
    seen.push((ctx.attempt(), key.clone()));
    if seen.len() <= fail_first {
        Err(ApiError::Unavailable)
    } else {
        Ok(key)
    }
}

#[tokio::test(start_paused = true)]
async fn the_key_is_stable_across_attempts_and_differs_between_calls() {
    let registry = Registry::new();
    let first = registry.scope(create_order("o-1", 2)).await.unwrap();
    let attempts: Vec<(u32, String)> = KEYS_SEEN.lock().unwrap().drain(..).collect();
    assert_eq!(
        attempts,
        [(0, first.clone()), (1, first.clone()), (2, first.clone())]
    );
    assert_eq!(KEY_EVALUATIONS.load(Ordering::SeqCst), 1);

    let second = registry.scope(create_order("o-1", 0)).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(KEY_EVALUATIONS.load(Ordering::SeqCst), 2);
}
