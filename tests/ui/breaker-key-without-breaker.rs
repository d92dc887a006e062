use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

#[resilient(breaker_key = tenant)]
async fn fetch(tenant: &str) -> Result<u32, ApiError> {
    Ok(tenant.len() as u32)
}

#[resilient(breaker = "")]
async fn fetch_unnamed() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
