//! Per-key breakers (one per tenant): memory per live key, lookup time against a `HashMap<String,
//! _>` get of the same key, and the cost of a new key on a full map (which evicts one), at 1k to
//! 1M keys. `cargo bench -p resilience-benches --bench per_key` (`RESILIENCE_BENCH_QUICK=1` for
//! 1k and 10k keys only).
//!
//! The two lookups are timed in alternating rounds (ours then the map's, the map's then ours,
//! ...) and the median of the per-round ratios is reported: whichever side runs second finds
//! the keys' strings already in cache, and a slow spell of this shared machine slows both sides
//! of a round alike.
//!
//! Lookups from two threads at once (this machine has two cores) are timed too: each thread's
//! time per lookup, the median of 4 rounds of `calls` lookups each.
//!
//! An insertion at the bound is timed one by one (two clock readings around each, about 40 ns,
//! included), over as many new keys as the map holds (at most 200,000), on a map whose keys are
//! all closed, and on one whose keys are all open (each new key is opened after it is timed, so
//! that every insertion evicts an open key).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use resilience_benches::{alternate, quartiles, quick};
use resilience_runtime::Registry;
use resilience_runtime::breaker::Outcome;
use resilience_runtime::registry::{KeyedBreakers, RegistryConfig};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// The system allocator, with a count of live bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn key(i: usize) -> String {
    format!("tenant-{i:08}")
}

/// A fresh base `t` of at most `max_keys` keys, whose breakers open at their first failure.
fn base(max_keys: usize) -> (Registry, std::sync::Arc<KeyedBreakers>) {
    let registry = Registry::new();
    let cfg = RegistryConfig::from_toml_str(&format!(
        "[breakers.t]\nmax_keys = {max_keys}\nfailure_threshold = 1"
    ))
    .expect("config");
    registry.apply(&cfg);
    let keyed = registry.keyed_breakers("t");
    (registry, keyed)
}

/// The median and 99th percentile, in ns, of inserting `n.min(200_000)` new keys one by one into
/// a full map of `n` keys, all closed or all open.
fn insert_at_the_bound(n: usize, open: bool) -> (f64, f64) {
    let (_registry, keyed) = base(n);
    let open_it = |b: &resilience_runtime::breaker::Breaker| {
        if let Ok(p) = b.try_acquire() {
            p.record(Outcome::Failure);
        }
    };
    for i in 0..n {
        let b = keyed.get(&key(i));
        if open {
            open_it(&b);
        }
    }
    let m = n.min(200_000);
    let new: Vec<String> = (n..n + m).map(key).collect();
    let mut times = Vec::with_capacity(m);
    for k in &new {
        let t = Instant::now();
        let b = black_box(keyed.get(k));
        times.push(t.elapsed().as_nanos() as f64);
        if open {
            open_it(&b);
        }
    }
    assert_eq!(keyed.len(), n);
    assert_eq!(keyed.key_evictions(), m as u64);
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((m as f64 * q) as usize).min(m - 1))
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99))
}

fn main() {
    let sizes: &[usize] = if quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000]
    };
    println!(
        "| live keys | bytes per key | lookup (ours) | lookup (HashMap<String, _>) | ratio | ours, 2 threads at once |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let (_registry, keyed) = base(n + 1);
        let keys: Vec<String> = (0..n).map(key).collect();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        for k in &keys {
            black_box(keyed.get(k));
        }
        let per_key = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / n as f64;
        assert_eq!((keyed.len(), keyed.key_evictions()), (n, 0));

        let map: HashMap<String, u64> = keys.iter().map(|k| (k.clone(), 1)).collect();
        let (rounds, calls) = if quick() {
            (4, 100_000)
        } else {
            (16, 1_000_000)
        };
        let order: Vec<usize> = (0..calls).map(|i| (i * 7919) % n).collect();
        let time_ours = || {
            let t = Instant::now();
            for &i in &order {
                black_box(keyed.get(&keys[i]));
            }
            t.elapsed().as_nanos() as f64 / calls as f64
        };
        let time_map = || {
            let t = Instant::now();
            for &i in &order {
                black_box(map.get(keys[i].as_str()));
            }
            t.elapsed().as_nanos() as f64 / calls as f64
        };
        let pairs = alternate(rounds, time_ours, time_map);
        let median = |f: &dyn Fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = pairs.iter().map(f).collect();
            quartiles(&mut v).1
        };
        let (ours, theirs) = (median(&|&(o, _)| o), median(&|&(_, m)| m));
        let ratio = median(&|&(o, m)| o / m);
        let mut two: Vec<f64> = (0..4)
            .flat_map(|_| {
                std::thread::scope(|s| {
                    let threads: Vec<_> = (0..2)
                        .map(|t| {
                            let (keyed, keys, order) = (&keyed, &keys, &order);
                            s.spawn(move || {
                                let start = Instant::now();
                                for &i in order {
                                    black_box(keyed.get(&keys[(i + t * 17) % n]));
                                }
                                start.elapsed().as_nanos() as f64 / calls as f64
                            })
                        })
                        .collect();
                    threads
                        .into_iter()
                        .map(|t| t.join().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let two = quartiles(&mut two).1;
        println!(
            "| {n} | {per_key:.0} | {ours:.1} ns | {theirs:.1} ns | {ratio:.2}x | {two:.1} ns |"
        );
    }
    println!();
    println!(
        "| max_keys (full) | new key, all closed: median / p99 | new key, all open: median / p99 |"
    );
    println!("|---:|---:|---:|");
    for &n in sizes {
        let (c50, c99) = insert_at_the_bound(n, false);
        let (o50, o99) = insert_at_the_bound(n, true);
        println!("| {n} | {c50:.0} / {c99:.0} ns | {o50:.0} / {o99:.0} ns |");
    }
}
