use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

fn cached(_error: &ApiError) -> Option<u32> {
    None
}

#[resilient(fallback = cached)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
