//! Runs the blocking ETL connector once against the in-process fake source and prints the run's
//! report. WARN lines show the items skipped; each retry is a WARN of the runtime.
//!
//! ```text
//! cargo run -p etl_connector
//! cargo run -p etl_connector -- --json
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use etl_connector::{Connector, SourceClient, demo_source};
use resilience_runtime::Registry;
use resilience_runtime::breaker::BreakerConfig;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    // A registry of its own, with a breaker that tolerates the demo's scripted failures.
    let registry = Registry::new();
    if let Err(e) = registry.configure_breaker(
        "octi-source",
        BreakerConfig::new().with_failure_threshold(10),
    ) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let report = registry.enter(|| {
        let mut connector = Connector::new(SourceClient::new(Arc::new(demo_source())), Vec::new());
        let report = connector.work();
        if !json {
            for e in connector.sink() {
                println!("sent     {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
        report
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!();
        println!("listed     {}", report.listed);
        println!("processed  {}", report.processed);
        println!("skipped    {}", report.skipped.len());
        for s in &report.skipped {
            let class = s
                .class
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default();
            println!("  {} ({}{class}): {}", s.id, s.stage, s.reason);
        }
        println!("retries    {}", report.retries);
        match (&report.error, &report.source_unreachable) {
            (Some(e), _) => println!("result     IN ERROR: {e}"),
            (None, Some(w)) => println!("result     source unreachable: {w}"),
            (None, None) => println!(
                "result     ok, {} items skipped with a warning",
                report.skipped.len()
            ),
        }
    }
    if report.in_error() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
