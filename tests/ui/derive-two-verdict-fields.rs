use resilience_runtime::http::Verdict;
use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    Http {
        #[connector(verdict)]
        first: Verdict,
        #[connector(verdict)]
        last: Verdict,
    },
}

fn main() {}
