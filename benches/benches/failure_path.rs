//! The failure path without sleeping: classifying an error and deciding the next delay, and a
//! whole call that fails once then succeeds under a paused clock (the wait is virtual).
//! `cargo bench -p resilience-benches --bench failure_path`.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use resilience_benches::{BenchError, quick};
use resilience_runtime::backoff::{Backoff, RetryAfter, Rng};
use resilience_runtime::{Classify, resilient};

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
    group.bench_function("fail_once_then_succeed_paused_clock", |b| {
        b.iter(|| rt.block_on(fails_once()))
    });
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
