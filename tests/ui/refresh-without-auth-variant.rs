use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Unauthorized,
}

struct Client;

impl Client {
    async fn refresh_token(&self) -> Result<(), ApiError> {
        Ok(())
    }

    // No variant is `auth`: the hook would never run.
    #[resilient(refresh = Self::refresh_token)]
    async fn fetch(&self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
