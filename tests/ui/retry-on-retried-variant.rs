use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(throttled)]
    TooManyRequests,
}

// Both are retried by their class already.
#[resilient(retries = 2, idempotent, retry_on = [ApiError::Busy, ApiError::TooManyRequests])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
