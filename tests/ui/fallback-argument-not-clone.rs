use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Body(Vec<u8>);

fn empty(_body: &Body, error: ApiError) -> Result<usize, ApiError> {
    Err(error)
}

#[resilient(fallback = empty)]
async fn upload(body: Body) -> Result<usize, ApiError> {
    Ok(body.0.len())
}

fn main() {}
