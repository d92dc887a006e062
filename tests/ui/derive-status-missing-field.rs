use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(status = code)]
    Http { status: u16, body: String },
}

fn main() {}
