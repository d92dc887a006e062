use resilience_runtime::{resilient, ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

struct Client {
    tenant_id: u64,
}

impl Client {
    // A breaker key is text: a number must be formatted first.
    #[resilient(breaker = "graph", breaker_key = self.tenant_id)]
    async fn fetch(&self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
