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
    // No retries of its own, but a configuration may give an idempotent site some.
    #[resilient(retries = 0, idempotent)]
    async fn send(self) -> Result<usize, ApiError> {
        Ok(self.bytes.len())
    }
}

fn main() {}
