use resilience_runtime::{resilient, ConnectorError};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
}

struct Store {
    last: u32,
}

impl Store {
    /// Takes `&self` where the site has `&mut self`, and forgets the key.
    fn cached(&self, error: ApiError, _key: &str) -> Result<u32, ApiError> {
        let _ = error;
        Ok(self.last)
    }

    #[resilient(fallback = Self::cached)]
    fn read(&mut self, key: &str) -> Result<u32, ApiError> {
        self.last = key.len() as u32;
        Ok(self.last)
    }
}

fn main() {}
