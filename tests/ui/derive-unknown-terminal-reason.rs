use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(terminal = "licence_exhausted")]
    NoSeats,
}

fn main() {}
