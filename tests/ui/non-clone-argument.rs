use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Request {
    body: Vec<u8>,
}

#[resilient(retries = 2, idempotent)]
async fn send(request: Request) -> Result<usize, ApiError> {
    Ok(request.body.len())
}

fn main() {}
