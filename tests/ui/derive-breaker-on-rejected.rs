use resilience_runtime::{ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
    #[connector(rejected, breaker = "ignored")]
    Rejected(Rejected),
}

fn main() {}
