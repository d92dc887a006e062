//! Every key at once, through a re-export with `crate = "..."`.
#![deny(warnings)]

mod rt {
    pub use resilience_runtime::*;
}

use rt::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
#[connector(crate = "crate::rt")]
pub enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Conflict,
    #[connector(auth)]
    Unauthorized,
    #[connector(rejected)]
    Rejected(Rejected),
}

pub struct Client {
    tenant: String,
}

impl Client {
    async fn refresh(&self) -> Result<(), ApiError> {
        Ok(())
    }

    #[resilient(
        crate = "crate::rt",
        name = "api::client::get",
        retries = 4,
        backoff(base = "250ms", max = "4s", factor = 1.5, jitter = "decorrelated"),
        breaker = "api",
        breaker_key = self.tenant.as_str(),
        sensitive_key,
        idempotency_key = format!("{}-{id}", self.tenant),
        timeout = "2s",
        deadline = "1m",
        retry_on = [ApiError::Conflict],
        abort_on = [ApiError::Busy],
        fallback = Self::give_up,
        fallback_on = [ApiError::Busy, ApiError::Rejected],
        retry_if_ok = keep,
        refresh = Self::refresh,
        rate_limit = "api",
        bulkhead = "api",
        budget = "api-reads",
        connector = "api"
    )]
    pub async fn get(&self, id: u64) -> Result<u64, ApiError> {
        Ok(id)
    }
}

impl Client {
    async fn give_up(&self, id: &u64, e: ApiError) -> Result<u64, ApiError> {
        let _ = (&self.tenant, id);
        Err(e)
    }
}

fn keep(_: &u64) -> rt::RetryOk {
    rt::RetryOk::Accept
}

fn main() {}
