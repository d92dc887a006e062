use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 2, idempotent, backoff(jitter = "full"), jitter = "none")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
