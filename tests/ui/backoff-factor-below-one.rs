use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 3, idempotent, backoff(factor = 0.5))]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
