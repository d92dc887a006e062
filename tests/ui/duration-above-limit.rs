use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

#[resilient(timeout = "31days")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(retries = 1, idempotent, backoff(base = "1s", max = "600years"))]
async fn fetch_slowly() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
