use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(auth)]
    Unauthorized,
}

struct Client;

impl Client {
    fn refresh_token(&self) -> Result<(), String> {
        Ok(())
    }

    #[resilient(refresh = Self::refresh_token)]
    async fn fetch(&self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
