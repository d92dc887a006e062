use resilience_runtime::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = 2, idempotent, backoff = "1ms")]
async fn list() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = 2, idempotent, backoff(base = 250, max = "4s"))]
async fn get() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
