use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(max_attempts = 4, idempotent)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(attempts = 3, idempotent)]
async fn fetch_again() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
