use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 3, idempotent, jitter = "ful")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = 3, idempotent, backoff(jitter = "gaussian"))]
async fn fetch_nested() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
