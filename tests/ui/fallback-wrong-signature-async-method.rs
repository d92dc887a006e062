use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum GraphError {
    #[connector(transient)]
    Unavailable,
}

#[derive(Debug, Clone)]
struct Device;

struct Graph;

impl Graph {
    /// Takes the id by value, not by reference.
    async fn cached(&self, _id: u64, error: GraphError) -> Result<Device, GraphError> {
        Err(error)
    }

    #[resilient(retries = 2, idempotent, fallback = Self::cached)]
    async fn device(&self, id: u64) -> Result<Device, GraphError> {
        let _ = id;
        Err(GraphError::Unavailable)
    }
}

fn main() {}
