//! The five shapes of a connector's call (`resilience_benches::shapes`), ours side by side with
//! the peers: instructions per call, counted by callgrind, then time per call, each variant
//! timed against its shape's baseline in alternating rounds. It prints the tables of
//! BENCHMARKS.md's "Five shapes" and each target's verdict.
//!
//! `cargo bench -p resilience-benches --bench shapes` (callgrind needs `valgrind` on the PATH;
//! without it only the time pass runs). Arguments after `--`: shape names (`ready`, `pending`,
//! `retry`, `timeout`, `tenants`) run those shapes only; `--instructions` or `--time` runs that
//! pass only. `RESILIENCE_BENCH_QUICK=1` gives a CI-sized run. Run as a test
//! (`cargo test --benches`), it makes a few calls of each variant and measures nothing.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use resilience_benches::shapes::{self, Clock, Loop, SHAPES, Shape, Who};
use resilience_benches::{alternate, quartiles, quick};

const CHILD: &str = "--shapes-child";

/// A shape's figure for each of its variants.
type Figures = HashMap<(&'static str, Who), f64>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let arg = |k: usize| args.get(i + k).map(String::as_str).unwrap_or_default();
        child(arg(1), arg(2), arg(3).parse().unwrap_or(0));
        return;
    }
    shapes::configure();
    let picked: Vec<&Shape> = SHAPES
        .iter()
        .filter(|s| {
            let named = args.iter().any(|a| shapes::shape(a).is_some());
            !named || args.iter().any(|a| a == s.name)
        })
        .collect();
    // `cargo test --benches` runs each bench without `--bench`: a smoke run, no measurement.
    if !args.iter().any(|a| a == "--bench") {
        for shape in &picked {
            let rt = shape.runtime();
            for &(who, run) in shape.variants {
                assert_eq!(run(&rt, 10), 10, "{} {}", shape.name, who.name());
            }
        }
        return;
    }
    let flag = |f: &str| args.iter().any(|a| a == f);
    if !flag("--time") {
        instructions(&picked);
    }
    if !flag("--instructions") {
        times(&picked);
    }
}

/// Runs `n` calls of one variant in a fresh runtime: what callgrind counts.
fn child(shape: &str, who: &str, n: u64) {
    let Some(shape) = shapes::shape(shape) else {
        eprintln!("shapes: no shape named {shape}");
        return;
    };
    let Some(run) = Who::ALL
        .into_iter()
        .find(|w| w.name() == who)
        .and_then(|w| shape.variant(w))
    else {
        eprintln!("shapes: shape {} has no variant {who}", shape.name);
        return;
    };
    shapes::configure();
    let rt = shape.runtime();
    // Warm up: the site's state, the breaker, the runtime's queues.
    assert_eq!(run(&rt, 1), 1);
    assert_eq!(run(&rt, n), n, "{} {who}: a call failed", shape.name);
}

/// The instruction pass: each variant under callgrind at two call counts, the difference
/// divided by the extra calls.
fn instructions(picked: &[&Shape]) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("shapes: valgrind is not installed; instructions skipped");
        return;
    }
    let (lo, hi) = if quick() {
        (100, 1_100)
    } else {
        (1_000, 21_000)
    };
    let Ok(exe) = std::env::current_exe() else {
        println!("shapes: cannot find own executable; instructions skipped");
        return;
    };
    let count = |shape: &str, who: Who, n: u64| -> Option<u64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args([CHILD, shape, who.name(), &n.to_string()])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut figures = Figures::new();
    for shape in picked {
        for &(who, _) in shape.variants {
            let per_call = match (count(shape.name, who, lo), count(shape.name, who, hi)) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / (hi - lo) as f64,
                _ => f64::NAN,
            };
            eprintln!("shapes: {} {}: {per_call:.1}", shape.name, who.name());
            figures.insert((shape.name, who), per_call);
        }
    }
    println!(
        "\ninstructions per call (callgrind, {lo} and {hi} calls, the difference divided by {})",
        hi - lo
    );
    table(picked, &figures, |v, base| {
        format!("{v:.0} (+{:.0})", v - base)
    });
    verdicts(picked, &figures);
}

/// Nanoseconds per call of `run` over `n` calls in one `block_on`.
#[inline(never)]
fn ns_per_call(run: Loop, rt: &tokio::runtime::Runtime, n: u64) -> f64 {
    let start = Instant::now();
    assert_eq!(run(rt, n), n);
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// Calls of `run` that take about `target_ms`.
fn calibrate(run: Loop, rt: &tokio::runtime::Runtime, target_ms: f64) -> u64 {
    let ns = ns_per_call(run, rt, 1_000);
    ((target_ms * 1e6 / ns) as u64).clamp(1_000, 20_000_000)
}

/// The time pass: each variant against its shape's baseline, in alternating rounds (which side
/// goes first alternates), 48 rounds of about 5 ms of calls a side (8 of 2 ms quick): many
/// short rounds, so that a slow spell of this shared machine falls on both sides alike; the
/// median of the per-round ratios and their quartiles.
fn times(picked: &[&Shape]) {
    let (rounds, target_ms) = if quick() { (8, 2.0) } else { (48, 5.0) };
    let mut ns = Figures::new();
    let mut ratios = HashMap::new();
    // Paused shapes last: once any runtime of the process has paused its clock, every read of
    // tokio's clock (test-util is on in this crate) goes through the runtime's clock and its
    // lock, which would slow the timer of every shape timed after it.
    let mut order = picked.to_vec();
    order.sort_by_key(|s| s.clock == Clock::Paused);
    for shape in order {
        let rt = shape.runtime();
        let Some(base) = shape.variant(Who::Baseline) else {
            continue;
        };
        let base_n = calibrate(base, &rt, target_ms);
        for &(who, run) in shape.variants {
            let n = calibrate(run, &rt, target_ms);
            let pairs = alternate(
                rounds,
                || ns_per_call(base, &rt, base_n),
                || ns_per_call(run, &rt, n),
            );
            let mut t: Vec<f64> = pairs.iter().map(|&(_, v)| v).collect();
            let mut r: Vec<f64> = pairs.iter().map(|&(b, v)| v / b).collect();
            let (_, t, _) = quartiles(&mut t);
            let (lo, r, hi) = quartiles(&mut r);
            eprintln!(
                "shapes: {} {}: {t:.1} ns, {r:.2}x ({lo:.2}-{hi:.2}x)",
                shape.name,
                who.name()
            );
            ns.insert((shape.name, who), t);
            ratios.insert((shape.name, who), (lo, r, hi));
        }
    }
    println!(
        "\ntime per call (ns, median of {rounds} rounds), the median per-round ratio to the baseline (quartiles)"
    );
    let cell = |shape: &str, who: Who| {
        let (lo, r, hi) = ratios.get(&(shape, who))?;
        Some(format!(
            "{:.1}, {r:.2}x ({lo:.2}–{hi:.2})",
            ns.get(&(shape, who))?
        ))
    };
    header();
    for shape in picked {
        let cells: Vec<String> = Who::ALL
            .iter()
            .map(|&w| cell(shape.name, w).unwrap_or_else(|| "–".into()))
            .collect();
        println!("| {} | {} |", shape.name, cells.join(" | "));
    }
}

fn header() {
    println!(
        "| shape | baseline | ours | ours, unkeyed | tokio-retry | backon | backon + failsafe | tower-resilience |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
}

/// One row per shape: each variant's figure, formatted with its shape's baseline.
fn table(picked: &[&Shape], figures: &Figures, fmt: impl Fn(f64, f64) -> String) {
    header();
    for shape in picked {
        let base = figures
            .get(&(shape.name, Who::Baseline))
            .copied()
            .unwrap_or(f64::NAN);
        let cells: Vec<String> = Who::ALL
            .iter()
            .map(|&w| match (w, figures.get(&(shape.name, w))) {
                (Who::Baseline, Some(v)) => format!("{v:.0}"),
                (_, Some(&v)) => fmt(v, base),
                (_, None) => "–".into(),
            })
            .collect();
        println!("| {} | {} |", shape.name, cells.join(" | "));
    }
}

/// Each target's verdict, from the instruction counts in whole instructions, as the table shows
/// them: a fraction of an instruction a call is below what the method resolves (start-up
/// differences between two runs, spread over the extra calls).
fn verdicts(picked: &[&Shape], figures: &Figures) {
    let get = |shape: &str, who: Who| figures.get(&(shape, who)).map(|v| v.round());
    let added = |shape: &str, who: Who| Some(get(shape, who)? - get(shape, Who::Baseline)?);
    println!("\n| shape | target | figures | verdict |");
    println!("|---|---|---|---|");
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    for shape in picked {
        let line = match shape.name {
            "ready" => (|| {
                let (o, t) = (get("ready", Who::Ours)?, get("ready", Who::TokioRetry)?);
                Some(format!(
                    "fewer instructions than tokio-retry | {o:.0} vs {t:.0} | {}",
                    verdict(o < t)
                ))
            })(),
            "pending" | "retry" => (|| {
                let (o, b) = (
                    added(shape.name, Who::Ours)?,
                    added(shape.name, Who::Backon)?,
                );
                Some(format!(
                    "added no more than backon's | +{o:.0} vs +{b:.0} | {}",
                    verdict(o <= b)
                ))
            })(),
            "timeout" => (|| {
                let (o, t) = (
                    added("timeout", Who::Ours)?,
                    added("timeout", Who::TokioRetry)?,
                );
                Some(format!(
                    "added no more than tokio-retry's | +{o:.0} vs +{t:.0} | {}",
                    verdict(o <= t)
                ))
            })(),
            "tenants" => (|| {
                let (k, u) = (
                    get("tenants", Who::Ours)?,
                    get("tenants", Who::OursUnkeyed)?,
                );
                Some(format!(
                    "no more than 1.5x the unkeyed site | {k:.0} vs {u:.0}: {:.2}x (added: {:.2}x) | {}",
                    k / u,
                    added("tenants", Who::Ours)? / added("tenants", Who::OursUnkeyed)?,
                    verdict(k <= 1.5 * u)
                ))
            })(),
            _ => None,
        };
        if let Some(line) = line {
            println!("| {} | {line} |", shape.name);
        }
    }
}
