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
