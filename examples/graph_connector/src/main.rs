//! Runs the Graph connector against the embedded fault-injecting server (or `--base-url`) and
//! prints what happened.
//!
//! ```text
//! cargo run -p graph_connector -- --devices 50 --fault-rate 0.3 --seed 7
//! cargo run -p graph_connector -- --devices 200 --limit 50 --concurrency 16 --json
//! ```
//!
//! Exit status: 0 when every device handled is assigned or refused by policy; 2 when any ends
//! `failed` or `unknown`; 1 when the run itself fails (bad flags, no runtime, the listing). The
//! last line says which and why.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use graph_connector::connector::{self, BLOCKED_APP, GraphClient, RunOptions};
use graph_connector::report::RunResult;
use graph_connector::server::{GraphServer, ServerConfig, TokenExpiry, device};
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
    let code = rt.block_on(run(args, token_ttl, lag, breaker_wait));
    ExitCode::from(code)
}

async fn run(args: Args, token_ttl: Duration, lag: Duration, breaker_wait: Duration) -> u8 {
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
    let client = match GraphClient::new(base_url, "graph-connector-example") {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return RunResult::RUN_FAILED;
        }
    };
    let opts = RunOptions {
        concurrency: args.concurrency.max(1),
        page_size: 20,
        limit: args.limit,
        breaker_patience: breaker_wait,
        progress: true,
    };
    if args.metrics {
        // Latency costs two clock reads per call, so it is measured only when asked for.
        resilience_runtime::metrics::set_latency_enabled(true);
    }
    let registry = connector::registry();
    let mut report = connector::run(client, &registry, &opts).await;
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
    if args.metrics {
        match resilience_runtime::prometheus::encode(&registry) {
            Ok(text) => {
                let _ = write!(out, "\n{text}");
            }
            Err(e) => eprintln!("error: cannot encode the metrics: {e}"),
        }
        // The verdict stays the last line.
        let _ = writeln!(out, "\n{}", report.result.line());
    }
    if args.json {
        eprintln!("{}", report.result.line());
    }
    report.exit_code()
}

/// Devices of the embedded server out of scope of its policy: one in twelve.
fn out_of_scope(index: usize) -> bool {
    index % 12 == 5
}
