use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(timeout = "1s", timeout = "2s")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
