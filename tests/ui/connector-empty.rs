use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

// `connector` is the `connector` label of the site's metrics: it must say something.
#[resilient(connector = "")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
