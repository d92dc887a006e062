use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient]
async fn fetch() -> Result<u32, ApiError> {
    let _ = __resilient_call;
    Ok(1)
}

fn main() {}
