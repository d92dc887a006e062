//! The server's Retry-After, carried in a variant field, replaces a shorter backoff.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::{ConnectorError, Registry, resilient};
use tokio::time::Instant;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient, code = "429")]
    Throttled {
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 2, idempotent, backoff(base = "1s"), jitter = "none")]
async fn throttled_once() -> Result<(), ApiError> {
    if RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        Err(ApiError::Throttled {
            retry_after: Some(Duration::from_secs(7)),
        })
    } else {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_a_variant_field_is_honoured() {
    let started = Instant::now();
    Registry::new().scope(throttled_once()).await.unwrap();
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}
