use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient]
const fn answer() -> Result<u32, ApiError> {
    Ok(42)
}

fn main() {}
