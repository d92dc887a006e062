use resilience_runtime::ConnectorError;

#[derive(Debug)]
struct Inner;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(delegate)]
    Wrapped(Inner),
}

fn main() {}
