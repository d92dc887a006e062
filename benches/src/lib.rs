//! The operations every benchmark measures, side by side: a plain call, the same call under
//! `#[resilient]`, and under each peer crate. Each operation returns `Ok` at once, so what is
//! measured is the wrapper.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::{ConnectorError, Rejected, resilient};

pub mod floor;
pub mod shapes;

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

/// A future that is pending once (waking itself), then ready: an attempt that waits once, as
/// one that does I/O does.
#[derive(Debug, Default)]
pub struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The plain call, pending once.
#[inline(never)]
pub async fn plain_pending() -> Result<u64, BenchError> {
    PendingOnce::default().await;
    Ok(black_box(1))
}

/// With a named breaker, pending once.
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph")]
pub async fn breaker_pending() -> Result<u64, BenchError> {
    PendingOnce::default().await;
    Ok(black_box(1))
}

/// backon's `Retryable` around the pending-once call.
#[inline(never)]
pub async fn backon_pending() -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    plain_pending
        .retry(ExponentialBuilder::default().with_max_times(3))
        .await
}

/// backon around failsafe around the pending-once call.
#[inline(never)]
pub async fn backon_failsafe_pending(cb: &impl Failsafe) -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    (|| async {
        cb.call(plain_pending())
            .await
            .map_err(|_| BenchError::Transient)
    })
    .retry(ExponentialBuilder::default().with_max_times(3))
    .await
}

/// A request, as connectors' operations take one: an id and a path.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// The resource's id.
    pub id: u64,
    /// The resource's path.
    pub path: &'static str,
}

/// The request every `_by_ref` and `_by_value` variant is called with.
pub static REQUEST: Request = Request {
    id: 7,
    path: "/v1.0/users",
};

/// The plain call, taking the request by reference (`&self` and `&Request` are the usual shape
/// of a connector's operation).
#[inline(never)]
pub async fn plain_by_ref(req: &Request) -> Result<u64, BenchError> {
    Ok(black_box(req.id))
}

/// With a named breaker, taking the request by reference.
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph")]
pub async fn breaker_by_ref(req: &Request) -> Result<u64, BenchError> {
    Ok(black_box(req.id))
}

/// backon's `Retryable` with 3 retries, taking the request by reference.
#[inline(never)]
pub async fn backon_by_ref(req: &Request) -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    (|| plain_by_ref(req))
        .retry(ExponentialBuilder::default().with_max_times(3))
        .await
}

/// tokio-retry with 3 retries, taking the request by reference.
#[inline(never)]
pub async fn tokio_retry_by_ref(req: &Request) -> Result<u64, BenchError> {
    use tokio_retry::Retry;
    use tokio_retry::strategy::ExponentialBackoff;
    Retry::start(ExponentialBackoff::from_millis(10).take(3), || {
        plain_by_ref(req)
    })
    .await
}

/// The plain call, taking the request by value (24 bytes, passed through memory).
#[inline(never)]
pub async fn plain_by_value(req: Request) -> Result<u64, BenchError> {
    Ok(black_box(req.id))
}

/// With a named breaker, taking the request by value (cloned for each attempt).
#[inline(never)]
#[resilient(retries = 3, idempotent, breaker = "graph")]
pub async fn breaker_by_value(req: Request) -> Result<u64, BenchError> {
    Ok(black_box(req.id))
}

/// backon's `Retryable` with 3 retries, taking the request by value.
#[inline(never)]
pub async fn backon_by_value(req: Request) -> Result<u64, BenchError> {
    use backon::{ExponentialBuilder, Retryable};
    (|| plain_by_value(req))
        .retry(ExponentialBuilder::default().with_max_times(3))
        .await
}

/// tokio-retry with 3 retries, taking the request by value.
#[inline(never)]
pub async fn tokio_retry_by_value(req: Request) -> Result<u64, BenchError> {
    use tokio_retry::Retry;
    use tokio_retry::strategy::ExponentialBackoff;
    Retry::start(ExponentialBackoff::from_millis(10).take(3), || {
        plain_by_value(req)
    })
    .await
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

/// failsafe's default breaker, as [`failsafe_breaker`] builds it.
pub type FailsafeBreaker = failsafe::StateMachine<
    failsafe::failure_policy::OrElse<
        failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
        failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
    >,
    (),
>;

/// The breaker the failsafe variants share.
static FAILSAFE: std::sync::LazyLock<FailsafeBreaker> =
    std::sync::LazyLock::new(|| failsafe::Config::new().build());

/// One call of a variant: polls its future once (or calls its fn) and reports whether it
/// returned `Ok`. Each variant is its own monomorphic fn, called through this pointer: every row
/// pays the same indirect call, and nothing dispatches on a name inside a measured loop.
pub type Run = fn() -> bool;

macro_rules! runs {
    ($($name:ident => $call:expr;)*) => {
        $(
            #[inline(never)]
            fn $name() -> bool {
                black_box($call).is_ok()
            }
        )*
    };
}

runs! {
    run_plain => ready(plain());
    run_retries => ready(retries());
    run_breaker => ready(breaker());
    run_breaker_timeout => ready(breaker_timeout());
    run_floor => ready(floor::floor());
    run_fewest => ready(floor::fewest::fewest());
    run_plain_by_ref => ready(plain_by_ref(black_box(&REQUEST)));
    run_breaker_by_ref => ready(breaker_by_ref(black_box(&REQUEST)));
    run_backon_by_ref => ready(backon_by_ref(black_box(&REQUEST)));
    run_tokio_retry_by_ref => ready(tokio_retry_by_ref(black_box(&REQUEST)));
    run_plain_by_value => ready(plain_by_value(black_box(REQUEST)));
    run_breaker_by_value => ready(breaker_by_value(black_box(REQUEST)));
    run_backon_by_value => ready(backon_by_value(black_box(REQUEST)));
    run_tokio_retry_by_value => ready(tokio_retry_by_value(black_box(REQUEST)));
    run_tokio_timeout => ready(tokio_timeout());
    run_tokio_retry => ready(tokio_retry());
    run_backon => ready(backon_retry());
    run_failsafe => ready(failsafe_call(&*FAILSAFE));
    run_backon_failsafe => ready(backon_failsafe(&*FAILSAFE));
    run_plain_pending => until_ready(plain_pending());
    run_breaker_pending => until_ready(breaker_pending());
    run_backon_pending => until_ready(backon_pending());
    run_backon_failsafe_pending => until_ready(backon_failsafe_pending(&*FAILSAFE));
    run_plain_blocking => plain_blocking();
    run_retries_blocking => retries_blocking();
    run_breaker_blocking => breaker_blocking();
    run_retry_crate_blocking => retry_crate_blocking();
}

/// Polls a future with a no-op waker until it is ready (the pending-once variants).
#[inline]
pub fn until_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The async variants, by name, in report order.
pub const ASYNC_VARIANTS: [(&str, Run); 15] = [
    ("plain", run_plain),
    ("resilient_retries", run_retries),
    ("resilient_breaker", run_breaker),
    ("resilient_breaker_timeout", run_breaker_timeout),
    ("floor_hand_written", run_floor),
    ("floor_fewest_checks", run_fewest),
    ("tokio_timeout", run_tokio_timeout),
    ("tokio_retry", run_tokio_retry),
    ("backon", run_backon),
    ("failsafe", run_failsafe),
    ("backon_failsafe", run_backon_failsafe),
    ("plain_pending_once", run_plain_pending),
    ("resilient_breaker_pending_once", run_breaker_pending),
    ("backon_pending_once", run_backon_pending),
    ("backon_failsafe_pending_once", run_backon_failsafe_pending),
];

/// The async variants that take a request by reference, by name; the first is their plain
/// call.
pub const BY_REF_VARIANTS: [(&str, Run); 4] = [
    ("plain_by_ref", run_plain_by_ref),
    ("resilient_breaker_by_ref", run_breaker_by_ref),
    ("backon_by_ref", run_backon_by_ref),
    ("tokio_retry_by_ref", run_tokio_retry_by_ref),
];

/// The async variants that take a request by value, by name; the first is their plain call.
pub const BY_VALUE_VARIANTS: [(&str, Run); 4] = [
    ("plain_by_value", run_plain_by_value),
    ("resilient_breaker_by_value", run_breaker_by_value),
    ("backon_by_value", run_backon_by_value),
    ("tokio_retry_by_value", run_tokio_retry_by_value),
];

/// The blocking variants, by name.
pub const BLOCKING_VARIANTS: [(&str, Run); 4] = [
    ("plain_blocking", run_plain_blocking),
    ("resilient_retries_blocking", run_retries_blocking),
    ("resilient_breaker_blocking", run_breaker_blocking),
    ("retry_crate_blocking", run_retry_crate_blocking),
];

/// Every group of variants, in report order; each group's first variant is the plain call its
/// ratios are taken to.
pub const GROUPS: [&[(&str, Run)]; 4] = [
    &ASYNC_VARIANTS,
    &BY_REF_VARIANTS,
    &BY_VALUE_VARIANTS,
    &BLOCKING_VARIANTS,
];

/// The variant named `name`.
///
/// Its calls must run inside a tokio runtime context (`Runtime::enter`) for the timeout
/// variants.
pub fn variant(name: &str) -> Option<Run> {
    GROUPS
        .iter()
        .flat_map(|g| g.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, run)| *run)
}

/// Times two sides in `rounds` alternating rounds, `a` first in even rounds and `b` first in odd
/// ones, and returns each round's `(a, b)`: a slow spell of this shared machine then slows both
/// sides of a round alike, and neither side always finds the caches the other left.
pub fn alternate(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> Vec<(f64, f64)> {
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let x = a();
                (x, b())
            } else {
                let y = b();
                (a(), y)
            }
        })
        .collect()
}

/// The lower quartile, median and upper quartile of `v` (sorted in place).
pub fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: usize| v.get(v.len() * q / 4).copied().unwrap_or(f64::NAN);
    (at(1), at(2), at(3))
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

#[cfg(test)]
mod floors {
    /// The first call of each floor builds its state, the second takes its fast path; both
    /// return the operation's value.
    #[test]
    fn the_floors_return_the_operations_value() {
        for _ in 0..2 {
            assert_eq!(super::ready(super::floor::floor()).ok(), Some(1));
            assert_eq!(super::ready(super::floor::fewest::fewest()).ok(), Some(1));
        }
    }
}

#[cfg(test)]
mod alternation {
    use std::cell::RefCell;

    /// `a` goes first in even rounds and `b` in odd ones; each round's pair is `(a, b)`.
    #[test]
    fn the_side_that_goes_first_alternates_and_pairs_keep_their_order() {
        let order = RefCell::new(Vec::new());
        let pairs = super::alternate(
            3,
            || {
                order.borrow_mut().push('a');
                1.0
            },
            || {
                order.borrow_mut().push('b');
                2.0
            },
        );
        assert_eq!(order.into_inner(), ['a', 'b', 'b', 'a', 'a', 'b']);
        assert_eq!(pairs, [(1.0, 2.0); 3]);
        let mut v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(super::quartiles(&mut v), (2.0, 3.0, 4.0));
    }
}
