use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    Http {
        #[connector(verdict)]
        status: u16,
    },
}

fn main() {}
