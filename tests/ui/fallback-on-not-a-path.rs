use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

fn cached(error: ApiError) -> Result<u32, ApiError> {
    Err(error)
}

#[resilient(fallback = cached, fallback_on = [ApiError::Busy, "Busy"])]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
