use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Upload {
    bytes: Vec<u8>,
}

impl Upload {
    #[resilient(retries = 2, idempotent)]
    async fn send(self) -> Result<usize, ApiError> {
        Ok(self.bytes.len())
    }
}

fn main() {}
