use std::future::Future;

use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

// An async fn written by hand: the attribute needs the `async fn` itself.
#[resilient(retries = 2, idempotent)]
fn fetch() -> impl Future<Output = Result<u32, ApiError>> {
    async { Ok(1) }
}

fn main() {}
