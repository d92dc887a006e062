use std::time::Duration;

use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    // Never retried: the hint would never be read.
    #[connector(permanent)]
    Gone {
        #[connector(retry_after)]
        wait: Option<Duration>,
    },
}

fn main() {}
