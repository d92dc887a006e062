//! The fleet's costs on one real `redis-server` (started here, on a free loopback port):
//!
//! 1. instructions per call of a breaker site whose breaker is shared on Redis, beside the same
//!    site in process (callgrind, two call counts, the difference divided by the extra calls):
//!    the closed-breaker check stays local, so the target is within 10%;
//! 2. the round-trip latency of one shared permit (a `RedisRateLimit` whose rate never refuses),
//!    its distribution over many permits asked one after another;
//! 3. permits per second one replica takes, one round trip per permit and with a lease of 16.
//!
//! `cargo bench -p resilience-benches --bench fleet` (needs `redis-server` on the PATH, and
//! `valgrind` for part 1; either missing skips its part). `RESILIENCE_BENCH_QUICK=1` runs fewer
//! calls.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use resilience_runtime::limit::RateLimit;
use resilience_runtime::redis::{RedisBackend, RedisConfig};
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::store::Permit;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

const CHILD: &str = "--fleet-child";

#[derive(Debug, thiserror::Error, ConnectorError)]
enum BenchError {
    #[error("unavailable")]
    #[connector(transient)]
    Unavailable,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

struct Connector;

impl Connector {
    #[inline(never)]
    #[resilient(retries = 3, idempotent, breaker = "fleet_bench")]
    async fn op(&self, id: u64) -> Result<u64, BenchError> {
        if id == u64::MAX {
            return Err(BenchError::Unavailable);
        }
        Ok(id)
    }
}

fn quick() -> bool {
    std::env::var_os("RESILIENCE_BENCH_QUICK").is_some()
}

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("resilience-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).ok()?;
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let out = child.stdout.take()?;
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        ready.then_some(Server { child, port, dir })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let (Some(url), Some(n)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("fleet: {CHILD} URL|- N");
            return;
        };
        child(url, n.parse().unwrap_or(0));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches`: a smoke run of the site without a server.
        child("-", 10);
        return;
    }
    let Some(server) = Server::start() else {
        println!("fleet: redis-server is not installed or did not start; skipped");
        return;
    };
    instructions(&server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(round_trips(&server));
}

/// Runs `n` calls of the breaker site, its breaker on the backend at `url` (or in process for
/// `-`): what callgrind counts.
fn child(url: &str, n: u64) {
    let mut text = String::from("[breakers.fleet_bench]\n");
    if url != "-" {
        // A sync an hour: the backend's task stays idle while the calls are counted.
        text = format!(
            "[backends.fleet]\nkind = \"redis\"\nurl = \"{url}\"\nsync_interval = \"1h\"\n\
             [breakers.fleet_bench]\nbackend = \"fleet\"\n"
        );
    }
    let config = RegistryConfig::from_toml_str(&text).expect("the bench's configuration");
    Registry::global().apply(&config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let ok = rt.block_on(async {
        let c = Connector;
        let mut ok = 0u64;
        for id in 0..n {
            if c.op(std::hint::black_box(id)).await.is_ok() {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, n, "every call succeeds");
}

fn instructions(server: &Server) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("fleet: valgrind is not installed; instructions skipped");
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let (lo, hi) = if quick() {
        (1_000, 11_000)
    } else {
        (1_000, 41_000)
    };
    let count = |url: &str, n: u64| -> Option<u64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args([CHILD, url, &n.to_string()])
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
    let per_call = |url: &str| match (count(url, lo), count(url, hi)) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / (hi - lo) as f64,
        _ => f64::NAN,
    };
    let local = per_call("-");
    let shared = per_call(&server.url());
    println!(
        "\n1. breaker site, instructions per call (callgrind, {lo} and {hi} calls):\n\
         | breaker | instructions | vs in process |\n|---|---:|---:|\n\
         | in process | {local:.0} | 1.00x |\n| on Redis | {shared:.0} | {:.2}x |",
        shared / local
    );
}

async fn round_trips(server: &Server) {
    let backend = RedisBackend::new(
        RedisConfig::new(server.url())
            .expect("a valid URL")
            .with_round_trip_limit(Duration::from_millis(250))
            .with_sync_interval(Duration::from_millis(500)),
    );
    backend.start();
    backend.wait_for_syncs(1).await;
    // A rate that never refuses: what is measured is the round trip alone.
    let limit = backend.rate_limit("bench", 1_000_000_000, Duration::from_secs(1));
    let n = if quick() { 2_000 } else { 20_000 };
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = match limit.acquire(None) {
            Permit::Granted => true,
            Permit::Ask(rt) => rt.await.is_ok(),
            _ => false,
        };
        took.push(t.elapsed());
        assert!(ok, "a shared permit is granted");
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    println!(
        "\n2. one shared permit's round trip, {n} asked one after another (µs):\n\
         | p50 | p90 | p99 | p99.9 | max |\n|---:|---:|---:|---:|---:|\n\
         | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        at(0.5).as_secs_f64() * 1e6,
        at(0.9).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(0.999).as_secs_f64() * 1e6,
        took[took.len() - 1].as_secs_f64() * 1e6,
    );
    let span = if quick() {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    println!("\n3. permits per second, one replica asking one after another for {span:?}:");
    println!("| lease | permits/s | round trips/s |\n|---:|---:|---:|");
    for lease in [1, 16] {
        let limit = backend
            .rate_limit(
                &format!("bench-lease-{lease}"),
                1_000_000_000,
                Duration::from_secs(1),
            )
            .with_lease(lease);
        let start = Instant::now();
        let (mut permits, mut trips) = (0u64, 0u64);
        while start.elapsed() < span {
            match limit.acquire(None) {
                Permit::Granted => permits += 1,
                Permit::Ask(rt) => {
                    trips += 1;
                    if rt.await.is_ok() {
                        permits += 1;
                    }
                }
                _ => {}
            }
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "| {lease} | {:.0} | {:.0} |",
            permits as f64 / s,
            trips as f64 / s
        );
    }
}
