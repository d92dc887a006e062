use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = "3", idempotent)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = -1, idempotent)]
async fn fetch_again() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
