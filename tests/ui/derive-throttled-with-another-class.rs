use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient, throttled)]
    TooManyRequests,
}

fn main() {}
