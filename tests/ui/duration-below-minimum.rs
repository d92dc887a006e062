use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

#[resilient(timeout = "500us")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
