use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

#[resilient(breaker = "okta", sensitive_key)]
async fn fetch(api_key: &str) -> Result<u32, ApiError> {
    Ok(api_key.len() as u32)
}

fn main() {}
