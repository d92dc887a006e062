use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Conflict,
}

#[resilient(retries = 2, idempotent, retry_on = [ApiError::Conflict], abort_on = [ApiError::Busy, ApiError::Conflict])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
