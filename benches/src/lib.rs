//! The operations every benchmark measures, side by side: a plain call, the same call under
//! `#[resilient]`, and under each peer crate. Each operation returns `Ok` at once, so what is
//! measured is the wrapper.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::{ConnectorError, Rejected, resilient};

/// The error of every benchmarked operation.
#[derive(Debug, ConnectorError)]
pub enum BenchError {
    /// A transient failure.
    #[connector(transient)]
    Transient,
    /// A rejection of the runtime.
    #[connector(rejected)]
    Rejected(Rejected),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench error")
    }
}

impl std::error::Error for BenchError {}

/// The plain call.
#[inline(never)]
pub async fn plain() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// `#[resilient(retries = 3, idempotent)]`.
#[inline(never)]
#[resilient(retries = 3, idempotent)]
pub async fn retries() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// With a named breaker.
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph")]
pub async fn breaker() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// With a breaker and a per-attempt timeout.
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph", timeout = "10s")]
pub async fn breaker_timeout() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// tokio's own `timeout` around the plain call: the floor for the timeout variant.
#[inline(never)]
pub async fn tokio_timeout() -> Result<u64, BenchError> {
    match tokio::time::timeout(Duration::from_secs(10), plain()).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Transient),
    }
}

/// backon's `Retryable` with 3 retries.
#[inline(never)]
pub async fn backon_retry() -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    plain
        .retry(ExponentialBuilder::default().with_max_times(3))
        .await
}

/// A failsafe breaker with its defaults.
pub fn failsafe_breaker() -> impl Failsafe {
    failsafe::Config::new().build()
}

/// failsafe's futures-aware breaker interface.
pub trait Failsafe: failsafe::futures::CircuitBreaker + Send + Sync {}
impl<T: failsafe::futures::CircuitBreaker + Send + Sync> Failsafe for T {}

/// failsafe's async breaker around the plain call.
#[inline(never)]
pub async fn failsafe_call(cb: &impl Failsafe) -> Result<u64, BenchError> {
    cb.call(plain()).await.map_err(|_| BenchError::Transient)
}

/// backon's retry around failsafe's breaker.
#[inline(never)]
pub async fn backon_failsafe(cb: &impl Failsafe) -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    (|| failsafe_call(cb))
        .retry(ExponentialBuilder::default().with_max_times(3))
        .await
}

/// tokio-retry with 3 retries.
#[inline(never)]
pub async fn tokio_retry() -> Result<u64, BenchError> {
    use tokio_retry::Retry;
    use tokio_retry::strategy::ExponentialBackoff;
    Retry::start(ExponentialBackoff::from_millis(10).take(3), plain).await
}

/// The plain blocking call.
#[inline(never)]
pub fn plain_blocking() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// `#[resilient(retries = 3, idempotent)]` on a plain fn.
#[inline(never)]
#[resilient(retries = 3, idempotent)]
pub fn retries_blocking() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// With a breaker, on a plain fn.
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph")]
pub fn breaker_blocking() -> Result<u64, BenchError> {
    Ok(black_box(1))
}

/// The `retry` crate with 3 retries.
#[inline(never)]
pub fn retry_crate_blocking() -> Result<u64, BenchError> {
    retry::retry(retry::delay::Fixed::from_millis(10).take(3), plain_blocking)
        .map_err(|_| BenchError::Transient)
}

/// Polls a future once with a no-op waker; every benchmarked future is ready at once.
///
/// # Panics
///
/// If the future is not ready at its first poll (a benchmark bug).
#[inline]
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready at once"),
    }
}

/// The async variants, by name, in report order.
pub const ASYNC_VARIANTS: [&str; 9] = [
    "plain",
    "resilient_retries",
    "resilient_breaker",
    "resilient_breaker_timeout",
    "tokio_timeout",
    "tokio_retry",
    "backon",
    "failsafe",
    "backon_failsafe",
];

/// The blocking variants, by name.
pub const BLOCKING_VARIANTS: [&str; 4] = [
    "plain_blocking",
    "resilient_retries_blocking",
    "resilient_breaker_blocking",
    "retry_crate_blocking",
];

/// Runs one call of the named variant; false for an unknown name.
///
/// Must run inside a tokio runtime context (`Runtime::enter`) for the timeout variants.
#[inline(never)]
pub fn run_variant(name: &str, cb: &impl Failsafe) -> bool {
    let r = match name {
        "plain" => ready(plain()),
        "resilient_retries" => ready(retries()),
        "resilient_breaker" => ready(breaker()),
        "resilient_breaker_timeout" => ready(breaker_timeout()),
        "tokio_timeout" => ready(tokio_timeout()),
        "tokio_retry" => ready(tokio_retry()),
        "backon" => ready(backon_retry()),
        "failsafe" => ready(failsafe_call(cb)),
        "backon_failsafe" => ready(backon_failsafe(cb)),
        "plain_blocking" => plain_blocking(),
        "resilient_retries_blocking" => retries_blocking(),
        "resilient_breaker_blocking" => breaker_blocking(),
        "retry_crate_blocking" => retry_crate_blocking(),
        _ => return false,
    };
    black_box(r).is_ok()
}

/// Whether benchmarks should run in their quick, CI-sized mode (`RESILIENCE_BENCH_QUICK=1`).
pub fn quick() -> bool {
    std::env::var_os("RESILIENCE_BENCH_QUICK").is_some_and(|v| v != "0")
}

#[cfg(test)]
mod sizes {
    /// A site without `timeout` or `deadline` arms no timer: its future holds no `Sleep`.
    #[test]
    fn an_untimed_site_holds_no_timer() {
        let untimed = std::mem::size_of_val(&super::breaker());
        let timed = std::mem::size_of_val(&super::breaker_timeout());
        let sleep = std::mem::size_of::<tokio::time::Sleep>();
        // The generator overlaps some state, so the saving is most of a `Sleep`, not all of it.
        assert!(
            untimed + sleep / 2 <= timed,
            "untimed {untimed} B, timed {timed} B, Sleep {sleep} B"
        );
    }

    /// An untimed site's future fits in 128 bytes: moving it (into `ready`, into a task) is then
    /// a few inline vector moves rather than a call to `memcpy` (about 30 instructions a call).
    #[test]
    fn an_untimed_future_fits_in_128_bytes() {
        let retries = std::mem::size_of_val(&super::retries());
        let breaker = std::mem::size_of_val(&super::breaker());
        assert!(
            retries <= 128 && breaker <= 128,
            "retries {retries} B, breaker {breaker} B"
        );
    }
}
