//! Time per call on the happy path: our wrapper, a plain call and the peers, side by side in one
//! run. `cargo bench -p resilience-benches --bench happy_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use resilience_benches::{ASYNC_VARIANTS, BLOCKING_VARIANTS, quick};

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("happy_path");
    for &(name, run) in ASYNC_VARIANTS.iter().chain(BLOCKING_VARIANTS.iter()) {
        // Warm up: resolve and cache the site's state before measuring.
        run();
        group.bench_function(name, |b| b.iter(run));
    }
    group.finish();
}

fn config() -> Criterion {
    let c = Criterion::default();
    if quick() {
        c.warm_up_time(std::time::Duration::from_millis(200))
            .measurement_time(std::time::Duration::from_millis(500))
            .sample_size(20)
    } else {
        c
    }
}

criterion_group! { name = benches; config = config(); targets = happy_path }
criterion_main!(benches);
