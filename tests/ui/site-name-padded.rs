use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

// Padded, it would have to be padded in every table too.
#[resilient(name = " graph::fetch")]
async fn fetch_padded() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
