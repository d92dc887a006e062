use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(terminal = license_exhausted)]
    NoLicense,
}

fn main() {}
