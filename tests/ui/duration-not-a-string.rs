use resilience_runtime::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = 2, idempotent, timeout = 10)]
async fn list() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = 2, idempotent, deadline = SECONDS)]
async fn get() -> Result<u32, ApiError> {
    Ok(1)
}

const SECONDS: u64 = 30;

fn main() {}
