//! The failure path without sleeping: classifying an error and deciding the next delay, and a
//! whole call that fails once then succeeds under a paused clock (the wait is virtual).
//! `cargo bench -p resilience-benches --bench failure_path`.
//!
//! Every call of `fails_once` is retried: its site's budget is refilled by each success as much
//! as a retry costs, and the site's counters are checked before and after the measurement. (With
//! the default budget the site runs dry after about 25 calls; from then on its calls alternate
//! between a first attempt that fails and is not retried and one that succeeds.)

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use resilience_benches::{BenchError, quick};
use resilience_runtime::backoff::{Backoff, RetryAfter, Rng};
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::{Classify, Registry, resilient};

thread_local! {
    static FAIL_NEXT: Cell<bool> = const { Cell::new(true) };
}

#[resilient(
    retries = 1,
    idempotent,
    backoff(base = "1ms", max = "1ms"),
    jitter = "none"
)]
async fn fails_once() -> Result<u64, BenchError> {
    if FAIL_NEXT.with(|f| f.replace(!f.get())) {
        return Err(BenchError::Transient);
    }
    Ok(black_box(1))
}

/// The retry budget of `fails_once`'s site: a site without a breaker has its own, named after
/// its module and fn.
const BUDGET: &str = concat!(module_path!(), "::fails_once");

/// Checks that every call of `fails_once` so far failed once and succeeded at its retry.
fn every_call_retried_once() {
    let metrics = Registry::global().metrics();
    let m = &metrics
        .site("fails_once")
        .expect("fails_once was called")
        .metrics;
    assert_eq!(m.budget_exhausted, 0, "the budget refused a retry");
    assert_eq!(m.errors.total(), 0, "a call failed");
    assert_eq!(
        (m.retries, m.retry_successes),
        (m.ok, m.ok),
        "a call was not retried exactly once"
    );
}

fn failure_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("failure_path");
    let backoff = Backoff::new();
    let retry_after = RetryAfter::new();
    let mut rng = Rng::seeded(7);
    let err = BenchError::Transient;
    group.bench_function("classify_and_next_delay", |b| {
        let mut n = 0u32;
        b.iter(|| {
            let e = black_box(&err);
            let class = e.class();
            let d = backoff.delay(n % 5, None, &mut rng);
            n = n.wrapping_add(1);
            black_box((class.is_retryable(), retry_after.wait(d, e.retry_after())))
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    // A success refunds what a retry costs (5 tokens): the budget never runs dry.
    Registry::global()
        .configure_budget(BUDGET, BudgetConfig::new().with_refund_milli(5_000))
        .expect("a valid budget");
    for _ in 0..100 {
        rt.block_on(fails_once())
            .expect("a call that is retried succeeds");
    }
    every_call_retried_once();
    group.bench_function("fail_once_then_succeed_paused_clock", |b| {
        b.iter(|| rt.block_on(fails_once()))
    });
    every_call_retried_once();
    group.bench_function("block_on_ready_baseline", |b| {
        b.iter(|| rt.block_on(async { black_box(Duration::ZERO) }))
    });
    group.finish();
}

fn config() -> Criterion {
    let c = Criterion::default();
    if quick() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(20)
    } else {
        c
    }
}

criterion_group! { name = benches; config = config(); targets = failure_path }
criterion_main!(benches);
