use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

// A site name is what `[sites."<name>"]` tables name: it must say something.
#[resilient(name = "")]
async fn fetch() -> Result<u32, ApiError> {
    Ok(1)
}

fn main() {}
