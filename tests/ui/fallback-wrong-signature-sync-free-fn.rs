use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

/// Returns an `Option`, and forgets the name.
fn cached(_name: &String, _error: ApiError) -> Option<u32> {
    None
}

#[resilient(fallback = cached)]
fn fetch(name: String) -> Result<u32, ApiError> {
    Ok(name.len() as u32)
}

fn main() {}
