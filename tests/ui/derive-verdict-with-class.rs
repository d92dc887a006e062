use resilience_runtime::http::Verdict;
use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(policy)]
    Http(#[connector(verdict)] Verdict),
}

fn main() {}
