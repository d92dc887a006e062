use resilience_runtime::{ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(rejected)]
    Rejected(Rejected),
    #[connector(rejected)]
    AlsoRejected(Rejected),
}

fn main() {}
