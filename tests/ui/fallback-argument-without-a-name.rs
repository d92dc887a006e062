use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

fn cached(error: ApiError) -> Result<u32, ApiError> {
    Err(error)
}

#[resilient(fallback = cached)]
async fn fetch((a, b): (u32, u32)) -> Result<u32, ApiError> {
    Ok(a + b)
}

fn main() {}
