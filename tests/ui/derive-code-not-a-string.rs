use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(throttled, code = 429)]
    TooManyRequests,
    #[connector(permanent, code = not_found)]
    NotFound,
}

fn main() {}
