use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

// Waits of 1s, 2s, 4s, 8s (jitter off) plus 5 attempts of up to 10s: 1m 5s.
#[resilient(retries = 4, idempotent, jitter = "none", timeout = "10s", deadline = "1m")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
