use resilience_runtime::ConnectorError;

#[derive(ConnectorError)]
union ApiError {
    code: u32,
}

fn main() {}
