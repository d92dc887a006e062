use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

// A bulkhead and a rate limit are named here; their sizes are configured.
#[resilient(bulkhead = 8)]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

#[resilient(rate_limit = 100)]
async fn fetch_again() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
