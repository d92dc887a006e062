//! Contention: two OS threads, many tasks each, hammering one breaker and one site's counters on
//! a multi-thread runtime. Reports per-thread throughput relative to one thread alone, side by
//! side with failsafe (which takes a lock per call).
//! `cargo bench -p resilience-benches --bench contention`.

use std::sync::Arc;
use std::time::Instant;

use resilience_benches::{Failsafe, breaker, failsafe_breaker, failsafe_call, quick};

const TASKS_PER_THREAD: usize = 64;

fn run<F, Fut>(threads: usize, calls_per_task: usize, op: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_time()
        .build()
        .expect("runtime");
    let op = Arc::new(op);
    rt.block_on(async move {
        // Warm up (resolve the site, fault in pages).
        for _ in 0..1000 {
            op().await;
        }
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..threads * TASKS_PER_THREAD {
            let op = op.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..calls_per_task {
                    std::hint::black_box(op().await);
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        let total = (threads * TASKS_PER_THREAD * calls_per_task) as f64;
        total / start.elapsed().as_secs_f64() / threads as f64
    })
}

fn report(name: &str, one: f64, two: f64) {
    println!(
        "| {name} | {:.1} M/s | {:.1} M/s | {:.2} |",
        one / 1e6,
        two / 1e6,
        two / one
    );
}

fn main() {
    let calls = if quick() { 2_000 } else { 50_000 };
    println!("| operation | 1 thread | 2 threads (per thread) | ratio |");
    println!("|---|---:|---:|---:|");
    let ours = || async { breaker().await.is_ok() };
    report(
        "#[resilient] retries + breaker",
        run(1, calls, ours),
        run(2, calls, ours),
    );
    let fs = Arc::new(failsafe_breaker());
    let f1 = fs.clone();
    let one = run(1, calls, move || {
        let f = f1.clone();
        async move { call(&*f).await }
    });
    let f2 = fs.clone();
    let two = run(2, calls, move || {
        let f = f2.clone();
        async move { call(&*f).await }
    });
    report("failsafe breaker", one, two);
}

async fn call(f: &impl Failsafe) -> bool {
    failsafe_call(f).await.is_ok()
}
