//! A mistake in the derive is reported once: the stub impl keeps every use of the type quiet.
use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient, permanent)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = 2, idempotent, breaker = "api")]
async fn fetch() -> Result<u32, ApiError> {
    Err(ApiError::Busy)
}

fn main() {
    let _ = fetch();
}
