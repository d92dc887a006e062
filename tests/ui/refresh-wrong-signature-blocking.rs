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

    async fn refresh_async(&self) -> Result<(), ApiError> {
        Ok(())
    }

    // A blocking site's hook returns the site's error type.
    #[resilient(refresh = Self::refresh_token)]
    fn fetch(&self) -> Result<u32, ApiError> {
        Ok(1)
    }

    // A blocking site cannot await an async hook.
    #[resilient(refresh = Self::refresh_async)]
    fn fetch_again(&self) -> Result<u32, ApiError> {
        Ok(1)
    }
}

fn main() {}
