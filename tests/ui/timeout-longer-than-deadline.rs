use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

// One error, at the `timeout`: the deadline would end the call before an attempt could time out.
#[resilient(timeout = "2m", deadline = "1m")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

// The same with retries: still one error, at the `timeout`, not a second one for the schedule.
#[resilient(retries = 2, idempotent, timeout = "90s", deadline = "1m")]
async fn fetch_again() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
