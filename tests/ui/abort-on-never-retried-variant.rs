use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    NotFound,
    #[connector(policy)]
    Forbidden,
}

// Neither is retried by its class: aborting them changes nothing.
#[resilient(retries = 2, idempotent, abort_on = [ApiError::NotFound, ApiError::Forbidden])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
