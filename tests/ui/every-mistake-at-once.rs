//! Every mistake is reported in one build, and the fn is still emitted: `main` below uses it
//! without a cascade of "cannot find function" errors.
use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 30, timeout = "0ms", backoff(base = "1m", factor = 0.9), jitter = "ful")]
fn fetch(id: u32) -> Result<u32, ApiError> {
    Ok(id)
}

fn main() {
    let _ = fetch(1);
}
