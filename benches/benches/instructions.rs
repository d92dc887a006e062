//! Instructions per call on the happy path, counted by valgrind's callgrind (exact and repeatable
//! on a noisy machine). The binary re-runs itself under callgrind once per variant with two
//! iteration counts; the difference divided by the extra iterations is the cost of one call,
//! free of start-up and of the loop around it.
//!
//! `cargo bench -p resilience-benches --bench instructions` (needs `valgrind` on the PATH).

use std::process::Command;

use resilience_benches::{GROUPS, quick, variant};

const CHILD: &str = "--icount-child";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let name = args.get(i + 1).map(String::as_str).unwrap_or("plain");
        let n: u64 = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(0);
        child(name, n);
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: valgrind is not installed; skipped");
        return;
    }
    let (lo, hi) = if quick() {
        (100, 1_100)
    } else {
        (1_000, 21_000)
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            println!("instructions: cannot find own executable: {e}");
            return;
        }
    };
    let count = |name: &str, n: u64| -> Option<u64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args([CHILD, name, &n.to_string()])
            .output()
            .ok()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse().ok())
    };
    println!("| variant | instructions/call | ratio to plain |");
    println!("|---|---:|---:|");
    for group in GROUPS {
        let mut base = None;
        for &(name, _) in group {
            let per_call = match (count(name, lo), count(name, hi)) {
                (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / (hi - lo) as f64,
                _ => {
                    println!("| {name} | (failed) | |");
                    continue;
                }
            };
            let b = *base.get_or_insert(per_call);
            println!("| {name} | {per_call:.1} | {:.2}x |", per_call / b);
        }
    }
}

fn child(name: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let Some(run) = variant(name) else {
        eprintln!("instructions: no variant named {name}");
        return;
    };
    // Warm up: resolve and cache the site's state (and the shared failsafe breaker) before
    // counting.
    run();
    for _ in 0..n {
        std::hint::black_box(run());
    }
}
