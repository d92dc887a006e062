use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Conflict,
    #[connector(permanent)]
    Gone,
}

#[resilient(retries = 2, idempotent, abort_on = [])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = 2, idempotent, retry_on = [ApiError::Conflict, ApiError::Conflict])]
async fn fetch_again() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
