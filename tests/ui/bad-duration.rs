use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(timeout = "10 parsecs")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(timeout = "10")]
async fn fetch_without_unit() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
