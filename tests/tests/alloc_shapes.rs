//! Zero heap allocations per call, shape by shape: the five shapes of the performance round's
//! benchmark (`benches/src/shapes.rs`), each a connector's `async fn op(&self, id: u64)` under
//! `#[resilient(retries = 3, idempotent, breaker = "...")]`, driven to completion on a
//! current-thread runtime. Every allocation the calling thread makes during 1,000 calls is
//! counted, after calls that resolve the site's state (and the runtime's own first use of its
//! queues), all inside one `block_on`.
//!
//! The retry shape is `#[ignore]`d with its reason: it allocates (`-- --include-ignored` shows
//! how much).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

struct Counting;

thread_local! {
    /// Allocations made by this thread. A `const` cell: reading it allocates nothing.
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one allocation of the current thread (none while the thread is being torn down).
fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations made by the current thread so far.
fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}

// The system allocator, counted. No unsafe beyond forwarding the calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("busy")]
    #[connector(transient)]
    Busy,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

/// The tenants of the keyed shape.
const TENANTS: [&str; 16] = [
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

/// A connector with one operation per shape.
struct Connector {
    /// Attempts of the retry shape; an even count fails.
    attempts: AtomicU64,
}

impl Connector {
    #[resilient(retries = 3, idempotent, breaker = "alloc-ready")]
    async fn ready(&self, id: u64) -> Result<u64, ApiError> {
        Ok(id)
    }

    #[resilient(retries = 3, idempotent, breaker = "alloc-pending")]
    async fn pending(&self, id: u64) -> Result<u64, ApiError> {
        tokio::task::yield_now().await;
        Ok(id)
    }

    #[resilient(
        retries = 3,
        idempotent,
        breaker = "alloc-retry",
        backoff(base = "1ms", max = "1ms"),
        jitter = "none"
    )]
    async fn flaky(&self, id: u64) -> Result<u64, ApiError> {
        if self
            .attempts
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(2)
        {
            return Err(ApiError::Busy);
        }
        Ok(id)
    }

    #[resilient(retries = 3, idempotent, breaker = "alloc-timeout", timeout = "10s")]
    async fn timed(&self, id: u64) -> Result<u64, ApiError> {
        Ok(id)
    }

    #[resilient(retries = 3, idempotent, breaker = "alloc-tenants", breaker_key = tenant)]
    async fn keyed(&self, tenant: &str, id: u64) -> Result<u64, ApiError> {
        Ok(id + tenant.len() as u64)
    }
}

const CALLS: u64 = 1_000;

/// Allocations of the calling thread during `CALLS` calls of `call`, which run after 16 calls
/// that may allocate once (the site's state, each tenant's breaker, the runtime's queues), in
/// the same `block_on`. Every call must return `Ok`.
fn allocations_per_1000_calls(
    paused: bool,
    call: impl AsyncFn(&Connector, u64) -> Result<u64, ApiError>,
) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(paused)
        .build()
        .expect("runtime");
    let connector = Connector {
        attempts: AtomicU64::new(0),
    };
    rt.block_on(async {
        for i in 0..16 {
            call(&connector, i).await.expect("a warm-up call");
        }
        let before = allocations();
        for i in 0..CALLS {
            std::hint::black_box(call(&connector, i).await.expect("a call"));
        }
        allocations() - before
    })
}

#[test]
fn ready_at_once_allocates_nothing() {
    let n = allocations_per_1000_calls(false, async |c, i| c.ready(i).await);
    assert_eq!(n, 0, "{n} allocations in {CALLS} calls");
}

#[test]
fn pending_once_allocates_nothing() {
    let n = allocations_per_1000_calls(false, async |c, i| c.pending(i).await);
    assert_eq!(n, 0, "{n} allocations in {CALLS} calls");
}

#[test]
#[ignore = "allocates 2 per retrying call: the call's cold state, which holds the backoff's wait, and the wait's boxed `Sleep` (`Call::start_wait`). Holding the `Sleep` inline in the attempt's future made this 0, but cost every call about 35 instructions and 40% of its throughput (BENCHMARKS.md section 0b), a trade against the common shape for a path that then waits at least a millisecond"]
fn failing_once_then_succeeding_allocates_nothing() {
    // A success refunds what a retry costs: the budget never runs dry, and every call retries.
    Registry::global()
        .configure_budget("alloc-retry", BudgetConfig::new().with_refund_milli(5_000))
        .expect("a valid budget");
    let n = allocations_per_1000_calls(true, async |c, i| c.flaky(i).await);
    let site = Registry::global().metrics();
    let m = &site.site("flaky").expect("the site was called").metrics;
    assert_eq!(
        (m.retries, m.retry_successes, m.budget_exhausted),
        (CALLS + 16, CALLS + 16, 0),
        "every call retried exactly once"
    );
    assert_eq!(n, 0, "{n} allocations in {CALLS} calls");
}

#[test]
fn a_timeout_on_the_attempt_allocates_nothing() {
    let n = allocations_per_1000_calls(false, async |c, i| c.timed(i).await);
    assert_eq!(n, 0, "{n} allocations in {CALLS} calls");
}

#[test]
fn a_breaker_per_tenant_allocates_nothing() {
    let n = allocations_per_1000_calls(false, async |c, i| {
        c.keyed(TENANTS[(i % 16) as usize], i).await
    });
    assert_eq!(n, 0, "{n} allocations in {CALLS} calls");
}
