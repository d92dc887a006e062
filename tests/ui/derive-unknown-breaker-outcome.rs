use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient, breaker = "faliure")]
    Unavailable,
}

fn main() {}
