use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

#[resilient(timeout = "5s")]
fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(deadline = "30s")]
fn fetch_all() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
