//! Compile time: a generated crate with 200 annotated methods, `cargo check` against the same
//! crate with tracing's `#[instrument]` and with no attribute.
//! `cargo bench -p resilience-benches --bench compile_time` (runs cargo; takes a few minutes).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const METHODS: usize = 200;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = root.parent().unwrap_or(&root).to_path_buf();
    let work = workspace.join("target").join("compile-time-bench");
    let target = work.join("target");
    let methods = if resilience_benches::quick() {
        20
    } else {
        METHODS
    };
    let variants = [
        ("none", ""),
        ("instrument", "#[tracing::instrument(skip_all)]"),
        (
            "resilient",
            "#[resilient(retries = 3, idempotent, breaker = \"graph\", timeout = \"10s\")]",
        ),
    ];
    let mut results = Vec::new();
    for (name, attr) in variants {
        let dir = work.join(name);
        if let Err(e) = write_crate(&dir, &workspace, name, attr, methods) {
            println!("compile_time: cannot write the crate: {e}");
            return;
        }
        // Build dependencies once, then time a check of the crate alone.
        let _ = cargo_check(&dir, &target);
        let _ = std::fs::write(dir.join("src/lib.rs"), source(attr, methods, 1));
        let t = Instant::now();
        let ok = cargo_check(&dir, &target);
        let secs = t.elapsed().as_secs_f64();
        if !ok {
            println!("compile_time: `cargo check` failed for {name}");
            return;
        }
        results.push((name, secs));
    }
    let base = results
        .iter()
        .find(|r| r.0 == "instrument")
        .map(|r| r.1)
        .unwrap_or(1.0);
    println!("| {methods} methods | cargo check | ratio to #[instrument] |");
    println!("|---|---:|---:|");
    for (name, secs) in results {
        println!("| {name} | {secs:.2} s | {:.2}x |", secs / base);
    }
}

fn cargo_check(dir: &Path, target: &Path) -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("check")
        .arg("--quiet")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .is_ok_and(|s| s.success())
}

fn write_crate(
    dir: &Path,
    workspace: &Path,
    name: &str,
    attr: &str,
    methods: usize,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    let manifest = format!(
        "[package]\nname = \"ct-{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n\n[dependencies]\nresilience-runtime = {{ path = {:?} }}\ntracing = \"0.1\"\n",
        workspace.join("resilience-runtime")
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src/lib.rs"), source(attr, methods, 0))
}

fn source(attr: &str, methods: usize, salt: usize) -> String {
    let mut s = String::from(
        "#![allow(dead_code, unused_imports)]\nuse resilience_runtime::{resilient, ConnectorError, Rejected};\n\n#[derive(Debug, ConnectorError)]\npub enum E {\n    #[connector(transient)]\n    Busy,\n    #[connector(rejected)]\n    Rejected(Rejected),\n}\n\npub struct Client;\n\nimpl Client {\n",
    );
    for i in 0..methods {
        let _ = write!(
            s,
            "    {attr}\n    pub async fn op_{i}(&self, id: &str) -> Result<usize, E> {{\n        Ok(id.len() + {i} + {salt})\n    }}\n\n"
        );
    }
    s.push_str("}\n");
    s
}
