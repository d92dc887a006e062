use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Throttled {
        #[connector(retry_after)]
        retry_after_secs: u64,
    },
}

fn main() {}
