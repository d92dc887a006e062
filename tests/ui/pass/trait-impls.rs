//! Methods in trait impls, native `async fn` in traits included.
#![deny(warnings)]

use resilience_runtime::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
pub enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

pub trait Directory {
    fn count(&self) -> Result<usize, ApiError>;
    #[allow(async_fn_in_trait)]
    async fn lookup(&mut self, id: &str) -> Result<String, ApiError>;
    #[allow(async_fn_in_trait)]
    async fn fetch<T: Clone>(&self, value: T) -> Result<T, ApiError>;
}

pub struct Ldap {
    hits: u32,
}

impl Directory for Ldap {
    #[resilient(retries = 2, idempotent)]
    fn count(&self) -> Result<usize, ApiError> {
        Ok(self.hits as usize)
    }

    #[resilient(retries = 2, idempotent, timeout = "2s", breaker = "ldap")]
    async fn lookup(&mut self, id: &str) -> Result<String, ApiError> {
        self.hits += 1;
        Ok(id.to_owned())
    }

    #[resilient(retries = 1, idempotent)]
    async fn fetch<T: Clone>(&self, value: T) -> Result<T, ApiError> {
        Ok(value)
    }
}

/// The future of an annotated method is `Send` when its captures are.
fn assert_send<F: Send>(_: F) {}

pub fn check(ldap: &mut Ldap) {
    assert_send(ldap.lookup("cn=ada"));
}

fn main() {}
