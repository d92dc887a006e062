//! One-line bodies, `{ Ok(..) }`, in every fn shape, in a crate that denies warnings: the
//! attempt holds the body's statements, so rustc's `unused_braces` has nothing to flag (and
//! `cargo fix` nothing to break).
#![deny(warnings)]

use resilience_runtime::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
pub enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient]
pub async fn once() -> Result<u32, ApiError> { Ok(1) }

#[resilient(retries = 2, idempotent)]
pub async fn retrying(n: u32) -> Result<u32, ApiError> { Ok(n) }

#[resilient(retries = 2, idempotent, breaker = "api", timeout = "1s")]
pub async fn guarded(name: String) -> Result<usize, ApiError> { Ok(name.len()) }

#[resilient(retries = 2, idempotent, breaker = "api")]
pub fn blocking(n: u32) -> Result<u32, ApiError> { Ok(n) }

#[resilient]
pub fn blocking_once() -> Result<u32, ApiError> { Ok(1) }

pub struct Client {
    base: u32,
    calls: u32,
}

impl Client {
    #[resilient(retries = 2, idempotent, breaker = "api")]
    pub async fn by_ref(&self, n: u32) -> Result<u32, ApiError> { Ok(self.base + n) }

    #[resilient(retries = 2, idempotent)]
    pub async fn by_mut(&mut self) -> Result<u32, ApiError> { Ok(self.calls) }

    #[resilient(retries = 2, idempotent)]
    pub fn blocking_by_ref(&self) -> Result<u32, ApiError> { Ok(self.base) }

    #[resilient]
    pub async fn by_value(self) -> Result<u32, ApiError> { Ok(self.base) }
}

fn main() {
    let _ = ApiError::Busy;
    let _ = (once, retrying, guarded, blocking, blocking_once);
    let _ = (Client::by_ref, Client::by_mut, Client::blocking_by_ref, Client::by_value);
    let _ = Client { base: 1, calls: 0 }.calls;
}
