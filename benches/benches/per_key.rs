//! Per-key breakers (one per tenant): memory per live key and lookup time at 1k, 100k and 1M keys,
//! against a `HashMap<String, _>` get of the same key.
//! `cargo bench -p resilience-benches --bench per_key`.
//!
//! The two lookups are timed in alternating rounds (ours then the map's, the map's then ours,
//! ...) and the median of the per-round ratios is reported: whichever side runs second finds
//! the keys' strings already in cache, and a slow spell of this shared machine slows both sides
//! of a round alike.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use resilience_benches::{alternate, quartiles, quick};
use resilience_runtime::Registry;
use resilience_runtime::registry::RegistryConfig;

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

fn main() {
    let sizes: &[usize] = if quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    println!("| live keys | bytes per key | lookup (ours) | lookup (HashMap<String, _>) | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let registry = Registry::new();
        let cfg = RegistryConfig::from_toml_str(&format!("[breakers.t]\nmax_keys = {}", n + 1))
            .expect("config");
        registry.apply(&cfg);
        let keyed = registry.keyed_breakers("t");
        let keys: Vec<String> = (0..n).map(key).collect();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        for k in &keys {
            black_box(keyed.get(k));
        }
        let per_key = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / n as f64;

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
        println!("| {n} | {per_key:.0} | {ours:.1} ns | {theirs:.1} ns | {ratio:.2}x |");
    }
}
