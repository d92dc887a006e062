//! The calls connectors make allocate nothing: proved by counting every allocation the calling
//! thread makes while the calls run, for the code `#[resilient]` generates and for hand-written
//! calls through `execute`. (Counted per thread: the test harness's own thread may allocate
//! meanwhile, on a loaded machine.)
//!
//! Here: ready at once (with retries, a breaker, a timeout; async and blocking). The five shapes
//! of the benchmark (pending once, fail once then succeed, keyed over 16 tenants included) are
//! counted the same way in `tests/tests/alloc_shapes.rs`.

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
        let E::Rejected(r) = self;
        Some(r)
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
