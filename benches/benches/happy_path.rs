//! Time per call on the happy path: our wrapper, a plain call and the peers, side by side in one
//! run. `cargo bench -p resilience-benches --bench happy_path`.
//!
//! Two passes. Criterion times each variant on its own (ns/call with its confidence interval).
//! Then the ratio pass times every variant against the plain call in alternating rounds (plain
//! then variant, variant then plain, ...) and reports the median of the per-round ratios with
//! their quartiles: a slow spell of this shared machine then slows both sides of a round alike,
//! where two criterion runs minutes apart can differ by a third.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use resilience_benches::{GROUPS, Run, alternate, quartiles, quick};

fn happy_path(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("happy_path");
    for &(name, run) in GROUPS.iter().flat_map(|g| g.iter()) {
        // Warm up: resolve and cache the site's state before measuring.
        run();
        group.bench_function(name, |b| b.iter(run));
    }
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
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

/// Nanoseconds per call of `run` over `n` calls. One loop, out of line, times both sides of a
/// round: two inlined copies are laid out differently, and at a nanosecond a call the layout of
/// the loop alone moved the plain call by half.
#[inline(never)]
fn ns_per_call(run: Run, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        black_box(run());
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

/// The ratio pass: each variant against the first of its group (the plain call), round by round,
/// which side goes first alternating between rounds.
fn ratios() {
    let rt = runtime();
    let _guard = rt.enter();
    let (rounds, n) = if quick() {
        (8, 200_000)
    } else {
        (32, 2_000_000)
    };
    println!("\nratio pass: {rounds} alternating rounds of {n} calls per side");
    println!(
        "| variant | ns/call (median) | ratio to plain: median | lower quartile | upper quartile |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut baselines = Vec::new();
    for group in GROUPS {
        let Some(&(base_name, base)) = group.first() else {
            continue;
        };
        base();
        let mut base_ns = Vec::with_capacity(rounds * group.len());
        for &(name, run) in group {
            run();
            let pairs = alternate(rounds, || ns_per_call(base, n), || ns_per_call(run, n));
            base_ns.extend(pairs.iter().map(|&(b, _)| b));
            let mut ns: Vec<f64> = pairs.iter().map(|&(_, v)| v).collect();
            let mut ratios: Vec<f64> = pairs.iter().map(|&(b, v)| v / b).collect();
            let (lo, r, hi) = quartiles(&mut ratios);
            let (_, t, _) = quartiles(&mut ns);
            println!("| {name} | {t:.2} | {r:.2}x | {lo:.2}x | {hi:.2}x |");
        }
        baselines.push((base_name, quartiles(&mut base_ns)));
    }
    for (name, (lo, mid, hi)) in baselines {
        println!("{name} over all rounds: median {mid:.2} ns, quartiles {lo:.2}-{hi:.2} ns");
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs each bench once in test mode, and `--list` lists: the ratio
    // pass is for `cargo bench` alone. It times every variant whatever criterion's filter.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        ratios();
    }
}
