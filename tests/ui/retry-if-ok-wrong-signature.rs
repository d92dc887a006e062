use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

/// Takes the value, and answers a `bool`.
fn pending(status: u16) -> bool {
    status == 202
}

#[resilient(idempotent, retry_if_ok = pending)]
fn status() -> Result<u16, ApiError> {
    Ok(202)
}

fn main() {}
