//! Provisions users through a gRPC Grant/Revoke service (the embedded one, or `--addr`) and
//! reports how every operation ended.
//!
//! ```text
//! cargo run -p grpc_provisioner -- --requests 40 --fault-rate 0.3 --seed 7
//! cargo run -p grpc_provisioner -- --addr http://127.0.0.1:50051 --json
//! ```
//!
//! Exit status: 0 when every operation was done or refused for good with its reason; 2 when any
//! failed otherwise; 1 when the run could not start. The last line says which and why.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use grpc_provisioner::caller::{self, Caller, ServerView};
use grpc_provisioner::service::{ServiceConfig, ServiceHandle};
use tracing_subscriber::EnvFilter;

/// Grants and revokes access through a provisioning service whose terminal failures carry a
/// reason, through transient faults and rate limits, and reports each operation's outcome.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The service's address (`http://host:port`); by default an embedded one is started.
    #[arg(long, value_name = "URL")]
    addr: Option<String>,
    /// Operations to run (grants, one in ten a revocation).
    #[arg(long, value_name = "N", default_value_t = 40)]
    requests: usize,
    /// Embedded service: share of requests answered with a transient fault or a rate limit.
    #[arg(long, value_name = "F", default_value_t = 0.3)]
    fault_rate: f64,
    /// Embedded service: seed of its faults.
    #[arg(long, value_name = "S", default_value_t = 7)]
    seed: u64,
    /// Operations at once.
    #[arg(long, value_name = "C", default_value_t = 4)]
    concurrency: usize,
    /// The caller's client id (`x-client-id`): the scope of the service's rate limits.
    #[arg(long, value_name = "ID", default_value = "provisioner-example")]
    client_id: String,
    /// Print the report as one JSON object (the result line goes to stderr).
    #[arg(long)]
    json: bool,
    /// Show each retry (-v) or everything (-vv) on stderr; RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("error: {reason}");
    eprintln!("result       RUN FAILED (exit 1): {reason}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
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
    let filter = match args.verbose {
        0 => "error",
        1 => "warn,grpc_provisioner=info",
        _ => "debug,h2=info,hyper=info,tower=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter)),
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
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let server = match &args.addr {
        Some(_) => None,
        None => {
            let config = ServiceConfig {
                fault_rate: args.fault_rate,
                seed: args.seed,
                ..ServiceConfig::default()
            };
            match ServiceHandle::start(config).await {
                Ok(s) => Some(s),
                Err(e) => return fail(&format!("cannot start the embedded service: {e}")),
            }
        }
    };
    let addr = args
        .addr
        .clone()
        .or_else(|| server.as_ref().map(ServiceHandle::url))
        .unwrap_or_default();
    let caller = match Caller::connect(&addr, &args.client_id).await {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(&e),
    };
    let registry = caller::registry();
    let mut report = caller::run(
        caller,
        &registry,
        caller::workload(args.requests),
        args.concurrency,
    )
    .await;
    report.addr = addr;
    if let Some(s) = &server {
        report.embedded_server = true;
        report.fault_rate = s.service().config().fault_rate;
        report.seed = s.service().config().seed;
        report.server = Some(ServerView::of(&s.service().records()));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", report.to_json());
        eprintln!("{}", report.result_line());
    } else {
        let _ = writeln!(out, "{report}");
    }
    ExitCode::from(report.exit_code)
}
