//! Fallbacks and `retry_if_ok` on every fn shape, in a crate that denies warnings: generic and
//! `impl Trait` arguments, `&mut` arguments, `self: Arc<Self>`, a `Result` alias, a body that
//! moves its argument at a site that runs once, plain fallbacks of async fns, and futures that
//! stay `Send`.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::Arc;

use resilience_runtime::{ConnectorError, Rejected, RetryOk, resilient};

#[derive(Debug, ConnectorError)]
pub enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Gone,
    #[connector(rejected)]
    Rejected(Rejected),
}

pub type ApiResult<T> = Result<T, ApiError>;

fn first_cached<'a, T: Display>(items: &'a [T], extra: &String, e: ApiError) -> ApiResult<&'a T> {
    let _ = extra;
    items.first().ok_or(e)
}

/// Generics and lifetimes; the fallback is generic too.
#[resilient(retries = 1, idempotent, fallback = first_cached)]
pub async fn generic<'a, T: Display + Sync>(items: &'a [T], extra: String) -> ApiResult<&'a T> {
    let _ = extra;
    items.first().ok_or(ApiError::Busy)
}

fn by_key(key: &impl AsRef<str>, out: &Vec<u32>, e: ApiError) -> ApiResult<usize> {
    let _ = (out, e);
    Ok(key.as_ref().len())
}

/// `impl Trait` and `&mut` arguments: the fallback gets `&impl AsRef<str>` and `&Vec<u32>`.
#[resilient(fallback = by_key, fallback_on = [ApiError::Busy])]
pub async fn impl_trait(key: impl AsRef<str> + Clone, out: &mut Vec<u32>) -> ApiResult<usize> {
    out.push(1);
    Ok(key.as_ref().len())
}

fn body_back(body: &Vec<u8>, _: ApiError) -> ApiResult<Vec<u8>> {
    Ok(body.clone())
}

/// A body that moves its argument at a site that runs once: the attempt gets a clone.
#[resilient(fallback = body_back)]
pub async fn moves(body: Vec<u8>) -> ApiResult<Vec<u8>> {
    Ok(body)
}

fn accepted(status: &u16) -> RetryOk {
    if *status == 202 {
        RetryOk::Retry
    } else {
        RetryOk::Accept
    }
}

pub struct Client {
    tenant: String,
}

impl Client {
    /// A plain fallback of an async fn.
    fn plain(&self, id: &str, e: ApiError) -> ApiResult<String> {
        let _ = e;
        Ok(format!("{}/{id}", self.tenant))
    }

    async fn later(&self, e: ApiError) -> ApiResult<usize> {
        let _ = e;
        Ok(self.tenant.len())
    }

    fn blocking_fallback(&mut self, e: ApiError) -> ApiResult<u32> {
        self.tenant.clear();
        let _ = e;
        Ok(0)
    }

    #[resilient(retries = 1, idempotent, breaker = "api", fallback = Self::plain)]
    pub async fn by_ref(&self, id: &str) -> Result<String, ApiError> {
        Ok(format!("{}/{id}", self.tenant))
    }

    /// `self: Arc<Self>`: the fallback gets `&self`.
    #[resilient(retries = 1, idempotent, timeout = "1s", fallback = Self::later)]
    pub async fn by_arc(self: Arc<Self>) -> ApiResult<usize> {
        Ok(self.tenant.len())
    }

    /// Blocking, `&mut self`, both hooks.
    #[resilient(
        retries = 2,
        idempotent,
        fallback = Self::blocking_fallback,
        fallback_on = [ApiError::Busy, ApiError::Gone],
        retry_if_ok = accepted_u32
    )]
    pub fn blocking_mut(&mut self) -> ApiResult<u32> {
        Ok(self.tenant.len() as u32)
    }

    #[resilient(idempotency_key = self.tenant.clone(), retry_if_ok = accepted)]
    pub async fn status(&self) -> ApiResult<u16> {
        Ok(200)
    }
}

fn accepted_u32(n: &u32) -> RetryOk {
    if *n == 0 { RetryOk::RetryAfter(std::time::Duration::from_millis(5)) } else { RetryOk::Accept }
}

fn assert_send<F: Send>(f: F) -> F {
    f
}

pub async fn all(client: Arc<Client>) {
    let items = [1u8, 2];
    let _ = assert_send(generic(&items, String::new())).await;
    let mut out = Vec::new();
    let _ = assert_send(impl_trait("k".to_owned(), &mut out)).await;
    let _ = assert_send(moves(vec![1])).await;
    let _ = assert_send(client.by_ref("7")).await;
    let _ = assert_send(client.status()).await;
    let _ = assert_send(client.clone().by_arc()).await;
}

fn main() {
    let mut c = Client { tenant: "t".to_owned() };
    let _ = c.blocking_mut();
}
