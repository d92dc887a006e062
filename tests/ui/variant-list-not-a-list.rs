use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = 2, idempotent, abort_on = ApiError::Busy)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
