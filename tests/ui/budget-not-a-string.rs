use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

#[resilient(budget = 3)]
async fn fetch_budgeted() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
