use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient, breaker = 0)]
    Unavailable,
}

fn main() {}
