//! Runs the Graph connector against the embedded fault-injecting server (or `--base-url`) and
//! prints what happened.
//!
//! ```text
//! cargo run -p graph_connector -- --devices 50 --fault-rate 0.3 --seed 7
//! cargo run -p graph_connector -- --devices 200 --limit 50 --concurrency 16 --json
//! cargo run -p graph_connector -- --replicas 4 --redis-url redis://127.0.0.1:6379
//! ```
//!
//! With `--replicas N` the program runs N replica processes (itself again, with the hidden
//! `--replica-index I`) against the one server, each handling the devices whose id hashes to it
//! and sharing the `graph` breaker, the `graph` retry budget and the `graph_client` rate limit on
//! the Redis server at `--redis-url`; it merges their reports into one.
//!
//! Exit status: 0 when every device handled is assigned or refused by policy; 2 when any ends
//! `failed` or `unknown`; 1 when the run itself fails (bad flags, no runtime, the listing). The
//! last line says which and why. With `--replicas`, the worst status of the replicas.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use graph_connector::connector::{self, BLOCKED_APP, GraphClient, RunOptions};
use graph_connector::report::{Report, RunResult};
use graph_connector::server::{GraphServer, ServerConfig, TokenExpiry, device};
use resilience_runtime::Registry;
use resilience_runtime::registry::RegistryConfig;
use tracing_subscriber::EnvFilter;

/// Assigns an app to every device of a Graph-style tenant, through 429s, 5xx, timeouts, lost
/// responses, token expiry, replication lag, outages and policy refusals, and reports what
/// happened to each device.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run against this server instead of the embedded one (it must speak the same contract).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Devices the embedded server lists (embedded server only; see --limit).
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Handle at most the first N devices listed; by default every device listed is handled.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Share of requests the embedded server answers with a fault, from 0 to 1.
    #[arg(long, value_name = "F", default_value_t = 0.3)]
    fault_rate: f64,
    /// Seed of the embedded server's faults: the same seed, the same faults.
    #[arg(long, value_name = "S", default_value_t = 7)]
    seed: u64,
    /// Devices processed at once.
    #[arg(long, value_name = "C", default_value_t = 8)]
    concurrency: usize,
    /// Print the summary as one JSON object instead of a table (the result line goes to stderr).
    #[arg(long)]
    json: bool,
    /// After the summary, print the metrics in the Prometheus text format.
    #[arg(long)]
    metrics: bool,
    /// Embedded server: tokens expire this many seconds after they are issued.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600.0)]
    token_ttl: f64,
    /// Embedded server: tokens also expire after this many requests.
    #[arg(long, value_name = "N")]
    token_requests: Option<u64>,
    /// Embedded server: a new assignment reads as 404 for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.2)]
    consistency_lag: f64,
    /// How long, in all, the batch waits for an open breaker to admit a probe.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    breaker_wait: f64,
    /// Show each retry (-v) or everything (-vv) on stderr; RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Read the breakers, budgets and rate limits from this file instead of the embedded
    /// resilience.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Run as N replica processes against the one server, sharing the `graph` breaker and budget
    /// and the `graph_client` rate limit on --redis-url, and merge their reports.
    #[arg(long, value_name = "N", requires = "redis_url")]
    replicas: Option<usize>,
    /// The Redis server the replicas share state on (`redis://host:port`); alone, this one
    /// process shares its state there.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Run as replica I of --replicas (the processes --replicas starts).
    #[arg(long, value_name = "I", hide = true, requires_all = ["replicas", "base_url"])]
    replica_index: Option<usize>,
    /// The key prefix of the replicas' shared state (one per fleet run).
    #[arg(long, value_name = "PREFIX", hide = true)]
    fleet_prefix: Option<String>,
}

/// Devices the embedded server lists when `--devices` is not given.
const DEFAULT_DEVICES: usize = 50;

fn fail(reason: &str) -> ExitCode {
    eprintln!("error: {reason}");
    eprintln!("{}", RunResult::run_failed(reason).line());
    ExitCode::from(RunResult::RUN_FAILED)
}

fn seconds(flag: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("--{flag} must be a number of seconds, 0 or more, got {v}"))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return fail("invalid command line");
        }
    };
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return fail(&format!(
            "--fault-rate must be between 0 and 1, got {}",
            args.fault_rate
        ));
    }
    if args.replicas == Some(0) {
        return fail("--replicas must be at least 1");
    }
    if let (Some(i), Some(n)) = (args.replica_index, args.replicas)
        && i >= n
    {
        return fail(&format!("--replica-index {i} must be below --replicas {n}"));
    }
    if args.replicas.is_some() && args.metrics {
        return fail(
            "--metrics shows one process's metrics; with --replicas each replica has its own",
        );
    }
    if args.base_url.is_some() && args.devices.is_some() {
        return fail(
            "--devices sizes the embedded server and means nothing with --base-url; use --limit N to handle at most N devices",
        );
    }
    let durations = (|| {
        Ok::<_, String>((
            seconds("token-ttl", args.token_ttl)?,
            seconds("consistency-lag", args.consistency_lag)?,
            seconds("breaker-wait", args.breaker_wait)?,
        ))
    })();
    let (token_ttl, lag, breaker_wait) = match durations {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if token_ttl < Duration::from_secs(1) {
        return fail("--token-ttl must be at least 1 second");
    }
    let default_filter = match args.verbose {
        0 => "error",
        1 => "warn,graph_connector=info",
        _ => "debug,hyper=info,reqwest=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let config = match resilience_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let code = rt.block_on(run(args, config, token_ttl, lag, breaker_wait));
    ExitCode::from(code)
}

/// The run's configuration: `--config` or the embedded resilience.toml, with the fleet's backend
/// when `--redis-url` is given.
fn resilience_config(args: &Args) -> Result<RegistryConfig, String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?,
        None => connector::RESILIENCE_TOML.to_owned(),
    };
    let config = match &args.redis_url {
        Some(url) => {
            let prefix = args.fleet_prefix.clone().unwrap_or_else(fleet_prefix);
            connector::fleet_config(&text, url, &prefix)
        }
        None => RegistryConfig::from_toml_str(&text).map_err(|e| e.to_string()),
    };
    config.map_err(|e| match &args.config {
        Some(path) => format!("--config {}: {e}", path.display()),
        None => format!("the resilience configuration: {e}"),
    })
}

/// A key prefix of its own for a fleet run: its replicas share state, and no other run's.
fn fleet_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("graph-connector:{}-{ms}:", std::process::id())
}

async fn run(
    args: Args,
    config: RegistryConfig,
    token_ttl: Duration,
    lag: Duration,
    breaker_wait: Duration,
) -> u8 {
    let server = match &args.base_url {
        Some(_) => None,
        None => {
            let devices = args.devices.unwrap_or(DEFAULT_DEVICES);
            let mut config = ServerConfig::new()
                .with_devices(devices)
                .with_faults(args.fault_rate, args.seed)
                .with_policy_app(BLOCKED_APP)
                .with_token_expiry(TokenExpiry {
                    after_requests: args.token_requests.map(|n| n.max(1)),
                    after: Some(token_ttl),
                })
                .with_consistency_delay(lag)
                .with_retry_after(Duration::from_secs(1))
                .with_slow_response(Duration::from_millis(2500));
            // Some devices are out of scope of the tenant's policy, whatever the app.
            for i in (0..devices).filter(|i| out_of_scope(*i)) {
                config = config.with_out_of_scope_device(device(i).id);
            }
            match GraphServer::start(config).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: cannot start the embedded server: {e}");
                    return RunResult::RUN_FAILED;
                }
            }
        }
    };
    let base_url = args
        .base_url
        .clone()
        .or_else(|| server.as_ref().map(|s| s.base_url().to_owned()))
        .unwrap_or_default();
    let (mut report, metrics) = match (args.replicas, args.replica_index) {
        (Some(n), None) => (run_fleet(&args, n, &base_url, breaker_wait).await, None),
        _ => run_one(&args, config, base_url, breaker_wait).await,
    };
    if let Some(s) = &server {
        report.embedded_server = true;
        report.fault_rate = s.config().fault_rate;
        report.seed = s.config().seed;
        report.server = Some(connector::server_view(&s.records()));
    }
    // A closed stdout (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", report.to_json());
    } else {
        let _ = writeln!(out, "{report}");
    }
    if let Some(metrics) = metrics {
        match metrics {
            Ok(text) => {
                let _ = write!(out, "\n{text}");
            }
            Err(e) => eprintln!("error: {e}"),
        }
        // The verdict stays the last line.
        let _ = writeln!(out, "\n{}", report.result.line());
    }
    // A replica's verdict is its parent's to merge and say.
    if args.json && args.replica_index.is_none() {
        eprintln!("{}", report.result.line());
    }
    report.exit_code()
}

/// This process handles the devices: all of them, or its share as a replica.
async fn run_one(
    args: &Args,
    config: RegistryConfig,
    base_url: String,
    breaker_wait: Duration,
) -> (Report, Option<Result<String, String>>) {
    let client = match GraphClient::new(base_url.clone(), "graph-connector-example") {
        Ok(c) if args.redis_url.is_some() => Arc::new(c.in_fleet()),
        Ok(c) => Arc::new(c),
        Err(e) => return (failed_report(base_url, e.to_string()), None),
    };
    let opts = RunOptions {
        concurrency: args.concurrency.max(1),
        page_size: 20,
        limit: args.limit,
        breaker_patience: breaker_wait,
        // A replica's stderr is its parent's: one progress line, not N at once.
        progress: args.replica_index.is_none(),
        shard: args.replica_index.zip(args.replicas),
    };
    if args.metrics {
        // Latency costs two clock reads per call, so it is measured only when asked for.
        resilience_runtime::metrics::set_latency_enabled(true);
    }
    let registry = Registry::new();
    registry.apply(&config);
    if let Some(fleet) = registry.redis_backend(connector::FLEET_BACKEND) {
        // Until its first sync the backend answers from local state: a replica that started
        // calling then would send at its own full rate. A Redis that does not answer in time
        // leaves the replica on local state, as any outage of Redis does, and the run goes on.
        fleet.start();
        if tokio::time::timeout(Duration::from_secs(2), fleet.wait_for_syncs(1))
            .await
            .is_err()
        {
            tracing::warn!("the fleet's Redis did not answer within 2 s: starting on local state");
        }
    }
    let report = connector::run(client, &registry, &opts).await;
    let metrics = args
        .metrics
        .then(|| resilience_runtime::prometheus::encode(&registry))
        .map(|m| m.map_err(|e| format!("cannot encode the metrics: {e}")));
    (report, metrics)
}

/// A report of a run that failed before it could handle devices.
fn failed_report(base_url: String, reason: String) -> Report {
    let mut report = Report {
        base_url,
        run_error: Some(reason),
        ..Report::default()
    };
    report.result = RunResult::of(&report);
    report
}

/// Runs `replicas` processes of this program against `base_url`, each handling its share of the
/// devices and sharing state on `--redis-url`, and merges their reports.
async fn run_fleet(args: &Args, replicas: usize, base_url: &str, breaker_wait: Duration) -> Report {
    let started = std::time::Instant::now();
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return failed_report(
                base_url.to_owned(),
                format!("cannot find this program to start the replicas: {e}"),
            );
        }
    };
    let prefix = args.fleet_prefix.clone().unwrap_or_else(fleet_prefix);
    let mut children = Vec::with_capacity(replicas);
    for i in 0..replicas {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("--replicas")
            .arg(replicas.to_string())
            .arg("--replica-index")
            .arg(i.to_string())
            .arg("--redis-url")
            .arg(args.redis_url.as_deref().unwrap_or_default())
            .arg("--fleet-prefix")
            .arg(&prefix)
            .arg("--base-url")
            .arg(base_url)
            .arg("--concurrency")
            .arg(args.concurrency.to_string())
            .arg("--breaker-wait")
            .arg(breaker_wait.as_secs_f64().to_string())
            .arg("--json")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if let Some(n) = args.limit {
            cmd.arg("--limit").arg(n.to_string());
        }
        if let Some(c) = &args.config {
            cmd.arg("--config").arg(c);
        }
        if args.verbose > 0 {
            cmd.arg(format!("-{}", "v".repeat(usize::from(args.verbose))));
        }
        match cmd.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return failed_report(
                    base_url.to_owned(),
                    format!("cannot start replica {i}: {e}"),
                );
            }
        }
    }
    // Each replica's report is its stdout, read to the end as the process exits.
    let waits: Vec<_> = children
        .into_iter()
        .map(|c| tokio::task::spawn_blocking(move || c.wait_with_output()))
        .collect();
    let mut reports = Vec::with_capacity(replicas);
    for (i, w) in waits.into_iter().enumerate() {
        let report = match w.await {
            Ok(Ok(out)) => match serde_json::from_slice::<Report>(&out.stdout) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("error: replica {i} ({}) gave no report: {e}", out.status);
                    None
                }
            },
            Ok(Err(e)) => {
                eprintln!("error: cannot wait for replica {i}: {e}");
                None
            }
            Err(e) => {
                eprintln!("error: cannot wait for replica {i}: {e}");
                None
            }
        };
        reports.push(report);
    }
    let mut report = Report::merge(reports);
    if report.base_url.is_empty() {
        base_url.clone_into(&mut report.base_url);
    }
    report.limit = args.limit;
    report.concurrency = args.concurrency.max(1);
    report.duration_seconds = started.elapsed().as_secs_f64();
    report
}

/// Devices of the embedded server out of scope of its policy: one in twelve.
fn out_of_scope(index: usize) -> bool {
    index % 12 == 5
}
