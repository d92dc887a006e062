//! Integration tests for the resilience workspace.
//!
//! The tests live in `tests/`: behaviour tests, one file per feature, and the trybuild UI tests
//! (`tests/ui/*.rs` with their `.stderr`) that pin every diagnostic of the macros. The macros'
//! user-facing documentation is part of `resilience-runtime`'s crate docs, where its examples run
//! as doctests.
