//! Every fn shape `#[resilient]` supports, in a crate that denies warnings and uses neither tokio
//! nor tracing directly.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::{ConnectorError, Rejected, resilient};

#[derive(Debug, ConnectorError)]
pub enum ApiError {
    #[connector(transient)]
    Busy {
        #[connector(retry_after)]
        wait: Option<Duration>,
    },
    #[connector(status = status)]
    Http { status: u16 },
    #[connector(auth)]
    Unauthorized,
    #[connector(rejected)]
    Rejected(Rejected),
}

/// A `Result` alias.
pub type ApiResult<T> = Result<T, ApiError>;

/// A free async fn with owned and `Copy` arguments.
#[resilient(retries = 2, idempotent, timeout = "1s", breaker = "api")]
pub async fn free_async(name: String, n: u32) -> Result<String, ApiError> {
    Ok(format!("{name}{n}"))
}

/// `mut` owned, destructured and `&mut` arguments at a retrying site, one `&mut` binding
/// reassigned: each attempt owns its `mut` bindings, and no parameter is an unused `mut`.
#[resilient(retries = 2, idempotent)]
pub async fn mut_arguments(
    mut buf: Vec<u8>,
    (mut a, b): (u32, u32),
    mut out: &mut Vec<u32>,
    spare: &mut Vec<u32>,
) -> ApiResult<usize> {
    buf.push(1);
    a += b;
    out.push(a);
    out = spare;
    out.push(a);
    Ok(buf.len())
}

/// The same, blocking.
#[resilient(retries = 2, idempotent)]
pub fn mut_arguments_blocking(mut buf: Vec<u8>, mut out: &mut Vec<u32>, spare: &mut Vec<u32>) -> ApiResult<usize> {
    buf.push(1);
    out.push(1);
    out = spare;
    out.push(2);
    Ok(buf.len())
}

/// An owned argument used only in a format string: it is cloned per attempt like any other.
#[resilient(retries = 2, idempotent)]
pub async fn format_only(name: String, width: usize) -> ApiResult<String> {
    Ok(format!("{name:>width$}"))
}

/// A free blocking fn.
#[resilient(retries = 2, idempotent)]
pub fn free_blocking(name: &str) -> Result<usize, ApiError> {
    Ok(name.len())
}

/// Generics, lifetimes and a where clause.
#[resilient(retries = 1, idempotent)]
pub async fn generic<'a, T, U: Clone>(items: &'a [T], extra: U) -> ApiResult<(&'a T, U)>
where
    T: Display + Sync,
{
    let first = items.first().ok_or(ApiError::Http { status: 404 })?;
    Ok((first, extra))
}

/// `impl Trait` arguments.
#[resilient(retries = 1, idempotent)]
pub async fn impl_trait(key: impl AsRef<str> + Clone, f: &impl Fn(&str) -> usize) -> ApiResult<usize> {
    Ok(f(key.as_ref()))
}

/// Pattern arguments.
#[resilient(retries = 1, idempotent)]
pub fn patterns((a, b): (u32, u32), Wrapper(inner): Wrapper, _: u8) -> ApiResult<u32> {
    Ok(a + b + inner.len() as u32)
}

#[derive(Clone)]
pub struct Wrapper(pub String);

/// A body that moves its arguments, at a site that never repeats.
#[resilient]
pub async fn moves(body: Vec<u8>) -> ApiResult<Vec<u8>> {
    Ok(body)
}

/// `?` converts into the declared error type.
#[resilient(retries = 1, idempotent)]
pub async fn question_mark(raw: &str) -> ApiResult<u16> {
    let status: u16 = raw.parse().map_err(|_| ApiError::Http { status: 400 })?;
    Ok(status)
}

pub struct Client {
    calls: u32,
    tenant: String,
}

impl Client {
    #[resilient(retries = 1, idempotent, breaker = "api", breaker_key = self.tenant.clone())]
    pub async fn by_ref(&self, id: &str) -> Result<String, ApiError> {
        Ok(format!("{}/{id}", self.tenant))
    }

    #[resilient(retries = 3, idempotent)]
    pub async fn by_mut(&mut self, out: &mut Vec<u32>, mut tag: String) -> Result<u32, ApiError> {
        tag.push('!');
        self.calls += 1;
        out.push(self.calls);
        Ok(self.calls)
    }

    #[resilient(retries = 3, idempotent)]
    pub fn blocking_mut(&mut self) -> Result<u32, ApiError> {
        self.calls += 1;
        Ok(self.calls)
    }

    #[resilient(retries = 1, idempotent)]
    pub async fn by_arc(self: Arc<Self>) -> ApiResult<usize> {
        Ok(self.tenant.len())
    }

    #[resilient(refresh = Self::refresh)]
    pub async fn with_refresh(&self) -> ApiResult<()> {
        Ok(())
    }

    #[resilient(refresh = Self::refresh_mut)]
    pub async fn with_refresh_mut(&mut self) -> ApiResult<()> {
        self.calls += 1;
        Ok(())
    }

    #[resilient(refresh = Self::refresh)]
    pub async fn arc_with_refresh(self: Arc<Self>) -> ApiResult<()> {
        Ok(())
    }

    #[resilient(refresh = Self::refresh_blocking)]
    pub fn blocking_with_refresh(&self) -> ApiResult<()> {
        Ok(())
    }

    async fn refresh(&self) -> Result<(), ApiError> {
        Ok(())
    }

    async fn refresh_mut(&mut self) -> Result<(), ApiError> {
        self.calls = 0;
        Ok(())
    }

    fn refresh_blocking(&self) -> Result<(), ApiError> {
        Ok(())
    }

    /// `self` by value at a site that never repeats.
    #[resilient]
    pub fn by_value(self) -> ApiResult<Client> {
        Ok(self)
    }

    /// An associated fn without a receiver, with a free refresh fn.
    #[resilient(refresh = refresh_global)]
    pub async fn associated() -> ApiResult<()> {
        Ok(())
    }
}

async fn refresh_global() -> Result<(), ApiError> {
    Ok(())
}

fn main() {}
