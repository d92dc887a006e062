use resilience_runtime::ConnectorError;

#[derive(Debug, ConnectorError)]
pub enum GraphError {
    #[connector(auth)]
    Unauthorized {
        #[connector(secret)]
        token: String,
    },
}

fn main() {}
