use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(permanent, code = "")]
    NotFound,
}

fn main() {}
