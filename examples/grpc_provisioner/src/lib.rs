//! A gRPC Grant/Revoke provisioner whose terminal failures carry a reason (seed 003), and a caller
//! made resilient with `#[resilient]`.
//!
//! - [`proto`]: `provisioner.v1`'s messages, client and server glue, written by hand (no
//!   `protoc`).
//! - [`service`]: the embedded server: an upstream directory whose refusals become terminal
//!   statuses, seeded transient faults, rate limits with a retry hint, and its records.
//! - [`caller`]: the client, written with `#[resilient]`; a run of grants and revokes; its report.

pub mod caller;
pub mod proto;
pub mod service;
