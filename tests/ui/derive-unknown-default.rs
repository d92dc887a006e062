use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
#[connector(default = "permament")]
enum ApiError {
    Busy,
}

fn main() {}
