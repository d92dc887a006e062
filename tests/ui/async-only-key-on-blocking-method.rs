use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

struct Store;

impl Store {
    /// Every other key works on a blocking fn; `timeout` and `deadline` need an async one.
    #[resilient(
        retries = 2,
        idempotent,
        breaker = "store",
        rate_limit = "store",
        bulkhead = "store",
        timeout = "1s",
        deadline = "10s"
    )]
    fn read(&self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
