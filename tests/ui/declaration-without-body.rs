use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

trait Api {
    #[resilient(retries = 2, idempotent)]
    async fn fetch(&self) -> Result<u32, ApiError>;
}

fn main() {}
