//! The five shapes of a connector's call, each driven to completion on a current-thread runtime,
//! side by side with the peers: the operation is `async fn op(&self, id: u64) -> Result<u64,
//! BenchError>` on a connector struct (with a tenant's name too in the keyed shape).
//!
//! 1. **ready**: the attempt is ready at once;
//! 2. **pending**: the attempt awaits [`tokio::task::yield_now`] once, so the call returns to the
//!    runtime, which wakes it and polls it again (a runtime without a time driver: see
//!    [`Clock::Off`]);
//! 3. **retry**: the attempt fails once, then succeeds after a 1 ms backoff, on a paused clock
//!    (the runtime advances time when it has nothing else to do);
//! 4. **timeout**: a 10 s timeout on the attempt, which is ready at once;
//! 5. **tenants**: a breaker per tenant, the calls cycling through 16 tenants' names.
//!
//! Every variant is its own monomorphic fn ([`Loop`]) that runs `n` calls in one `block_on`, so
//! a pending call really goes back to the runtime and is woken by it. Each shape's first variant
//! is its baseline: the plain call doing the same, except in the retry shape (a hand-written
//! retry loop with the same 1 ms sleep) and the timeout shape (tokio's own `timeout` around the
//! plain call).
//!
//! Each wrapper, ours and every peer, is the body of one of the connector's own
//! `#[inline(never)]` async fns, as a connector exposes its operations: its future is built out
//! of line and moved into its caller's (ours, 144 bytes in the ready shape, is moved by two
//! calls to `memcpy`: returned, then into the `.await`). tower-resilience's stack is kept by
//! the connector and cloned for each call, since a tower service is called through `&mut` and
//! an operation takes `&self`.
//!
//! Every wrapper makes 3 retries. The peers wait a constant 1 ms between attempts, without
//! jitter; ours has its default backoff except in the retry shape, where it is
//! `backoff(base = "1ms", max = "1ms"), jitter = "none"`. The peers' breakers open after 5
//! consecutive failures, as ours does by default (failsafe's default policy also opens on a
//! success rate under 80% over 30 s of wall-clock time, which the retry shape's alternating
//! failures would trip). Ours keeps its default retry budget, except at the retry shape's site,
//! where a success refunds what a retry costs (see [`configure`]).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use failsafe::futures::CircuitBreaker as _;
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::{Registry, resilient};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};
use tower_resilience::retry::RetryLayer;

use crate::BenchError;

/// Runs `n` calls of one variant to completion on the runtime and returns how many returned
/// `Ok` (every one, unless the variant is broken).
pub type Loop = fn(&Runtime, u64) -> u64;

/// The peers' wait between attempts.
const BACKOFF: Duration = Duration::from_millis(1);

/// The retry shape's breaker; its retry budget has the same name.
pub const RETRY_BREAKER: &str = "shape-retry";

/// The tenants of the keyed shape.
pub const TENANTS: [&str; 16] = [
    "contoso",
    "fabrikam",
    "northwind",
    "adventure-works",
    "litware",
    "proseware",
    "tailspin",
    "wingtip",
    "woodgrove",
    "coho",
    "alpine",
    "blue-yonder",
    "fourth-coffee",
    "lucerne",
    "margies",
    "wide-world",
];

/// Settings a shape needs before its first call: the retry shape's budget, which a success
/// refills by what a retry costs (5 tokens), so that a call failing once per success never
/// drains it. With the default refund (1 token), the budget of a site whose every call is
/// retried once runs dry after about 25 calls, and from then on no call is retried.
pub fn configure() {
    let budget = BudgetConfig::new().with_refund_milli(5_000);
    Registry::global()
        .configure_budget(RETRY_BREAKER, budget)
        .expect("a valid budget");
}

/// Runs `n` calls of `call`, each awaited to completion, inside one `block_on`.
#[inline(always)]
fn drive(rt: &Runtime, n: u64, mut call: impl AsyncFnMut(u64) -> Result<u64, BenchError>) -> u64 {
    rt.block_on(async move {
        let mut ok = 0;
        for i in 0..n {
            ok += u64::from(black_box(call(black_box(i)).await).is_ok());
        }
        ok
    })
}

/// The peers' 3 retries with a constant 1 ms wait, for backon.
fn backon() -> ConstantBuilder {
    ConstantBuilder::new().with_delay(BACKOFF).with_max_times(3)
}

/// The peers' 3 retries with a constant 1 ms wait, for tokio-retry.
fn tokio_retry() -> std::iter::Take<tokio_retry::strategy::FixedInterval> {
    tokio_retry::strategy::FixedInterval::new(BACKOFF).take(3)
}

/// failsafe's breaker, opening after 5 consecutive failures.
pub type Failsafe = failsafe::StateMachine<
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
    (),
>;

/// A failsafe breaker that opens after 5 consecutive failures, for 30 s.
pub fn failsafe() -> Failsafe {
    let policy = failsafe::failure_policy::consecutive_failures(
        5,
        failsafe::backoff::constant(Duration::from_secs(30)),
    );
    failsafe::Config::new().failure_policy(policy).build()
}

/// One attempt through a failsafe breaker.
#[inline(always)]
async fn through(
    cb: &Failsafe,
    attempt: impl Future<Output = Result<u64, BenchError>>,
) -> Result<u64, BenchError> {
    cb.call(attempt).await.map_err(|e| match e {
        failsafe::Error::Inner(e) => e,
        failsafe::Error::Rejected => BenchError::Transient,
    })
}

/// tower-resilience's retry (4 attempts, a fixed 1 ms wait) around its circuit breaker (5
/// consecutive failures) around `inner`.
fn tower_stack<S>(
    inner: S,
) -> impl Service<u64, Response = u64, Error = CircuitBreakerError<BenchError>> + Clone
where
    S: Service<u64, Response = u64, Error = BenchError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .build()
        .expect("a valid breaker");
    let retry = RetryLayer::<u64, u64, CircuitBreakerError<BenchError>>::builder()
        .max_attempts(4)
        .fixed_backoff(BACKOFF)
        .build();
    tower::ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .service(inner)
}

/// tokio's own `timeout` of 10 s around an attempt.
#[inline(always)]
async fn timed(attempt: impl Future<Output = Result<u64, BenchError>>) -> Result<u64, BenchError> {
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Transient),
    }
}

/// The peers as a connector's operations: each wraps the connector's plain call (`$attempt`,
/// with the connector as `$c`) in a `#[inline(never)]` async fn, as `#[resilient]` does, so each
/// is called, and its future moved into its caller's, as a connector's operation is. A breaker
/// that a connector would keep in a field is passed in.
macro_rules! peers {
    ($ty:ty, $c:ident, $id:ident => $attempt:expr) => {
        impl $ty {
            /// tokio-retry around the plain call.
            #[inline(never)]
            pub async fn tokio_retry(&self, $id: u64) -> Result<u64, BenchError> {
                let $c = self;
                tokio_retry::Retry::start(tokio_retry(), || $attempt).await
            }

            /// backon around the plain call.
            #[inline(never)]
            pub async fn backon(&self, $id: u64) -> Result<u64, BenchError> {
                let $c = self;
                (|| $attempt).retry(backon()).await
            }

            /// backon around failsafe's breaker around the plain call.
            #[inline(never)]
            pub async fn backon_failsafe(
                &self,
                breaker: &Failsafe,
                $id: u64,
            ) -> Result<u64, BenchError> {
                let $c = self;
                (|| through(breaker, $attempt)).retry(backon()).await
            }
        }
    };
}

/// tower-resilience's stack as a connector's operation: a connector keeps the stack and clones
/// it for each call (a tower service is called through `&mut`, and a connector's operation
/// takes `&self`).
#[inline(never)]
pub async fn tower_resilience<S>(stack: &S, id: u64) -> Result<u64, BenchError>
where
    S: Service<u64, Response = u64, Error = CircuitBreakerError<BenchError>> + Clone,
{
    let mut svc = stack.clone();
    match svc.ready().await {
        Ok(svc) => svc.call(id).await.map_err(|_| BenchError::Transient),
        Err(_) => Err(BenchError::Transient),
    }
}

/// Shape 1: the operation is ready at once.
#[derive(Debug)]
pub struct Ready;

impl Ready {
    /// The plain call.
    #[inline(never)]
    pub async fn plain(&self, id: u64) -> Result<u64, BenchError> {
        Ok(black_box(id))
    }

    /// The same under `#[resilient]`.
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "shape-ready")]
    pub async fn op(&self, id: u64) -> Result<u64, BenchError> {
        Ok(black_box(id))
    }
}

peers!(Ready, c, id => c.plain(id));

/// Shape 2: the operation waits once (it yields to the runtime, which wakes it at once).
#[derive(Debug)]
pub struct Pending;

impl Pending {
    /// The plain call.
    #[inline(never)]
    pub async fn plain(&self, id: u64) -> Result<u64, BenchError> {
        tokio::task::yield_now().await;
        Ok(black_box(id))
    }

    /// The same under `#[resilient]`.
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "shape-pending")]
    pub async fn op(&self, id: u64) -> Result<u64, BenchError> {
        tokio::task::yield_now().await;
        Ok(black_box(id))
    }
}

peers!(Pending, c, id => c.plain(id));

/// Shape 3: every other attempt fails, starting with the first, so every call fails once and
/// succeeds at its first retry. The attempts are counted: each variant checks that it made two
/// per call.
#[derive(Debug)]
pub struct Flaky {
    attempts: AtomicU64,
}

impl Flaky {
    /// A connector whose next attempt fails.
    pub const fn new() -> Self {
        Flaky {
            attempts: AtomicU64::new(0),
        }
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Counts the attempt; whether it fails. (A load and a store, not a read-modify-write: one
    /// thread makes the calls.)
    #[inline(always)]
    fn fails(&self) -> bool {
        let n = self.attempts.load(Ordering::Relaxed);
        self.attempts.store(n + 1, Ordering::Relaxed);
        n.is_multiple_of(2)
    }

    /// The plain call.
    #[inline(never)]
    pub async fn plain(&self, id: u64) -> Result<u64, BenchError> {
        if self.fails() {
            return Err(BenchError::Transient);
        }
        Ok(black_box(id))
    }

    /// The same under `#[resilient]`, waiting 1 ms before its retry.
    #[inline(never)]
    #[resilient(
        retries = 3,
        idempotent,
        breaker = "shape-retry",
        backoff(base = "1ms", max = "1ms"),
        jitter = "none"
    )]
    pub async fn op(&self, id: u64) -> Result<u64, BenchError> {
        if self.fails() {
            return Err(BenchError::Transient);
        }
        Ok(black_box(id))
    }

    /// The baseline: a hand-written loop of 3 retries, sleeping 1 ms before each.
    #[inline(never)]
    pub async fn hand_written(&self, id: u64) -> Result<u64, BenchError> {
        let mut retries = 0;
        loop {
            match self.plain(id).await {
                Err(_) if retries < 3 => {
                    retries += 1;
                    tokio::time::sleep(BACKOFF).await;
                }
                r => return r,
            }
        }
    }
}

impl Default for Flaky {
    fn default() -> Self {
        Flaky::new()
    }
}

peers!(Flaky, c, id => c.plain(id));

/// Shape 4: the operation is ready at once, under a 10 s timeout.
#[derive(Debug)]
pub struct Timed;

impl Timed {
    /// The plain call.
    #[inline(never)]
    pub async fn plain(&self, id: u64) -> Result<u64, BenchError> {
        Ok(black_box(id))
    }

    /// The baseline: tokio's own `timeout` around the plain call.
    #[inline(never)]
    pub async fn tokio_timeout(&self, id: u64) -> Result<u64, BenchError> {
        timed(self.plain(id)).await
    }

    /// The same under `#[resilient]` with a timeout on the attempt.
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "shape-timeout", timeout = "10s")]
    pub async fn op(&self, id: u64) -> Result<u64, BenchError> {
        Ok(black_box(id))
    }
}

peers!(Timed, c, id => timed(c.plain(id)));

/// Shape 5: the operation is ready at once and names its tenant.
#[derive(Debug)]
pub struct Tenants;

impl Tenants {
    /// The plain call.
    #[inline(never)]
    pub async fn plain(&self, tenant: &str, id: u64) -> Result<u64, BenchError> {
        black_box(tenant);
        Ok(black_box(id))
    }

    /// The same under `#[resilient]`, one breaker per tenant.
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "shape-tenants", breaker_key = tenant)]
    pub async fn op(&self, tenant: &str, id: u64) -> Result<u64, BenchError> {
        black_box(tenant);
        Ok(black_box(id))
    }

    /// The same under `#[resilient]` with one breaker for all: the keyed site's yardstick.
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "shape-one-tenant")]
    pub async fn unkeyed(&self, tenant: &str, id: u64) -> Result<u64, BenchError> {
        black_box(tenant);
        Ok(black_box(id))
    }

    /// backon around the tenant's failsafe breaker, found in a `HashMap<String, _>`.
    #[inline(never)]
    pub async fn backon_failsafe(
        &self,
        breakers: &HashMap<String, Failsafe>,
        tenant: &str,
        id: u64,
    ) -> Result<u64, BenchError> {
        let Some(breaker) = breakers.get(tenant) else {
            return Err(BenchError::Transient);
        };
        (|| through(breaker, self.plain(tenant, id)))
            .retry(backon())
            .await
    }
}

/// tower-resilience's stack of the tenant, found in a `HashMap<String, _>`.
#[inline(never)]
pub async fn tower_resilience_keyed<S>(
    stacks: &HashMap<String, S>,
    tenant: &str,
    id: u64,
) -> Result<u64, BenchError>
where
    S: Service<u64, Response = u64, Error = CircuitBreakerError<BenchError>> + Clone,
{
    match stacks.get(tenant) {
        Some(stack) => tower_resilience(stack, id).await,
        None => Err(BenchError::Transient),
    }
}

/// The tenant of call `i`.
#[inline(always)]
fn tenant(i: u64) -> &'static str {
    TENANTS[(i % 16) as usize]
}

static FLAKY_PLAIN: Flaky = Flaky::new();
static FLAKY_OURS: Flaky = Flaky::new();
static FLAKY_TOKIO_RETRY: Flaky = Flaky::new();
static FLAKY_BACKON: Flaky = Flaky::new();
static FLAKY_BACKON_FAILSAFE: Flaky = Flaky::new();
static FLAKY_TOWER: Flaky = Flaky::new();

/// Runs a retry-shape variant and checks that each of its calls made exactly two attempts: the
/// first failed, the second succeeded.
#[inline(always)]
fn twice(flaky: &Flaky, rt: &Runtime, n: u64, run: impl FnOnce(&Runtime, u64) -> u64) -> u64 {
    let before = flaky.attempts();
    let ok = run(rt, n);
    let attempts = flaky.attempts() - before;
    assert_eq!(
        attempts,
        2 * n,
        "{n} calls made {attempts} attempts, not one retry each"
    );
    ok
}

macro_rules! loops {
    ($($(#[$doc:meta])* $name:ident($rt:ident, $n:ident) $body:block)*) => {
        $(
            $(#[$doc])*
            #[inline(never)]
            fn $name($rt: &Runtime, $n: u64) -> u64 $body
        )*
    };
}

loops! {
    ready_plain(rt, n) { drive(rt, n, async |i| Ready.plain(i).await) }
    ready_ours(rt, n) { drive(rt, n, async |i| Ready.op(i).await) }
    ready_tokio_retry(rt, n) { drive(rt, n, async |i| Ready.tokio_retry(i).await) }
    ready_backon(rt, n) { drive(rt, n, async |i| Ready.backon(i).await) }
    ready_backon_failsafe(rt, n) {
        let cb = failsafe();
        drive(rt, n, async |i| Ready.backon_failsafe(&cb, i).await)
    }
    ready_tower(rt, n) {
        let stack = tower_stack(tower::service_fn(|id| Ready.plain(id)));
        drive(rt, n, async |i| tower_resilience(&stack, i).await)
    }

    pending_plain(rt, n) { drive(rt, n, async |i| Pending.plain(i).await) }
    pending_ours(rt, n) { drive(rt, n, async |i| Pending.op(i).await) }
    pending_tokio_retry(rt, n) { drive(rt, n, async |i| Pending.tokio_retry(i).await) }
    pending_backon(rt, n) { drive(rt, n, async |i| Pending.backon(i).await) }
    pending_backon_failsafe(rt, n) {
        let cb = failsafe();
        drive(rt, n, async |i| Pending.backon_failsafe(&cb, i).await)
    }
    pending_tower(rt, n) {
        let stack = tower_stack(tower::service_fn(|id| Pending.plain(id)));
        drive(rt, n, async |i| tower_resilience(&stack, i).await)
    }

    retry_hand_written(rt, n) {
        let c = &FLAKY_PLAIN;
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| c.hand_written(i).await))
    }
    retry_ours(rt, n) {
        let c = &FLAKY_OURS;
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| c.op(i).await))
    }
    retry_tokio_retry(rt, n) {
        let c = &FLAKY_TOKIO_RETRY;
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| c.tokio_retry(i).await))
    }
    retry_backon(rt, n) {
        let c = &FLAKY_BACKON;
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| c.backon(i).await))
    }
    retry_backon_failsafe(rt, n) {
        let c = &FLAKY_BACKON_FAILSAFE;
        let cb = failsafe();
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| c.backon_failsafe(&cb, i).await))
    }
    retry_tower(rt, n) {
        let c = &FLAKY_TOWER;
        let stack = tower_stack(tower::service_fn(|id| c.plain(id)));
        twice(c, rt, n, |rt, n| drive(rt, n, async |i| tower_resilience(&stack, i).await))
    }

    timeout_tokio(rt, n) { drive(rt, n, async |i| Timed.tokio_timeout(i).await) }
    timeout_ours(rt, n) { drive(rt, n, async |i| Timed.op(i).await) }
    timeout_tokio_retry(rt, n) { drive(rt, n, async |i| Timed.tokio_retry(i).await) }
    timeout_backon(rt, n) { drive(rt, n, async |i| Timed.backon(i).await) }
    timeout_backon_failsafe(rt, n) {
        let cb = failsafe();
        drive(rt, n, async |i| Timed.backon_failsafe(&cb, i).await)
    }
    timeout_tower(rt, n) {
        let stack = tower_stack(tower::service_fn(|id| timed(Timed.plain(id))));
        drive(rt, n, async |i| tower_resilience(&stack, i).await)
    }

    tenants_plain(rt, n) { drive(rt, n, async |i| Tenants.plain(tenant(i), i).await) }
    tenants_ours(rt, n) { drive(rt, n, async |i| Tenants.op(tenant(i), i).await) }
    tenants_ours_unkeyed(rt, n) { drive(rt, n, async |i| Tenants.unkeyed(tenant(i), i).await) }
    tenants_backon_failsafe(rt, n) {
        let breakers: HashMap<String, Failsafe> =
            TENANTS.iter().map(|t| ((*t).to_owned(), failsafe())).collect();
        drive(rt, n, async |i| Tenants.backon_failsafe(&breakers, tenant(i), i).await)
    }
    tenants_tower(rt, n) {
        let stacks: HashMap<String, _> = TENANTS
            .iter()
            .map(|&t| {
                let stack = tower_stack(tower::service_fn(move |id| Tenants.plain(t, id)));
                (t.to_owned(), stack)
            })
            .collect();
        drive(rt, n, async |i| tower_resilience_keyed(&stacks, tenant(i), i).await)
    }
}

/// Who makes the call resilient: the table's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// The shape's baseline: the plain call doing the same.
    Baseline,
    /// `#[resilient]`.
    Ours,
    /// `#[resilient]` with one breaker for all tenants (the keyed shape's yardstick).
    OursUnkeyed,
    /// tokio-retry (retries only).
    TokioRetry,
    /// backon (retries only).
    Backon,
    /// backon around failsafe's breaker (per tenant: a `HashMap<String, _>` of breakers).
    BackonFailsafe,
    /// tower-resilience's retry around its circuit breaker (per tenant: a `HashMap` of stacks).
    TowerResilience,
}

impl Who {
    /// Every column, in report order.
    pub const ALL: [Who; 7] = [
        Who::Baseline,
        Who::Ours,
        Who::OursUnkeyed,
        Who::TokioRetry,
        Who::Backon,
        Who::BackonFailsafe,
        Who::TowerResilience,
    ];

    /// The column's name.
    pub const fn name(self) -> &'static str {
        match self {
            Who::Baseline => "baseline",
            Who::Ours => "ours",
            Who::OursUnkeyed => "ours_unkeyed",
            Who::TokioRetry => "tokio_retry",
            Who::Backon => "backon",
            Who::BackonFailsafe => "backon_failsafe",
            Who::TowerResilience => "tower_resilience",
        }
    }
}

/// A shape's time driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// None: nothing in the shape sleeps. (With a time driver, the runtime's every park reads
    /// the clock and turns its wheel, and the pending shape's count moved by a few instructions
    /// a call between runs.)
    Off,
    /// The time driver, on the real clock.
    Running,
    /// The time driver on a paused clock, which the runtime advances when it has nothing else
    /// to do: the retry shape's backoff is virtual.
    Paused,
}

/// One shape: its variants, baseline first.
#[derive(Debug)]
pub struct Shape {
    /// The shape's name.
    pub name: &'static str,
    /// What its baseline is.
    pub baseline: &'static str,
    /// Its runtime's time driver.
    pub clock: Clock,
    /// Its variants.
    pub variants: &'static [(Who, Loop)],
}

impl Shape {
    /// The variant of `who`, if the shape has one.
    pub fn variant(&self, who: Who) -> Option<Loop> {
        self.variants
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, run)| *run)
    }

    /// A runtime for the shape: current-thread, with the shape's time driver.
    pub fn runtime(&self) -> Runtime {
        let mut b = tokio::runtime::Builder::new_current_thread();
        match self.clock {
            Clock::Off => &mut b,
            Clock::Running => b.enable_time(),
            Clock::Paused => b.enable_time().start_paused(true),
        }
        .build()
        .expect("runtime")
    }
}

/// The five shapes, in report order.
pub const SHAPES: [Shape; 5] = [
    Shape {
        name: "ready",
        baseline: "plain call",
        clock: Clock::Running,
        variants: &[
            (Who::Baseline, ready_plain),
            (Who::Ours, ready_ours),
            (Who::TokioRetry, ready_tokio_retry),
            (Who::Backon, ready_backon),
            (Who::BackonFailsafe, ready_backon_failsafe),
            (Who::TowerResilience, ready_tower),
        ],
    },
    Shape {
        name: "pending",
        baseline: "plain call, pending once",
        clock: Clock::Off,
        variants: &[
            (Who::Baseline, pending_plain),
            (Who::Ours, pending_ours),
            (Who::TokioRetry, pending_tokio_retry),
            (Who::Backon, pending_backon),
            (Who::BackonFailsafe, pending_backon_failsafe),
            (Who::TowerResilience, pending_tower),
        ],
    },
    Shape {
        name: "retry",
        baseline: "hand-written retry loop",
        clock: Clock::Paused,
        variants: &[
            (Who::Baseline, retry_hand_written),
            (Who::Ours, retry_ours),
            (Who::TokioRetry, retry_tokio_retry),
            (Who::Backon, retry_backon),
            (Who::BackonFailsafe, retry_backon_failsafe),
            (Who::TowerResilience, retry_tower),
        ],
    },
    Shape {
        name: "timeout",
        baseline: "tokio `timeout` around the plain call",
        clock: Clock::Running,
        variants: &[
            (Who::Baseline, timeout_tokio),
            (Who::Ours, timeout_ours),
            (Who::TokioRetry, timeout_tokio_retry),
            (Who::Backon, timeout_backon),
            (Who::BackonFailsafe, timeout_backon_failsafe),
            (Who::TowerResilience, timeout_tower),
        ],
    },
    Shape {
        name: "tenants",
        baseline: "plain call with a tenant",
        clock: Clock::Running,
        variants: &[
            (Who::Baseline, tenants_plain),
            (Who::Ours, tenants_ours),
            (Who::OursUnkeyed, tenants_ours_unkeyed),
            (Who::BackonFailsafe, tenants_backon_failsafe),
            (Who::TowerResilience, tenants_tower),
        ],
    },
];

/// The shape named `name`.
pub fn shape(name: &str) -> Option<&'static Shape> {
    SHAPES.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::{SHAPES, configure};

    /// Every variant of every shape completes its calls with `Ok` (the retry shape's also check
    /// that each call was retried exactly once), twice over: the site's first calls, then the
    /// ones after.
    #[test]
    fn every_variant_returns_ok_from_every_call() {
        configure();
        for shape in &SHAPES {
            let rt = shape.runtime();
            for &(who, run) in shape.variants {
                for n in [1, 200] {
                    assert_eq!(run(&rt, n), n, "{} {}", shape.name, who.name());
                }
            }
        }
    }
}
