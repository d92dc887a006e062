//! Integration tests for the resilience workspace.
//!
//! The tests live in `tests/`: behaviour tests, one file per feature, and the trybuild UI tests
//! (`tests/ui/*.rs` with their `.stderr`) that pin every diagnostic of the macros.

// The macros' user-facing documentation, compiled and run as doctests here so that every example
// (and every `compile_fail` misuse) is checked before the runtime crate includes it.
#[doc = include_str!("../../resilience-macros/DOCS.md")]
mod macro_docs {}
