use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

// A padded label would be a connector of its own.
#[resilient(connector = "graph ")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
