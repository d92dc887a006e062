//! The example as a fleet: `graph_connector --replicas 4 --redis-url URL` (four processes of the
//! built binary) against one `redis-server` this file starts on a free loopback port and the
//! Graph-style server, started here so that its records are this test's. Every claim is checked
//! from the server's own records:
//!
//! - four replicas under one shared limit of R permits per period (burst 1) send at most R per
//!   period between them, where four in-process limiters would send 4R; over a run of at least
//!   10 s on the wall clock they send R per second, within 5%;
//! - no request of the fleet arrives inside the client's throttle window after a `429`;
//! - in a full outage, with 3 retries per call, the fleet sends at most 1.1 requests per logical
//!   call (one retry budget and one breaker for the fleet);
//! - with Redis killed mid-run the replicas go on from local state, finish, and say so.
//!
//! Each test needs `redis-server` on `PATH`, and is skipped (saying why) without it. The tests
//! take turns (one lock), so that a rate measured on the wall clock is not another test's load.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use graph_connector::connector::RESILIENCE_TOML;
use graph_connector::report::Report;
use graph_connector::server::{FaultKind, GraphServer, RequestRecord, ServerConfig};

const REPLICAS: usize = 4;

/// One test at a time: rates are measured on the wall clock of a shared machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `redis-server` on a free loopback port, killed (SIGKILL) and its directory removed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one, or says why the test is skipped and returns `None`.
    fn start(test: &str) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            println!("skipped {test}: `redis-server` is not on PATH");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "graph-connector-fleet-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready when it says so, not after some time.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .take(500)
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server on port {port} did not start");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Some(Redis {
            child: Some(child),
            port,
            dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once, as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The example's configuration with `graph_client` at `rate` permits per `per` (burst `rate`),
/// and `extra` tables after it.
fn config(rate: u32, per: &str, extra: &str) -> String {
    let example = "rate = 500\nper = \"1s\"";
    assert!(
        RESILIENCE_TOML.contains(example),
        "the example's rate limit moved"
    );
    let base = RESILIENCE_TOML.replace(example, &format!("rate = {rate}\nper = \"{per}\""));
    format!("{base}\n{extra}\n")
}

/// Starts the fleet: four replica processes (and their parent) against `server`, sharing state
/// on `redis`.
fn start_fleet(redis: &Redis, server: &GraphServer, config: &str, extra: &[&str]) -> Child {
    let dir = std::env::temp_dir().join(format!(
        "graph-connector-fleet-config-{}-{}",
        std::process::id(),
        redis.port
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resilience.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_graph_connector"))
        .args(["--replicas", &REPLICAS.to_string()])
        .args(["--redis-url", &redis.url()])
        .args(["--base-url", server.base_url()])
        .arg("--config")
        .arg(&path)
        .arg("--json")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // A group of its own, with its replicas, so that a test that gives up kills them all.
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Waits for the fleet to exit (bounded), and reads its merged report.
async fn finish(fleet: Child) -> (Report, Output) {
    let group = fleet.id();
    let out = match tokio::time::timeout(
        Duration::from_secs(40),
        tokio::task::spawn_blocking(move || fleet.wait_with_output()),
    )
    .await
    {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            panic!("the fleet did not end within 40 s");
        }
    };
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no merged report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report.replicas, Some(REPLICAS));
    (report, out)
}

async fn run_fleet(
    redis: &Redis,
    server: &GraphServer,
    config: &str,
    extra: &[&str],
) -> (Report, Output) {
    finish(start_fleet(redis, server, config, extra)).await
}

/// The Graph requests (`/v1.0`), in arrival order.
fn graph_requests(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    let mut r: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.path.starts_with("/v1.0"))
        .collect();
    r.sort_by_key(|r| r.elapsed);
    r
}

/// Every replica shared its state to the end: no round trip failed or timed out.
fn assert_shared_throughout(report: &Report) {
    assert_eq!(report.backends.len(), REPLICAS, "{:?}", report.backends);
    for b in &report.backends {
        assert_eq!(
            (b.state.as_str(), b.fallbacks_total),
            ("shared", 0),
            "replica {:?} fell back: {b:?}",
            b.replica
        );
    }
}

fn no_faults(devices: usize) -> ServerConfig {
    ServerConfig::new()
        .with_devices(devices)
        .with_faults(0.0, 1)
        .with_consistency_delay(Duration::ZERO)
}

/// The most requests that arrived within any `window` (from one request's arrival).
fn most_in_any(requests: &[&RequestRecord], window: Duration) -> usize {
    let mut most = 0;
    let mut j = 0;
    for i in 0..requests.len() {
        while j < requests.len() && requests[j].elapsed < requests[i].elapsed + window {
            j += 1;
        }
        most = most.max(j - i);
    }
    most
}

/// R = 10 permits per second, as `rate = 1` per `100ms`: a burst of 1.
const R: u32 = 10;
const EMISSION: &str = "100ms";

/// Short: the bound per period. 12 devices: 4 listings and 24 creates and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_share_one_limit_of_r_per_period() {
    let _turn = TURN.lock().await;
    let Some(redis) = Redis::start("four_replicas_share_one_limit_of_r_per_period") else {
        return;
    };
    let server = GraphServer::start(no_faults(12)).await.unwrap();
    let (report, out) = run_fleet(&redis, &server, &config(1, EMISSION, ""), &[]).await;
    assert!(out.status.success(), "{}", report.result.line());
    assert_shared_throughout(&report);
    assert_eq!(report.devices, 12);

    let records = server.records();
    let requests = graph_requests(&records.requests);
    assert_eq!(requests.len(), REPLICAS + 24);
    // Permits are 100 ms apart on Redis's clock; a request may arrive a little sooner or later
    // after its permit than the one before it did: one request of slack per window.
    let most = most_in_any(&requests, Duration::from_secs(1));
    println!(
        "{} requests, at most {most} in any second (R = {R}; four in-process limiters: {})",
        requests.len(),
        4 * R
    );
    assert!(
        most <= R as usize + 2,
        "{most} requests in one second, above R = {R} (+ burst 1, + 1 of arrival jitter)"
    );
}

/// Long: on the wall clock, for at least 10 s, the fleet sends R per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_soak_at_r_per_second() {
    let _turn = TURN.lock().await;
    let Some(redis) = Redis::start("four_replicas_soak_at_r_per_second") else {
        return;
    };
    // 52 devices: 4 listings of 3 pages and 104 creates and reads, 116 permits: 11.5 s at R.
    let server = GraphServer::start(no_faults(52)).await.unwrap();
    let (report, out) = run_fleet(&redis, &server, &config(1, EMISSION, ""), &[]).await;
    assert!(out.status.success(), "{}", report.result.line());
    assert_shared_throughout(&report);

    let records = server.records();
    let requests = graph_requests(&records.requests);
    assert_eq!(requests.len(), REPLICAS * 3 + 104);
    let (first, last) = (requests[0].elapsed, requests[requests.len() - 1].elapsed);
    let elapsed = (last - first).as_secs_f64();
    let rate = (requests.len() - 1) as f64 / elapsed;
    println!(
        "soak: {} requests in {elapsed:.2} s: {rate:.3} per second (R = {R})",
        requests.len() - 1
    );
    assert!(elapsed >= 10.0, "the soak lasted {elapsed:.2} s");
    assert!(
        (rate - f64::from(R)).abs() <= 0.05 * f64::from(R),
        "{rate:.3} per second is not within 5% of R = {R}"
    );
    let most = most_in_any(&requests, Duration::from_secs(1));
    assert!(most <= R as usize + 2, "{most} requests in one second");
}

/// A `429` tells the whole fleet: no replica sends inside the client's throttle window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_sends_inside_a_throttle_window() {
    let _turn = TURN.lock().await;
    let Some(redis) = Redis::start("no_replica_sends_inside_a_throttle_window") else {
        return;
    };
    let mut server_config = ServerConfig::new()
        .with_devices(24)
        .with_faults(0.08, 11)
        .with_consistency_delay(Duration::ZERO)
        .with_retry_after(Duration::from_secs(1));
    for kind in FaultKind::RANDOM {
        let weight = u32::from(kind == FaultKind::ThrottledSeconds);
        server_config = server_config.with_fault_weight(kind, weight);
    }
    let server = GraphServer::start(server_config).await.unwrap();
    // The example's own rate (500 per second): only the fleet-wide pause holds the replicas.
    let (report, out) = run_fleet(&redis, &server, &config(500, "1s", ""), &[]).await;
    assert!(out.status.success(), "{}", report.result.line());
    assert_shared_throughout(&report);

    let records = server.records();
    let throttles = records.retry_afters_given();
    let violations = records.throttle_violations();
    println!(
        "{} requests, {throttles} answered 429, {} inside a throttle window",
        records.requests.len(),
        violations.len()
    );
    assert!(throttles >= 2, "the seed gave {throttles} 429s");
    if !violations.is_empty() {
        for r in records.requests.iter().filter(|r| r.status == Some(429)) {
            println!(
                "429 at {:?}: {} {:?} {:?}",
                r.elapsed, r.operation, r.retry_after, r.note
            );
        }
    }
    assert!(
        violations.is_empty(),
        "requests inside the client's throttle window: {violations:#?}"
    );
    assert!(records.early_requests().is_empty());
}

/// A full outage: one budget and one breaker for the fleet keep it under 1.1 requests per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_the_fleet_at_most_1_1_requests_per_call() {
    let _turn = TURN.lock().await;
    let Some(redis) = Redis::start("an_outage_costs_the_fleet_at_most_1_1_requests_per_call")
    else {
        return;
    };
    const DEVICES: usize = 200;
    let server = GraphServer::start(no_faults(DEVICES)).await.unwrap();
    let mut sites = String::new();
    for op in ["list_page", "create_assignment", "read_after_create"] {
        sites.push_str(&format!(
            "[sites.\"graph_connector::connector::{op}\"]\nretries = 3\n"
        ));
    }
    let fleet = start_fleet(
        &redis,
        &server,
        &config(500, "1s", &sites),
        &["--breaker-wait", "1"],
    );
    // Down once every replica has its listing (10 pages each), for the rest of the run.
    let pages = REPLICAS * DEVICES.div_ceil(20);
    tokio::time::timeout(
        Duration::from_secs(20),
        server.wait_until(|r| {
            r.requests
                .iter()
                .filter(|q| q.path.starts_with("/v1.0/devices"))
                .count()
                >= pages
        }),
    )
    .await
    .expect("the replicas listed the devices");
    server.set_outage(true);
    let (report, out) = finish(fleet).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "devices fail in an outage: {}",
        report.result.line()
    );
    assert_shared_throughout(&report);

    let records = server.records();
    let outage_requests = records
        .requests
        .iter()
        .filter(|r| r.fault == Some(FaultKind::Outage))
        .count();
    // Every call that failed met only the outage (no other fault is injected).
    let failed_calls: u64 = report.operations.iter().map(|o| o.calls - o.ok).sum();
    let ratio = outage_requests as f64 / failed_calls as f64;
    println!(
        "outage: {outage_requests} requests for {failed_calls} failed calls ({ratio:.3} per call), {} retries, gave up {:?}",
        report.retries, report.gave_up
    );
    assert!(failed_calls > 0);
    assert!(
        ratio <= 1.1,
        "{ratio:.3} requests per call in the outage ({outage_requests} for {failed_calls})"
    );
}

/// Redis dies mid-run: the replicas go on from local state, finish, and report the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_finishes_on_local_state_when_redis_dies() {
    let _turn = TURN.lock().await;
    let Some(mut redis) = Redis::start("the_fleet_finishes_on_local_state_when_redis_dies") else {
        return;
    };
    const DEVICES: usize = 120;
    let server = GraphServer::start(no_faults(DEVICES)).await.unwrap();
    // 100 permits per second: the run lasts long enough for Redis to die in the middle.
    let fleet = start_fleet(&redis, &server, &config(100, "1s", ""), &[]);
    tokio::time::timeout(
        Duration::from_secs(20),
        server.wait_until(|r| r.creates.len() >= 20),
    )
    .await
    .expect("the fleet created assignments");
    redis.kill();
    let creates_at_kill = server.records().creates.len();
    let (report, out) = finish(fleet).await;
    println!("{}", report.result.line());
    println!("{:?}", report.backends);
    assert!(out.status.success(), "{}", report.result.line());
    assert_eq!(
        report.devices_by_outcome.get("assigned").copied(),
        Some(DEVICES)
    );
    assert!(
        server.records().creates.len() > creates_at_kill,
        "nothing was created after Redis died"
    );
    assert_eq!(report.backends.len(), REPLICAS);
    for b in &report.backends {
        assert_eq!(b.state, "fallback", "{b:?}");
        assert!(b.fallbacks_total >= 1 && b.errors_total >= 1, "{b:?}");
    }
}

/// Flags a fleet cannot run with are refused before anything starts: exit status 1, with why.
#[test]
fn bad_fleet_flags_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!(
        "graph-connector-fleet-flags-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_config = dir.join("bad.toml");
    assert!(RESILIENCE_TOML.contains("cooldown = \"1s\""));
    std::fs::write(
        &bad_config,
        RESILIENCE_TOML.replace("cooldown = \"1s\"", "cooldown = \"soon\""),
    )
    .unwrap();
    let no_limit = dir.join("no-limit.toml");
    std::fs::write(&no_limit, "[breakers.graph]\n").unwrap();
    let no_limit = no_limit.to_string_lossy().into_owned();
    let bad_config = bad_config.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--replicas", "0", "--redis-url", "redis://127.0.0.1:1"],
            "--replicas must be at least 1",
        ),
        (&["--replicas", "2"], "--redis-url"),
        (
            &[
                "--replicas",
                "2",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--metrics",
            ],
            "with --replicas each replica has its own",
        ),
        (
            &["--redis-url", "http://127.0.0.1:1"],
            "the resilience configuration",
        ),
        (
            &[
                "--replicas",
                "2",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--config",
                &bad_config,
            ],
            "breakers.graph.cooldown",
        ),
        (
            &[
                "--replicas",
                "2",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--config",
                &no_limit,
            ],
            "a fleet shares `rate_limits.graph_client`",
        ),
    ];
    for (args, why) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_graph_connector"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(err.lines().last().unwrap().contains("RUN FAILED"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
