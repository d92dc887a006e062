use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(idempotent = true)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
