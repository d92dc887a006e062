use std::time::Duration;

use resilience_runtime::http::Verdict;
use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    Http {
        #[connector(verdict)]
        verdict: Verdict,
        #[connector(retry_after)]
        wait: Duration,
    },
}

fn main() {}
