use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(status = status)]
    Http { status: String },
}

fn main() {}
