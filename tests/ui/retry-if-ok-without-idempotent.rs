use resilience_runtime::{resilient, ConnectorError, RetryOk};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

fn pending(status: &u16) -> RetryOk {
    if *status == 202 { RetryOk::Retry } else { RetryOk::Accept }
}

#[resilient(retries = 0, retry_if_ok = pending)]
async fn create() -> Result<u16, ApiError> {
    Ok(202)
}

fn main() {}
