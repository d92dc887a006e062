//! Every diagnostic of the macros, pinned as a trybuild case (`ui/<rule>.rs` + `.stderr`), and
//! every supported fn shape as a case that must compile (`ui/pass/*.rs`).
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p resilience-tests --test ui`
//! and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}

/// No diagnostic's primary line names the generated code's internals, and no location points
/// into the runtime's sources: each error is at the user's token and says what to write. Only
/// rustc's own "required by a bound in" notes may show where an internal bound is declared.
#[test]
fn diagnostics_point_at_the_users_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut offenders = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the ui directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "stderr"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .stderr files in {}", dir.display());
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a .stderr file");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        // The section a line belongs to: the last `error`, `help` or `note` line above it.
        let mut section = String::new();
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if line.starts_with("error") || line.starts_with("warning") {
                section = line.to_owned();
                if line.contains("__private") {
                    offenders.push(format!(
                        "{name}:{}: primary line names `__private`: {line}",
                        i + 1
                    ));
                }
            } else if trimmed.starts_with("help:") || trimmed.starts_with("note:") {
                section = trimmed.to_owned();
            } else if let Some(location) = trimmed.strip_prefix("--> ") {
                let internal =
                    location.contains("resilience-runtime/src") || location.contains("__private");
                let allowed = section.starts_with("note: required by a bound in");
                if internal && !allowed {
                    offenders.push(format!(
                        "{name}:{}: location in the runtime under `{section}`: {location}",
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "diagnostics that point into the runtime instead of the user's code:\n{}",
        offenders.join("\n")
    );
}
