use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Conflict,
}

// Not safe to repeat and no retries: a backoff, a budget and `retry_on` do nothing.
#[resilient(backoff(base = "1s"), budget = "graph", retry_on = [ApiError::Conflict])]
async fn create() -> Result<u32, ApiError> {
    Ok(1)
}

// Said outright: `retries = 0`.
#[resilient(retries = 0, jitter = "full")]
async fn update() -> Result<u32, ApiError> {
    Ok(1)
}

// Nothing to abort: no retries, no credential refresh.
#[resilient(abort_on = [ApiError::Busy])]
async fn delete() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
