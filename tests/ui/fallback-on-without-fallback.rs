use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 1, idempotent, fallback_on = [ApiError::Busy])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
