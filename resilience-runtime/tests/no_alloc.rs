//! The calls connectors make allocate nothing: proved by counting every allocation the calling
//! thread makes while the calls run, for the code `#[resilient]` generates and for hand-written
//! calls through `execute`. (Counted per thread: the test harness's own thread may allocate
//! meanwhile, on a loaded machine.)
//!
//! The shapes: ready at once (with retries, a breaker, a timeout; async and blocking); an
//! attempt that is pending once; an attempt that fails once and succeeds on its retry after a
//! backoff (on a paused clock); a per-key breaker over 16 tenants.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::time::Duration;

use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Rejected, resilient};

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

#[derive(Debug)]
enum E {
    Busy,
    Rejected(Rejected),
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

impl CarriesRejected for E {
    fn from_rejected(r: Rejected) -> Self {
        E::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            E::Rejected(r) => Some(r),
            E::Busy => None,
        }
    }
}

static RETRIES: Site = Site::new(
    &Policy::new("retries", module_path!())
        .with_retries(3)
        .idempotent(),
);
static BREAKER: Site = Site::new(
    &Policy::new("breaker", module_path!())
        .with_retries(3)
        .idempotent()
        .with_breaker("graph"),
);
static TIMEOUT: Site = Site::new(
    &Policy::new("timeout", module_path!())
        .with_retries(3)
        .idempotent()
        .with_breaker("graph")
        .with_timeout(Duration::from_secs(10)),
);

async fn allocations_per_1000_calls(site: &'static Site) -> u64 {
    let call = || {
        execute(
            site,
            Hooks::new().with_from_rejected(E::from_rejected),
            || async { Ok::<u32, E>(1) },
        )
    };
    // The first call resolves and caches the site's state: that may allocate, once.
    call().await.unwrap();
    let before = allocations();
    for _ in 0..1000 {
        std::hint::black_box(call().await.unwrap());
    }
    allocations() - before
}

#[resilient(retries = 3, idempotent)]
async fn gen_retries() -> Result<u32, E> {
    Ok(1)
}

#[resilient(retries = 3, idempotent, breaker = "graph")]
async fn gen_breaker() -> Result<u32, E> {
    Ok(1)
}

#[resilient(retries = 3, idempotent, breaker = "graph", timeout = "10s")]
async fn gen_timeout() -> Result<u32, E> {
    Ok(1)
}

#[resilient(retries = 3, idempotent, breaker = "graph")]
fn gen_blocking() -> Result<u32, E> {
    Ok(1)
}

/// Allocations made by 1,000 calls of `call`, after one call that may resolve the site's state.
async fn allocations_per_1000<F: Future<Output = Result<u32, E>>>(call: impl Fn() -> F) -> u64 {
    call().await.unwrap();
    let before = allocations();
    for _ in 0..1000 {
        std::hint::black_box(call().await.unwrap());
    }
    allocations() - before
}

/// One test, so that no other test thread allocates while the calls are counted.
#[test]
fn the_calls_connectors_make_allocate_nothing() {
    generated_calls_allocate_nothing();
    hand_written_calls_allocate_nothing();
    calls_that_wait_or_retry_allocate_nothing();
}

/// Pending once, then ready (it wakes itself, as an I/O future would when its data came).
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[resilient(retries = 3, idempotent, breaker = "graph")]
async fn gen_pending_once(id: u64) -> Result<u64, E> {
    PendingOnce(false).await;
    Ok(id)
}

thread_local! {
    static FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[resilient(
    retries = 3,
    idempotent,
    breaker = "alloc_retry",
    backoff(base = "1ms", max = "1ms"),
    jitter = "full"
)]
async fn gen_fails_once(id: u64) -> Result<u64, E> {
    if !FAILED.replace(true) {
        return Err(E::Busy);
    }
    FAILED.set(false);
    Ok(id)
}

#[resilient(retries = 3, idempotent, breaker = "alloc_tenants", breaker_key = tenant)]
async fn gen_keyed(tenant: &str, id: u64) -> Result<u64, E> {
    let _ = tenant;
    Ok(id)
}

const TENANTS: [&str; 16] = [
    "t00", "t01", "t02", "t03", "t04", "t05", "t06", "t07", "t08", "t09", "t10", "t11", "t12",
    "t13", "t14", "t15",
];

fn calls_that_wait_or_retry_allocate_nothing() {
    use resilience_runtime::Registry;
    use resilience_runtime::budget::BudgetConfig;
    // Every call here retries once: a budget that never runs out, so that every one does.
    Registry::global()
        .configure_budget("alloc_retry", BudgetConfig::unlimited())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let n = allocations_per_1000(|| async { gen_pending_once(7).await.map(|v| v as u32) });
        assert_eq!(n.await, 0, "pending once");
        let n = allocations_per_1000(|| async { gen_fails_once(7).await.map(|v| v as u32) });
        assert_eq!(n.await, 0, "fails once, then succeeds");
        let m = Registry::global().metrics();
        let s = &m.site("gen_fails_once").unwrap().metrics;
        assert_eq!((s.ok, s.retries), (1001, 1001), "every call retried once");
        // Every tenant's breaker made (and its key's text stored) once, before the count.
        for t in TENANTS {
            gen_keyed(t, 1).await.unwrap();
        }
        let before = allocations();
        for i in 0..1000 {
            std::hint::black_box(gen_keyed(TENANTS[i % 16], 1).await.unwrap());
        }
        assert_eq!(allocations() - before, 0, "keyed over 16 tenants");
    });
}

fn generated_calls_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(allocations_per_1000(gen_retries).await, 0, "retries");
        assert_eq!(allocations_per_1000(gen_breaker).await, 0, "breaker");
        assert_eq!(allocations_per_1000(gen_timeout).await, 0, "timeout");
    });
    gen_blocking().unwrap();
    let before = allocations();
    for _ in 0..1000 {
        std::hint::black_box(gen_blocking().unwrap());
    }
    assert_eq!(allocations() - before, 0, "blocking");
}

fn hand_written_calls_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(allocations_per_1000_calls(&RETRIES).await, 0, "retries");
        assert_eq!(
            allocations_per_1000_calls(&BREAKER).await,
            0,
            "retries + breaker"
        );
        assert_eq!(
            allocations_per_1000_calls(&TIMEOUT).await,
            0,
            "retries + breaker + timeout"
        );
    });
}
