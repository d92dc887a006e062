use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Request;

impl Request {
    fn cached(&self, error: ApiError) -> Result<u32, ApiError> {
        Err(error)
    }

    #[resilient(fallback = Self::cached)]
    async fn send(self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
