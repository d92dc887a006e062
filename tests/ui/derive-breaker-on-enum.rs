use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
#[connector(breaker = "ignored")]
enum ApiError {
    #[connector(transient)]
    Locked,
}

fn main() {}
