//! Breaker state shared on Redis between separate processes: an opening in one process refuses
//! in another within the sync interval, probes in flight fleet-wide never exceed the setting, a
//! process killed (SIGKILL) while probing frees its probe at the lease's expiry, and with a quorum
//! one failing process alone does not open the breaker for the fleet.
//!
//! Each replica is this test binary run again as a child process: the ignored `replica_process`
//! test, told its Redis and its tables through the environment, answers one command per line on
//! stdin with one line on stdout, prefixed `replica: `.
#![cfg(feature = "redis")]

mod redis_support;

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use redis_support::{RedisServer, synced};
use resilience_runtime::breaker::{BreakerState, Outcome};
use resilience_runtime::{ConnectorError, Rejected, resilient};

const URL_VAR: &str = "RESILIENCE_REPLICA_REDIS_URL";
const TABLES_VAR: &str = "RESILIENCE_REPLICA_TABLES";
const PREFIX: &str = "replica: ";

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(breaker = "shared")]
async fn call() -> Result<u32, ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(7)
}

/// The replica's side: run only as a child of the tests below (it returns at once without its
/// environment, so `cargo test -- --ignored` passes over it).
#[test]
#[ignore = "a replica process, started by the tests of this file"]
fn replica_process() {
    let (Ok(url), Ok(tables)) = (std::env::var(URL_VAR), std::env::var(TABLES_VAR)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let text = format!(
            "[backends.fleet]\nkind = \"redis\"\nurl = \"{url}\"\nround_trip_limit = \"250ms\"\nsync_interval = \"50ms\"\n{tables}"
        );
        let registry = resilience_runtime::Registry::new();
        registry.apply(&resilience_runtime::registry::RegistryConfig::from_toml_str(&text).unwrap());
        let breaker = registry.breaker("shared");
        let mut held = Vec::new();
        let mut out = std::io::stdout();
        for line in std::io::stdin().lines() {
            let line = line.unwrap();
            let mut words = line.split_whitespace();
            let reply = match (words.next(), words.next()) {
                (Some("sync"), n) => {
                    synced(&registry, n.map_or(1, |n| n.parse().unwrap())).await;
                    "synced".to_owned()
                }
                (Some("trip"), _) => {
                    let ticket = breaker.acquire().expect("a closed breaker admits");
                    breaker.record(ticket, Outcome::Failure);
                    state(breaker.state())
                }
                (Some("state"), _) => state(breaker.state()),
                (Some("call"), _) => {
                    let r = registry.scope(call()).await;
                    let runs = RUNS.load(Ordering::SeqCst);
                    match r {
                        Ok(_) => format!("ok runs={runs}"),
                        Err(ApiError::Rejected(Rejected::CircuitOpen { .. })) => {
                            format!("circuit-open runs={runs}")
                        }
                        Err(e) => format!("error {e:?}"),
                    }
                }
                (Some("probe"), _) => match breaker.acquire() {
                    Ok(t) if t.is_probe() => {
                        held.push(t);
                        "probe".to_owned()
                    }
                    Ok(t) => {
                        breaker.record(t, Outcome::Success);
                        "admitted".to_owned()
                    }
                    Err(_) => "refused".to_owned(),
                },
                (Some("in-flight"), _) => breaker.probes_in_flight().to_string(),
                _ => format!("unknown command {line:?}"),
            };
            writeln!(out, "{PREFIX}{reply}").unwrap();
            out.flush().unwrap();
        }
    });
}

fn state(s: BreakerState) -> String {
    format!("{s:?}").to_lowercase()
}

/// A replica process, killed (SIGKILL) on drop if it still runs.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn start(server: &RedisServer, tables: &str) -> Process {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["replica_process", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(URL_VAR, server.url())
            .env(TABLES_VAR, tables)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut p = Process {
            child,
            stdin,
            stdout,
        };
        assert_eq!(p.ask("sync 1"), "synced");
        p
    }

    /// Sends one command and returns the replica's answer (the harness may print its own text
    /// on the same line before it, hence the search for the prefix).
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        for line in self.stdout.by_ref() {
            let line = line.unwrap();
            if let Some(at) = line.find(PREFIX) {
                return line[at + PREFIX.len()..].to_owned();
            }
        }
        panic!("the replica exited while asked {command:?}");
    }

    /// Asks `command` at every sync of this replica, at most `syncs` times, until the answer is
    /// `want`; returns how many syncs that took.
    fn within_syncs(&mut self, syncs: u64, command: &str, want: &str) -> u64 {
        for n in 0..=syncs {
            if self.ask(command) == want {
                return n;
            }
            assert_eq!(self.ask("sync 1"), "synced");
        }
        panic!("{command:?} did not answer {want:?} within {syncs} syncs");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stdin.take());
        self.kill();
    }
}

const ONE_FAILURE: &str =
    "[breakers.shared]\nfailure_threshold = 1\ncooldown = \"1h\"\nbackend = \"fleet\"\n";

#[test]
fn a_breaker_opened_in_one_process_refuses_in_another_within_the_sync_interval() {
    let server = RedisServer::start();
    let mut a = Process::start(&server, ONE_FAILURE);
    let mut b = Process::start(&server, ONE_FAILURE);
    assert_eq!(b.ask("call"), "ok runs=1");
    assert_eq!(a.ask("trip"), "open");
    // b follows at its next syncs: a's publication, then b's read (50 ms each).
    let syncs = b.within_syncs(3, "state", "open");
    assert!(syncs <= 2, "{syncs} syncs");
    assert_eq!(
        b.ask("call"),
        "circuit-open runs=1",
        "refused without a run"
    );
    assert_eq!(a.ask("state"), "open");
}

#[test]
fn with_quorum_two_one_process_alone_does_not_open_it_for_the_fleet() {
    let server = RedisServer::start();
    let tables = format!("{ONE_FAILURE}quorum = 2\n");
    let mut a = Process::start(&server, &tables);
    let mut b = Process::start(&server, &tables);
    let mut c = Process::start(&server, &tables);
    assert_eq!(a.ask("trip"), "open");
    // Four syncs of c after the trip: a's publication and c's reads; the others stay closed.
    assert_eq!(c.ask("sync 4"), "synced");
    assert_eq!(b.ask("state"), "closed");
    assert_eq!(c.ask("state"), "closed");
    assert_eq!(c.ask("call"), "ok runs=1");
    // A second process trips it: the quorum is met, and c follows.
    assert_eq!(b.ask("trip"), "open");
    c.within_syncs(4, "state", "open");
    assert_eq!(c.ask("call"), "circuit-open runs=1");
}

const PROBES: &str = "[breakers.shared]\nfailure_threshold = 1\ncooldown = \"200ms\"\nhalf_open_probes = 1\nbackend = \"fleet\"\n";

#[test]
fn probes_in_flight_across_processes_never_exceed_the_setting() {
    let server = RedisServer::start();
    let mut replicas = [
        Process::start(&server, PROBES),
        Process::start(&server, PROBES),
        Process::start(&server, PROBES),
    ];
    for r in &mut replicas {
        assert_eq!(r.ask("trip"), "open");
    }
    // Every process asks for a probe at every sync of the first, for 20 syncs (1 s: five
    // cooldowns), and keeps what it gets.
    let (mut granted, mut most) = (0, 0);
    for _ in 0..20 {
        for r in &mut replicas {
            match r.ask("probe").as_str() {
                "probe" => granted += 1,
                "refused" => {}
                other => panic!("{other}"),
            }
        }
        let in_flight: u64 = replicas
            .iter_mut()
            .map(|r| r.ask("in-flight").parse::<u64>().unwrap())
            .sum();
        assert!(in_flight <= 1, "{in_flight} probes in flight");
        most = most.max(in_flight);
        assert_eq!(replicas[0].ask("sync 1"), "synced");
    }
    assert_eq!((most, granted), (1, 1), "one probe, held by one process");
}

#[test]
fn a_process_killed_while_probing_frees_its_probe_at_the_lease_expiry() {
    let server = RedisServer::start();
    let mut a = Process::start(&server, PROBES);
    let mut b = Process::start(&server, PROBES);
    assert_eq!(a.ask("trip"), "open");
    assert_eq!(b.ask("trip"), "open");
    // a takes the fleet's probe once its cooldown is over and its lease granted.
    a.within_syncs(40, "probe", "probe");
    assert_eq!(a.ask("in-flight"), "1");
    // b is refused while a holds it: a renews its lease at every sync.
    assert_eq!(a.ask("sync 8"), "synced");
    assert_eq!(b.ask("probe"), "refused");
    assert_eq!(
        (b.ask("in-flight").as_str(), b.ask("state").as_str()),
        ("0", "open")
    );
    // a is killed while probing: nothing of it runs any more, its lease is not renewed.
    a.kill();
    // b gets the probe once the lease (three sync intervals, 150 ms) expires.
    let syncs = b.within_syncs(20, "probe", "probe");
    assert!((1..=6).contains(&syncs), "{syncs} syncs");
    assert_eq!(b.ask("state"), "halfopen");
}
