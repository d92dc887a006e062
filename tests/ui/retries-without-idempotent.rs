use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(retries = 3)]
async fn create_user(name: &str) -> Result<String, ApiError> {
    Ok(name.to_owned())
}

fn main() {}
