//! Runs the Graph connector against the embedded fault-injecting server (or `--base-url`) and
//! prints what happened.
//!
//! ```text
//! cargo run -p graph_connector -- --devices 50 --fault-rate 0.3 --seed 7
//! cargo run -p graph_connector -- --devices 200 --concurrency 16 --json
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use graph_connector::connector::{self, BLOCKED_APP, GraphClient, RunOptions};
use graph_connector::server::{GraphServer, ServerConfig, TokenExpiry};
use tracing_subscriber::EnvFilter;

/// Assigns an app to every device of a Graph-style tenant, through 429s, 5xx, timeouts, lost
/// responses, token expiry and policy refusals, and reports what the resilience layer did.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run against this server instead of the embedded one (it must speak the same contract).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Devices the embedded server lists (with --base-url: assign at most this many).
    #[arg(long, value_name = "N", default_value_t = 50)]
    devices: usize,
    /// Share of requests the embedded server answers with a fault, from 0 to 1.
    #[arg(long, value_name = "F", default_value_t = 0.3)]
    fault_rate: f64,
    /// Seed of the embedded server's faults: the same seed, the same faults.
    #[arg(long, value_name = "S", default_value_t = 7)]
    seed: u64,
    /// Devices processed at once.
    #[arg(long, value_name = "C", default_value_t = 8)]
    concurrency: usize,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// After the summary, print the metrics in the Prometheus text format.
    #[arg(long)]
    metrics: bool,
    /// Embedded server: tokens expire after this many requests.
    #[arg(long, value_name = "N", default_value_t = 100)]
    token_requests: u64,
    /// Show each retry (-v) or everything (-vv) on stderr; RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.fault_rate) {
        eprintln!(
            "error: --fault-rate must be between 0 and 1, got {}",
            args.fault_rate
        );
        return ExitCode::from(2);
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
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let server = match &args.base_url {
        Some(_) => None,
        None => {
            let config = ServerConfig::new()
                .with_devices(args.devices)
                .with_faults(args.fault_rate, args.seed)
                .with_policy_app(BLOCKED_APP)
                .with_token_expiry(TokenExpiry::after_requests(args.token_requests.max(1)))
                .with_retry_after(Duration::from_secs(1))
                .with_slow_response(Duration::from_millis(2500));
            match GraphServer::start(config).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: cannot start the embedded server: {e}");
                    return ExitCode::FAILURE;
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
            return ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        concurrency: args.concurrency.max(1),
        page_size: 20,
        max_devices: args.base_url.is_some().then_some(args.devices),
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
    let _ = if args.json {
        writeln!(out, "{}", report.to_json())
    } else {
        writeln!(out, "{report}")
    };
    if args.metrics {
        match resilience_runtime::prometheus::encode(&registry) {
            Ok(text) => {
                let _ = write!(out, "\n{text}");
            }
            Err(e) => eprintln!("error: cannot encode the metrics: {e}"),
        }
    }
    if report.run_error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
