//! Plain (blocking) fns are resilient too, on the same engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::{ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
}

struct Store {
    failures_left: u32,
    writes: Vec<String>,
}

impl Store {
    /// `&mut self` and an owned argument, re-run per attempt.
    #[resilient(retries = 3, idempotent, jitter = "none", backoff(base = "10ms"))]
    fn put(&mut self, value: String) -> Result<usize, ApiError> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(ApiError::Unavailable);
        }
        self.writes.push(value);
        Ok(self.writes.len())
    }
}

#[test]
fn blocking_fns_retry_with_backoff() {
    let slept = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&slept);
    let registry = Registry::new().with_blocking_sleep(move |d| log.lock().unwrap().push(d));
    let mut store = Store {
        failures_left: 2,
        writes: Vec::new(),
    };
    let r = registry.enter(|| store.put("v".to_owned()));
    assert_eq!(r.ok(), Some(1));
    assert_eq!(store.writes, ["v"]);
    assert_eq!(
        *slept.lock().unwrap(),
        [Duration::from_millis(10), Duration::from_millis(20)]
    );
}
