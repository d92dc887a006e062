use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(policy)]
    Forbidden,
    #[connector(terminal = "license_exhausted")]
    NoLicense,
}

// A policy violation is escalated, never retried.
#[resilient(retries = 2, idempotent, retry_on = [ApiError::Forbidden])]
async fn assign() -> Result<u32, ApiError> {
    Ok(1)
}

// A terminal reason cannot succeed until the target changes.
#[resilient(retries = 2, idempotent, retry_on = [ApiError::NoLicense])]
async fn license() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
