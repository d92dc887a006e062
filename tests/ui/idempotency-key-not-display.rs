use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[derive(Clone, Copy)]
struct RequestId(u128);

// The key is sent as text: a type without `Display` cannot be one.
#[resilient(retries = 2, idempotency_key = id)]
async fn create(id: RequestId) -> Result<u32, ApiError> {
    Ok(id.0 as u32)
}

fn main() {}
