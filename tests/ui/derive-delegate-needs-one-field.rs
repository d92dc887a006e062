use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum Inner {
    #[connector(transient)]
    Busy,
}

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(delegate)]
    Wrapped(Inner, String),
    #[connector(delegate)]
    Nothing,
}

fn main() {}
