use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Store;

impl Store {
    async fn cached(&self, _key: &str, error: ApiError) -> Result<u32, ApiError> {
        Err(error)
    }

    #[resilient(retries = 1, idempotent, fallback = Self::cached)]
    fn read(&self, key: &str) -> Result<u32, ApiError> {
        Ok(key.len() as u32)
    }
}

fn main() {}
