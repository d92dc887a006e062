use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

// One breaker for every tenant: the key does not vary.
#[resilient(breaker = "graph", breaker_key = "tenant")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

// One idempotency key for every create: the server answers each with the first's result.
#[resilient(retries = 2, idempotency_key = "create-user")]
async fn create() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
